"""Run every reproduction experiment of the MPDF paper (`experiments.reproduce`) at one
budget and print a summary: wall time and the key figure of each, beside the paper's.

    python benchmarks/reproduce.py                       # quick budget, runs/reproduce/
    python benchmarks/reproduce.py --budget paper --out runs/reproduce-paper
    python benchmarks/reproduce.py --experiments tokens action-shift

The experiments run one after the other in one process, so trained policies are shared
between them (e.g. the gsm8k SFT+SoftRankPO of main-table serves tokens and action-shift);
each experiment's wall time counts only what it had to train itself. Writes
``OUT/summary.json`` and ``OUT/summary.md``. Numbers come from the simulated backend.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from experiments.budgets import DEFAULT_BUDGET
from experiments.paper.setup import PAPER, SIMULATED_NOTE, Setup
from experiments.reproduce import EXPERIMENTS, run_experiment

PAPER_FIGURE = {
    "main-table": "avg accuracy 55.74% (SoftRankPO) vs 51.60% (strongest baseline)",
    "backbones": "gains on all four backbones",
    "reward-scale": "reward scaling hurts GRPO, not SoftRankPO",
    "tau-sweep": f"tau = {PAPER['best_tau']} best of {list(PAPER['taus'])}",
    "rounds-agents": "accuracy falls at 5 rounds",
    "action-shift": "PERSIST 19.1% after SFT -> 78.8% after RL",
    "tokens": "47.1k vs 67.2k tokens against the strongest baseline (0.70x)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--budget", default=DEFAULT_BUDGET, help="an experiments.budgets name: quick or paper"
    )
    parser.add_argument("--out", default="runs/reproduce")
    parser.add_argument("--profile", default=Setup.backbone, help="the backbone")
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS))
    parser.add_argument("--quiet", action="store_true", help="no per-training log lines")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    start = time.perf_counter()
    for name in args.experiments:
        results = run_experiment(
            name, Path(args.out) / name, args.budget, backbone=args.profile,
            progress=not args.quiet,
        )  # fmt: skip
        rows.append(
            {"experiment": name, "wall_seconds": round(results["wall_seconds"], 1),
             "cpu_seconds": round(results["cpu_seconds"], 1),
             "ours": results.get("headline", ""), "paper": PAPER_FIGURE.get(name, "")}
        )  # fmt: skip
        print(
            f"[{name}] {results['wall_seconds']:.0f} s wall, {results['cpu_seconds']:.0f} s CPU: "
            f"{results.get('headline', '')}\n"
        )
    total = time.perf_counter() - start
    lines = [
        f"# Reproduction summary ({args.budget} budget, {args.profile})",
        "",
        f"> {SIMULATED_NOTE}",
        "",
        "| experiment | wall (s) | CPU (s) | ours | paper |",
        "|---|---|---|---|---|",
        *(f"| {r['experiment']} | {r['wall_seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['ours']} "
          f"| {r['paper']} |"
          for r in rows),
        "",
        f"Total {total:.0f} s on {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, 1 thread.",
    ]  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(
        json.dumps({"budget": args.budget, "profile": args.profile, "total_seconds": total,
                    "experiments": rows, "machine": platform.platform()}, indent=2) + "\n"
    )  # fmt: skip
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
