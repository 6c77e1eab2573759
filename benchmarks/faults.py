"""Faults survived at scale: an evaluation through `OpenAIBackend` against a server that
injects faults gives the same metrics as a fault-free run, with every reply cached.

    python benchmarks/faults.py                         # 200 questions, 10% faulty replies
    python benchmarks/faults.py --questions 50 --rate 0.2 --in-process

The server is ``tests/openai_server.py`` (scripted replies that read quoted solutions by
their answers only, so a prompt cut to fit a context gets the reply of the whole prompt),
in a child process by default. Each request is faulty with probability ``--rate``, the
kind drawn from ``RATE_FAULTS`` (429 with Retry-After, 500, a hang past the client's
timeout, a connection dropped midway or before any reply, a truncated JSON body, empty
choices, a context-length 400) by a generator seeded with ``--seed``. The same evaluation
(the ``debate`` protocol, everyone REFINEs every round) runs fault-free and faulty, each
with its own response cache. Targets: equal metrics, equal cache contents (every request
answered and stored once), requests lost = 0, and every injected fault met by exactly one
retry (or context re-send) of the client. Prints a Markdown table and writes
``runs/bench/faults.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))

from _report import target, targets_table, write_report  # noqa: E402  (benchmarks/ on the path)

DEFAULT_OUT = REPO_ROOT / "runs" / "bench" / "faults.json"
FAST_CLIENT = {"timeout": 2.0, "connect_timeout": 2.0, "backoff": 0.005, "max_backoff": 0.05}
"""Client timings that keep a faulty run short: a hang costs 2 s, a back-off milliseconds."""
HANG_S = 3.0
"""How long a hanging server reply waits (past the client's 2 s timeout)."""
RETRY_AFTER = "0.02"
"""The ``Retry-After`` of an injected 429, in seconds."""


@contextlib.contextmanager
def fault_server(
    tasks: str, rate: float, seed: int, in_process: bool = False, kinds: Sequence[str] = ()
) -> Iterator[Any]:
    """A scripted server for the questions of `tasks`, faulty at `rate` (`url`, `hits`,
    `injected`)."""
    from openai_server import RATE_FAULTS, OpenAIServer, ScriptedResponder, ServerProcess

    from deliberation_env.tasks import load_tasks

    kinds = tuple(kinds) or RATE_FAULTS
    if in_process:
        answers = {t.question.strip(): t.answer for t in load_tasks(tasks)}
        responder = ScriptedResponder(answers, answers_only=True)
        with OpenAIServer(
            responder,
            hang_s=HANG_S,
            retry_after=RETRY_AFTER,
            fault_rate=rate,
            fault_seed=seed,
            fault_kinds=kinds,
        ) as srv:
            yield srv
    else:
        with ServerProcess(
            tasks,
            fault_rate=rate,
            fault_seed=seed,
            fault_kinds=kinds,
            hang_s=HANG_S,
            retry_after=RETRY_AFTER,
            answers_only=True,
        ) as srv:
            yield srv


def evaluation(
    url: str,
    tasks: str,
    questions: int,
    cache: Path,
    max_concurrency: int = 32,
    client: dict[str, float] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics of the ``debate`` protocol on `questions` questions through an
    `OpenAIBackend` at `url` (cached in `cache`), and the backend's `stats()`."""
    from agents.openai_compat import OpenAIBackend
    from algorithms.evaluate import evaluate
    from algorithms.heuristics import make_protocol
    from deliberation_env import EnvConfig
    from deliberation_env.tasks import load_tasks

    timing = FAST_CLIENT if client is None else client
    backend = OpenAIBackend(
        "scripted",
        url,
        api_key_env=None,
        max_concurrency=max_concurrency,
        max_retries=8,
        cache=cache,
        timeout=timing["timeout"],
        connect_timeout=timing["connect_timeout"],
        backoff=timing["backoff"],
        max_backoff=timing["max_backoff"],
    )
    config = EnvConfig(backend=backend, tasks=tuple(load_tasks(tasks)))
    try:
        (metrics,) = evaluate(make_protocol("debate"), config, seeds=(0,), episodes=questions)
    finally:
        backend.close()
    return metrics, backend.stats()


def cache_contents(path: Path) -> dict[str, Any]:
    """Every (request key -> response) in the cache at `path`."""
    from agents.cache import ResponseCache, request_key

    cache = ResponseCache(path)
    try:
        return {request_key(req): resp for req, resp in cache.entries()}
    finally:
        cache.close()


def fault_run(
    questions: int,
    rate: float,
    seed: int,
    tmp: Path,
    in_process: bool = False,
    kinds: Sequence[str] = (),
) -> dict[str, Any]:
    """The fault-free and the faulty evaluation side by side, with the counts."""
    import algorithms.evaluate  # noqa: F401  (imported before the clock starts)

    tasks = f"arithmetic:{questions}:{seed}"
    runs: dict[str, Any] = {}
    for name, r in (("clean", 0.0), ("faulty", rate)):
        with fault_server(tasks, r, seed, in_process, kinds) as srv:
            start = time.perf_counter()
            metrics, stats = evaluation(srv.url, tasks, questions, tmp / f"{name}.sqlite")
            runs[name] = {
                "metrics": metrics,
                "stats": stats,
                "seconds": time.perf_counter() - start,
                "server_hits": srv.hits,
                "injected": dict(Counter(srv.injected)),
            }
    clean, faulty = (cache_contents(tmp / f"{n}.sqlite") for n in ("clean", "faulty"))
    stats = runs["faulty"]["stats"]
    injected = runs["faulty"]["injected"]
    return {
        "questions": questions,
        "rate": rate,
        "seed": seed,
        "runs": runs,
        "same_metrics": runs["clean"]["metrics"] == runs["faulty"]["metrics"],
        "same_cache": clean == faulty,
        "requests": len(clean),
        "cached": len(faulty),
        "faults_injected": sum(injected.values()),
        "retries": stats["retries"] + stats["context_retries"],
        "lost": stats["lost"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--rate", type=float, default=0.1, help="share of faulty replies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--in-process", action="store_true", help="server in this process")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = fault_run(args.questions, args.rate, args.seed, Path(tmp), args.in_process)
    faulty = result["runs"]["faulty"]
    kinds = sorted(faulty["injected"])
    lines = [
        f"# Faults survived: {args.questions} questions, debate protocol, "
        f"fault rate {args.rate:g}, seed {args.seed}",
        "",
        "| run | seconds | server hits | team accuracy | tokens / question |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, run in result["runs"].items():
        m = run["metrics"]
        lines.append(
            f"| {name} | {run['seconds']:.1f} | {run['server_hits']} | "
            f"{m['team_accuracy']:.3f} | {m['tokens_per_question']:.1f} |"
        )
    lines += ["", "| fault | injected |", "|---|---:|"]
    lines += [f"| {k} | {faulty['injected'][k]} |" for k in kinds]
    stats = faulty["stats"]
    lines += [
        "",
        f"client retries by kind: {stats['retry_kinds']}; context re-sends: "
        f"{stats['context_retries']}",
    ]
    targets = [
        target("metrics equal to the fault-free run", result["same_metrics"],
               str(result["same_metrics"]), result["same_metrics"]),
        target("cache equal to the fault-free run's (every reply stored)", result["same_cache"],
               f"{result['cached']} / {result['requests']} entries", result["same_cache"]),
        target("requests lost == 0", result["lost"], str(result["lost"]), result["lost"] == 0),
        target("one client retry per injected fault", result["retries"],
               f"{result['retries']} retries / {result['faults_injected']} faults",
               result["retries"] == result["faults_injected"]),
    ]  # fmt: skip
    result["targets"] = targets
    write_report(result, args.out, "\n".join(lines + targets_table(targets)))


if __name__ == "__main__":
    main()
