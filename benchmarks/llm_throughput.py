"""LLM backend throughput: one deliberation round sent batched vs one request at a time.

    python benchmarks/llm_throughput.py                      # every section
    python benchmarks/llm_throughput.py --sections hf --envs 8 --agents 3

A round is what the env sends a backend: B envs x N agents requests (round 0: SOLVE; a
deliberation round: REFINE, each agent seeing its peers' solutions). Each section times
the same round issued as one batched backend call and as B x N calls of one request,
checks that both give the same outputs (greedy decoding), and reports the speed-up ratio,
measured on the same machine in the same run. It prints a Markdown table and writes
``runs/bench/llm_throughput.json`` (sections run now replace their earlier entries;
the others are kept).

Sections (``SECTIONS``; each takes the parsed arguments and returns a JSON-able dict with
``rows`` for the table):

- ``hf``: `agents.hf.HFBackend` on the tiny random Llama of ``tests/tiny_model.py``
  (built in a temporary folder; ``--model PATH`` for a real one), on CPU by default.
- ``openai``: `agents.openai_compat.OpenAIBackend` against the local OpenAI-compatible
  server of ``tests/openai_server.py`` (a child process adding ``--latency`` per reply):
  a round concurrent vs one request per call, then `agents.cache` replay vs the first,
  recording run (target >= 20x, identical, no server request).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import operator
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _report import target, targets_table, write_report  # benchmarks/ is on sys.path (a script)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "runs" / "bench" / "llm_throughput.json"
TARGET_SPEEDUP = 5.0
"""Batched over one-at-a-time, wall time of one round (the issue's target)."""

Section = Callable[[argparse.Namespace], dict[str, Any]]
SECTIONS: dict[str, Section] = {}
"""Benchmark sections by name, filled by `section`; run in insertion order."""


def section(name: str) -> Callable[[Section], Section]:
    """Register a benchmark section under `name` (``--sections NAME``)."""

    def register(fn: Section) -> Section:
        SECTIONS[name] = fn
        return fn

    return register


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall seconds of `repeats` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def speed_row(
    name: str, mode: str, requests: int, seconds: float, tokens: int, reference: float | None
) -> dict[str, Any]:
    """One table row; `reference` is the one-at-a-time time of the same round."""
    return {
        "section": name,
        "mode": mode,
        "requests": requests,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "completion_tokens_per_s": tokens / seconds,
        "speedup": None if reference is None else reference / seconds,
    }


RoundRequests = tuple[list[Any], Callable[[Sequence[Any]], list[Any]]]
"""A round's solve requests, and the function from their solutions to the refine requests."""


def round_requests(tasks: Sequence[Any], agents: int, seed: int = 0) -> RoundRequests:
    """(solve requests, function: solutions -> refine requests) for B = len(tasks) envs.

    Request order and peers follow `deliberation_env.backends.TextBackendAdapter`.
    """
    from deliberation_env.protocol import RefineRequest, SolveRequest

    solve = [
        SolveRequest(task, a, seed + b * agents + a)
        for b, task in enumerate(tasks)
        for a in range(agents)
    ]

    def refine(solutions: Sequence[Any]) -> list[RefineRequest]:
        out = []
        for b, task in enumerate(tasks):
            row = solutions[b * agents : (b + 1) * agents]
            for a in range(agents):
                peers = tuple(row[(a + k) % agents] for k in range(1, agents))
                out.append(RefineRequest(task, a, row[a], peers, seed + 1000 + b * agents + a))
        return out

    return solve, refine


def bench_rounds(
    name: str,
    mode: str,
    backend: Any,
    rounds: RoundRequests,
    repeats: int,
    same: Callable[[list[Any], list[Any]], bool] = operator.eq,
    before_batch: Callable[[], None] = lambda: None,
    after_batch: Callable[[str], dict[str, Any]] = lambda kind: {},
) -> tuple[list[dict[str, Any]], dict[str, Any], list[Any]]:
    """The solve round, then the refine round on its solutions, each sent one request per
    call and then as one `mode` call: table rows, checks, and the solve round's solutions.

    Checks: per round, whether both ways gave the `same` outputs, plus what `after_batch`
    reports right after the batched call (`before_batch` runs just before it).
    """
    solve, make_refine = rounds
    rows: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    initial: Any = None
    for kind in ("solve", "refine"):
        requests = solve if kind == "solve" else make_refine(initial)
        call = backend.solve if kind == "solve" else backend.refine
        single_s, single = timed(functools.partial(_one_at_a_time, call, requests), repeats)
        before_batch()
        batch_s, batched = timed(functools.partial(call, requests), repeats)
        checks.update(after_batch(kind))
        checks[kind] = same(batched, single)
        if kind == "solve":
            initial = batched
        tokens = sum(s.completion_tokens for s in batched)
        label, n = f"{name} {kind} round", len(requests)
        rows.append(speed_row(label, "one at a time", n, single_s, tokens, single_s))
        rows.append(speed_row(label, mode, n, batch_s, tokens, single_s))
    return rows, checks, initial


def _one_at_a_time(call: Callable[[list[Any]], list[Any]], requests: list[Any]) -> list[Any]:
    return [call([r])[0] for r in requests]


# ============================================================================ section: hf
@section("hf")
def bench_hf(args: argparse.Namespace) -> dict[str, Any]:
    """HFBackend: a round as one batched `refine`/`solve` call vs one call per request."""
    import torch

    from agents.hf import HFBackend
    from deliberation_env.tasks import load_tasks

    torch.set_num_threads(args.threads)
    B, N = args.envs, args.agents
    with tempfile.TemporaryDirectory() as tmp:
        path, model_note = _hf_model(args.model, Path(tmp))
        backend = HFBackend(
            path,
            max_new_tokens=args.max_new_tokens,
            temperature=0,  # greedy: batched and one-at-a-time outputs must match
            batch_size=B * N,
            device=args.device,
        )
        tasks = load_tasks(f"arithmetic:{B}:{args.seed}")
        rounds = round_requests(tasks, N, args.seed)
        backend.solve(rounds[0][:2])  # warm-up (allocations, lazy imports)
        rows, checks, _ = bench_rounds(
            "hf", f"batched ({B * N})", backend, rounds, args.repeats, same=_same_texts
        )
        backend.close()
    refine_speedup = rows[-1]["speedup"]
    same = all(checks.values())
    return {
        "model": model_note,
        "device": str(backend._resolve_device()),
        "torch_threads": args.threads,
        "envs": B,
        "agents": N,
        "max_new_tokens": args.max_new_tokens,
        "repeats": args.repeats,
        "rows": rows,
        "same_outputs": checks,
        "targets": [
            target(
                f"hf refine round batched >= {TARGET_SPEEDUP:g}x one at a time",
                refine_speedup,
                f"{refine_speedup:.1f}x",
                refine_speedup >= TARGET_SPEEDUP,
            ),
            target("hf batched outputs == one-at-a-time outputs (greedy)", same, str(checks), same),
        ],
    }


def _same_texts(a: list[Any], b: list[Any]) -> bool:
    # Greedy texts must match; log-prob confidences may differ in the last bits (padding).
    return [s.text for s in a] == [s.text for s in b]


def _hf_model(model: str | None, tmp: Path) -> tuple[str, str]:
    """(path, description) of `model`, or of the tiny random Llama built under `tmp`."""
    if model:
        return model, model
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from tiny_model import build_tiny_model

    path = str(build_tiny_model(tmp / "tiny-llama"))
    return path, "tests/tiny_model.py (2-layer Llama, hidden 32, random weights)"


# ======================================================================== section: openai
# OpenAIBackend against the local OpenAI-compatible test server (tests/openai_server.py),
# run in a child process as a real server would be (in this process its threads would
# compete with the client for the GIL). The server adds `--latency` seconds to every
# reply, standing in for generation time, so that concurrency has something to overlap.
# Rows: a round as one call (its requests concurrent, at most `--concurrency` in flight)
# vs one call per request; then the response cache, a first run that records the refine
# round vs its replay (which must send no request to the server).
TARGET_CACHE_REPLAY = 20.0
"""Cache replay over the first (recording) run, wall time of the same refine round."""


@section("openai")
def bench_openai(args: argparse.Namespace) -> dict[str, Any]:
    """OpenAIBackend: concurrent vs one request per call, and cache replay vs first run."""
    import dataclasses

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from openai_server import ServerProcess

    from agents.openai_compat import OpenAIBackend
    from deliberation_env.tasks import load_tasks

    B, N = args.envs, args.agents
    spec = f"arithmetic:{B}:{args.seed}"
    rounds = round_requests(load_tasks(spec), N, args.seed)
    concurrency = args.concurrency or B * N
    # Warm-up requests with other seeds (so no timed request is cached by them): the worker
    # thread and one keep-alive connection per concurrent slot.
    warm = [dataclasses.replace(r, seed=r.seed + 10**6) for r in rounds[0]]
    with ServerProcess(spec, latency=args.latency) as srv, tempfile.TemporaryDirectory() as tmp:

        def backend(**kwargs: Any) -> OpenAIBackend:
            b = OpenAIBackend("bench", srv.url, max_concurrency=concurrency,
                              max_tokens=args.max_new_tokens, timeout=60.0, **kwargs)  # fmt: skip
            b.solve(warm)
            return b

        live = backend()
        rows, checks, initial = bench_rounds(
            "openai",
            f"concurrent ({concurrency})",
            live,
            rounds,
            args.repeats,
            before_batch=srv.reset_counts,
            after_batch=lambda kind: {f"{kind}: server max in flight": srv.max_in_flight},
        )
        live.close()
        cache_rows, cache_checks = _openai_cache(backend, srv, rounds[1](initial), args, tmp)
    rows += cache_rows
    checks.update(cache_checks)
    return {
        "server": f"tests/openai_server.py (scripted replies, {1000 * args.latency:g} ms latency)",
        "envs": B,
        "agents": N,
        "max_concurrency": concurrency,
        "repeats": args.repeats,
        "rows": rows,
        "checks": checks,
        "targets": _openai_targets(rows, checks),
    }


def _openai_targets(rows: list[dict[str, Any]], checks: dict[str, Any]) -> list[dict[str, Any]]:
    concurrent_speedup = rows[3]["speedup"]
    replay_speedup = rows[4]["seconds"] / rows[5]["seconds"]
    same = checks["solve"] and checks["refine"]
    replayed = checks["replay identical to the first run"]
    replay_requests = checks["replay: server requests"]
    return [
        target(
            f"openai refine round concurrent >= {TARGET_SPEEDUP:g}x one at a time",
            concurrent_speedup,
            f"{concurrent_speedup:.1f}x",
            concurrent_speedup >= TARGET_SPEEDUP,
        ),
        target("openai concurrent outputs == one-at-a-time outputs", same, str(same), same),
        target(
            f"openai cache replay >= {TARGET_CACHE_REPLAY:g}x first run, "
            "identical, 0 server requests",
            replay_speedup,
            f"{replay_speedup:.1f}x, identical {replayed}, {replay_requests} requests",
            replay_speedup >= TARGET_CACHE_REPLAY and replayed and not replay_requests,
        ),
    ]


def _openai_cache(
    backend: Callable[..., Any], srv: Any, refine: list[Any], args: argparse.Namespace, tmp: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The refine round recorded into a fresh cache per repeat, then replayed from the last."""
    first_times = []
    for i in range(args.repeats):
        recorder = backend(cache=Path(tmp) / f"cache{i}.sqlite")
        start = time.perf_counter()
        first = recorder.refine(refine)
        first_times.append(time.perf_counter() - start)
        recorder.close()
    first_s = statistics.median(first_times)
    replayer = backend(cache=Path(tmp) / f"cache{args.repeats - 1}.sqlite")
    srv.reset_counts()
    replay_s, replay = timed(lambda: replayer.refine(refine), args.repeats)
    replay_requests = srv.hits
    replayer.close()
    tokens = sum(s.completion_tokens for s in first)
    label = "openai cache (refine round)"
    rows = [
        speed_row(label, "first run (recording)", len(refine), first_s, tokens, first_s),
        speed_row(label, "replay", len(refine), replay_s, tokens, first_s),
    ]
    checks = {
        "replay identical to the first run": replay == first,
        "replay: server requests": replay_requests,
    }
    return rows, checks


# ================================================================================== main
def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| round | mode | requests | wall s | requests/s | completion tok/s | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for name, result in report["sections"].items():
        for r in result.get("rows", []):
            speedup = "" if r["speedup"] is None else f"{r['speedup']:.1f}x"
            lines.append(
                f"| {r['section']} | {r['mode']} | {r['requests']} | {r['seconds']:.3f} | "
                f"{r['requests_per_s']:,.1f} | {r['completion_tokens_per_s']:,.0f} | {speedup} |"
            )
        targets += result.get("targets", [])
        if "skipped" in result:
            lines.append(f"| {name} | skipped: {result['skipped']} | | | | | |")
    if targets:
        lines += targets_table(targets)
    m = report["machine"]
    lines += [
        "",
        f"Speed-up: one-at-a-time wall time / this mode's, same round, same run. Machine: "
        f"{m['platform']}, {m['cpu_count']} CPUs, Python {m['python']}; commit {m['git_commit']}.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", nargs="+", default=None, help=f"subset of {list(SECTIONS)}")
    p.add_argument("--envs", type=int, default=8, help="B, envs in the round")
    p.add_argument("--agents", type=int, default=3, help="N, agents per env (paper: 3)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="per solution (real ones: ~250)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    p.add_argument("--model", default=None, help="hf: a model path or id instead of the tiny one")
    p.add_argument("--device", default="cpu", help="hf: torch device ('auto' picks CUDA)")
    p.add_argument("--threads", type=int, default=1, help="hf: torch CPU threads")
    p.add_argument("--latency", type=float, default=0.05, help="openai: server s per reply")
    p.add_argument(
        "--concurrency", type=int, default=None, help="openai: max_concurrency (default B x N)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = p.parse_args(argv)
    unknown = set(args.sections or ()) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; valid: {list(SECTIONS)}")
    if min(args.envs, args.agents, args.max_new_tokens, args.repeats, args.threads) < 1:
        p.error("--envs, --agents, --max-new-tokens, --repeats and --threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    from env_speed import machine_info  # imports the env and pettingzoo: only when run

    args = parse_args(argv)
    report: dict[str, Any] = {"sections": {}}
    if args.out.exists():
        with contextlib.suppress(json.JSONDecodeError):  # a broken file is rewritten
            report = json.loads(args.out.read_text())
    report.setdefault("sections", {})
    for name in args.sections or list(SECTIONS):
        print(f"running section {name!r}", file=sys.stderr)
        report["sections"][name] = SECTIONS[name](args)
    report["machine"] = machine_info()
    report["config"] = {**vars(args), "out": str(args.out)}
    write_report(report, args.out, markdown(report))


if __name__ == "__main__":
    main()
