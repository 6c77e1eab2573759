"""`deliberate bench`: run a versioned suite for some methods and write the report.

    deliberate bench --suite mpdf-bench-v1 --algo softrankpo --algo grpo --out runs/bench
    deliberate bench --suite mpdf-bench-v1 --algo my_pkg.my_algo --out runs/mine --workers 2
    deliberate bench --suite mpdf-bench-v1 --list
    deliberate bench --suite mpdf-bench-v1 --algo grpo --tasks '*/gsm8k/*' --out runs/b --resume

Also ``python -m experiments.bench ...``. Every heuristic protocol and the oracle are
always in the report (docs/benchmark.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from experiments.bench.suite import DEFAULT_SUITE, get_suite
from experiments.options import Track


@dataclass
class BenchOptions:
    """Run a benchmark suite: train and evaluate every (task, method, seed) cell, then
    write report.json, report.md and the figures under --out."""

    suite: str = DEFAULT_SUITE
    """The suite (`experiments.bench.suite.SUITES`)."""
    algo: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """A method to benchmark, repeatable: a registered learned method (softrankpo, grpo,
    ppo, reinforce, sft, sb3_ppo), a heuristic's name, or a module path (my_pkg.my_algo,
    or my_pkg.my_algo:NAME) that registers one. Heuristics and the oracle always run."""
    out: Path = Path("runs/bench")
    """Folder of the per-cell JSON, report.json, report.md and the PNGs."""
    seeds: int = 3
    """Seeds 0..K-1: training seed s, evaluated with evaluation seed s (paired)."""
    tasks: tuple[str, ...] = ("*",)
    """fnmatch patterns of task names (--list prints them)."""
    workers: int = 1
    """Local worker processes (concurrent.futures); with --ray-address, the CPUs of a
    local Ray instance."""
    resume: bool = False
    """Continue a run in --out: finished cells are not redone."""
    ray_address: str | None = None
    """Run cells as Ray tasks: a cluster address, 'auto', or 'local' for a new local
    instance (the [ray] extra)."""
    list: bool = False
    """Print the suite's task names, one a line, and exit."""
    protocol: str | None = None
    """Another protocol of the suite ('smoke': seconds per cell, meaningless numbers)."""
    reps: int = 2000
    """Bootstrap resamples of the aggregate intervals."""
    poi_reps: int = 200
    """Bootstrap resamples of each probability of improvement."""
    progress: bool = True
    """Show a progress bar over cells."""
    track: Track = None
    """Also log each learned cell's training and the report table to TensorBoard or W&B
    (pip install 'deliberation-env[track]')."""


def main(argv: Sequence[str] | None = None) -> int:
    opts = tyro.cli(BenchOptions, args=argv, prog="deliberate bench")
    suite = get_suite(opts.suite)
    if opts.list:
        for task in suite.select(opts.tasks):
            print(task.name)
        return 0
    from experiments.bench.runner import run_bench

    report = run_bench(
        opts.suite, opts.algo, opts.out, opts.seeds, opts.tasks, opts.workers,
        opts.ray_address, opts.resume, opts.protocol, opts.reps, opts.poi_reps,
        opts.progress, opts.track,
    )  # fmt: skip
    print((opts.out / "report.md").read_text().split("\n## Probability")[0])
    print(f"wrote {opts.out}/report.json, report.md and figures "
          f"({report['timing']['wall_seconds']:.0f} s)")  # fmt: skip
    return 0
