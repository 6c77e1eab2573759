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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def round_requests(tasks: Sequence[Any], agents: int, seed: int = 0):
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


# ============================================================================ section: hf
@section("hf")
def bench_hf(args: argparse.Namespace) -> dict[str, Any]:
    """HFBackend: a round as one batched `refine`/`solve` call vs one call per request."""
    import torch

    from agents.hf import HFBackend
    from deliberation_env.tasks import load_tasks

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            path, model_note = args.model, args.model
        else:
            sys.path.insert(0, str(REPO_ROOT / "tests"))
            from tiny_model import build_tiny_model

            path = str(build_tiny_model(Path(tmp) / "tiny-llama"))
            model_note = "tests/tiny_model.py (2-layer Llama, hidden 32, random weights)"
        B, N = args.envs, args.agents
        backend = HFBackend(
            path,
            max_new_tokens=args.max_new_tokens,
            temperature=0,  # greedy: batched and one-at-a-time outputs must match
            batch_size=B * N,
            device=args.device,
        )
        tasks = load_tasks(f"arithmetic:{B}:{args.seed}")
        solve, make_refine = round_requests(tasks, N, args.seed)
        backend.solve(solve[:2])  # warm-up (allocations, lazy imports)

        rows, checks = [], {}
        initial = None
        for kind in ("solve", "refine"):
            requests = solve if kind == "solve" else make_refine(initial)
            call = backend.solve if kind == "solve" else backend.refine
            one_by_one = [functools.partial(call, [r]) for r in requests]
            single_s, single = timed(lambda calls=one_by_one: [c()[0] for c in calls], args.repeats)
            batch_s, batched = timed(functools.partial(call, requests), args.repeats)
            if kind == "solve":
                initial = batched
            tokens = sum(s.completion_tokens for s in batched)
            same = [a.text for a in batched] == [b.text for b in single]
            checks[kind] = same
            label = f"hf {kind} round"
            rows.append(
                speed_row(label, "one at a time", len(requests), single_s, tokens, single_s)
            )
            rows.append(
                speed_row(
                    label, f"batched ({len(requests)})", len(requests), batch_s, tokens, single_s
                )
            )
        backend.close()
    refine_speedup = rows[-1]["speedup"]
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
            {
                "target": f"hf refine round batched >= {TARGET_SPEEDUP:g}x one at a time",
                "measured": refine_speedup,
                "text": f"{refine_speedup:.1f}x",
                "result": "PASS" if refine_speedup >= TARGET_SPEEDUP else "MISS",
            },
            {
                "target": "hf batched outputs == one-at-a-time outputs (greedy)",
                "measured": all(checks.values()),
                "text": str(checks),
                "result": "PASS" if all(checks.values()) else "MISS",
            },
        ],
    }


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
    solve, make_refine = round_requests(load_tasks(spec), N, args.seed)
    concurrency = args.concurrency or B * N
    # Warm-up requests with other seeds (so no timed request is cached by them): the worker
    # thread and one keep-alive connection per concurrent slot.
    warm = [dataclasses.replace(r, seed=r.seed + 10**6) for r in solve]
    rows, checks = [], {}
    with ServerProcess(spec, latency=args.latency) as srv, tempfile.TemporaryDirectory() as tmp:

        def backend(**kwargs: Any) -> OpenAIBackend:
            b = OpenAIBackend(
                model="bench",
                base_url=srv.url,
                max_concurrency=concurrency,
                max_tokens=args.max_new_tokens,
                timeout=60.0,
                **kwargs,
            )
            b.solve(warm)
            return b

        live = backend()
        initial: Any = None
        for kind in ("solve", "refine"):
            requests = solve if kind == "solve" else make_refine(initial)
            call = live.solve if kind == "solve" else live.refine
            single_s, single = timed(
                lambda call=call, requests=requests: [call([r])[0] for r in requests],
                args.repeats,
            )
            srv.reset_counts()
            batch_s, batched = timed(
                lambda call=call, requests=requests: call(requests), args.repeats
            )
            checks[f"{kind}: server max in flight"] = srv.max_in_flight
            if kind == "solve":
                initial = batched
            tokens = sum(s.completion_tokens for s in batched)
            checks[kind] = batched == single
            label = f"openai {kind} round"
            rows.append(
                speed_row(label, "one at a time", len(requests), single_s, tokens, single_s)
            )
            rows.append(
                speed_row(
                    label, f"concurrent ({concurrency})", len(requests), batch_s, tokens, single_s
                )
            )
        live.close()

        # The cache: each repeat records into a fresh file; the replays read the last one.
        refine = make_refine(initial)
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
    rows.append(speed_row(label, "first run (recording)", len(refine), first_s, tokens, first_s))
    rows.append(speed_row(label, "replay", len(refine), replay_s, tokens, first_s))
    checks["replay identical to the first run"] = replay == first
    checks["replay: server requests"] = replay_requests
    concurrent_speedup = rows[3]["speedup"]
    replay_speedup = first_s / replay_s
    same = checks["solve"] and checks["refine"]
    return {
        "server": f"tests/openai_server.py (scripted replies, {1000 * args.latency:g} ms latency)",
        "envs": B,
        "agents": N,
        "max_concurrency": concurrency,
        "repeats": args.repeats,
        "rows": rows,
        "checks": checks,
        "targets": [
            {
                "target": f"openai refine round concurrent >= {TARGET_SPEEDUP:g}x one at a time",
                "measured": concurrent_speedup,
                "text": f"{concurrent_speedup:.1f}x",
                "result": "PASS" if concurrent_speedup >= TARGET_SPEEDUP else "MISS",
            },
            {
                "target": "openai concurrent outputs == one-at-a-time outputs",
                "measured": same,
                "text": str(same),
                "result": "PASS" if same else "MISS",
            },
            {
                "target": f"openai cache replay >= {TARGET_CACHE_REPLAY:g}x first run, "
                "identical, 0 server requests",
                "measured": replay_speedup,
                "text": f"{replay_speedup:.1f}x, identical {replay == first}, "
                f"{replay_requests} requests",
                "result": "PASS"
                if replay_speedup >= TARGET_CACHE_REPLAY and replay == first and not replay_requests
                else "MISS",
            },
        ],
    }


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
        lines += ["", "| target | measured | result |", "|---|---:|---|"]
        lines += [f"| {t['target']} | {t['text']} | {t['result']} |" for t in targets]
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
    from env_speed import machine_info  # benchmarks/ is on sys.path when run as a script

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
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
