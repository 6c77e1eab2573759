"""Code sandbox overhead: seconds per trivial candidate under bubblewrap and in the
subprocess fallback, with a bare interpreter start as the floor, measured in one run.

    python benchmarks/sandbox_speed.py --repeats 50

Each mode runs the same trivial candidate (``def f(): return 1`` and one assert)
`--repeats` times, interleaved so that machine load hits every mode alike, after one
warm-up each. It prints the median and the 10th/90th percentiles as a Markdown table, and
writes them with the machine's description to ``runs/bench/sandbox_speed.json``. Compare
the ratios, which come from the same machine in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from _report import write_report  # benchmarks/ is on sys.path (a script)

from deliberation_env.tasks import sandbox

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "runs" / "bench" / "sandbox_speed.json"
PROGRAM = "def f():\n    return 1\n"
TESTS = "def check(candidate):\n    assert candidate() == 1\n"


def _bare_interpreter() -> float:
    start = time.perf_counter()
    subprocess.run([sandbox._interpreter(), "-I", "-B", "-S", "-c", "pass"], check=True)
    return time.perf_counter() - start


def _candidate(kind: sandbox.SandboxKind) -> Callable[[], float]:
    def once() -> float:
        result = sandbox.run_candidate(PROGRAM, TESTS, "f", kind=kind)
        if not result.passed:
            raise RuntimeError(f"{kind}: the trivial candidate did not pass: {result}")
        return result.wall_s

    return once


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="candidates per mode")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report path")
    args = parser.parse_args()

    modes: dict[str, Callable[[], float]] = {"python -S start (floor)": _bare_interpreter}
    problem = sandbox._bubblewrap_problem()
    if problem is None:
        modes["bubblewrap"] = _candidate("bubblewrap")
    modes["subprocess fallback"] = _candidate("subprocess")
    for run in modes.values():
        run()  # warm-up: page cache, the bwrap probe
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.repeats):
        for name, run in modes.items():
            times[name].append(run())

    floor = statistics.median(times["python -S start (floor)"])
    rows = {}
    for name, values in times.items():
        median = statistics.median(values)
        rows[name] = {
            "median_ms": 1000 * median,
            "p10_ms": 1000 * _percentile(values, 0.10),
            "p90_ms": 1000 * _percentile(values, 0.90),
            "over_floor_ms": 1000 * (median - floor),
        }
    lines = [
        f"# Sandbox overhead per trivial candidate ({args.repeats} each, interleaved)",
        "",
        "| mode | median ms | p10 ms | p90 ms | median - floor ms |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {r['median_ms']:.1f} | {r['p10_ms']:.1f} | {r['p90_ms']:.1f} "
        f"| {r['over_floor_ms']:.1f} |"
        for name, r in rows.items()
    ]
    if problem is not None:
        lines += ["", f"bubblewrap not measured: {problem}"]
    elif "subprocess fallback" in rows:
        ratio = rows["bubblewrap"]["median_ms"] / rows["subprocess fallback"]["median_ms"]
        lines += ["", f"bubblewrap / fallback median: {ratio:.2f}x"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report = {
        "benchmark": "sandbox_speed",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_1min": load,
            "euid": os.geteuid(),
        },
        "repeats": args.repeats,
        "bubblewrap_problem": problem,
        "modes": rows,
    }
    write_report(report, args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
