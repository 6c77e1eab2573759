"""Never below a fixed rule: the learned meta-policies against every heuristic, per profile.

For every calibrated profile of the GSM8K, MATH, AIME and MMLU columns (4 backbones x 4
benchmarks = 16) plus ``toy``, trains SoftRankPO (RL only) and SFT+SoftRankPO at a budget
(default: the default budget of `deliberate compare`) and evaluates them with every
heuristic protocol and the oracle on the held-out questions, with paired evaluation seeds.

The target, per profile: each learned row is at least the best heuristic minus 0.5 points,
as a paired difference over evaluation seeds (the best heuristic is picked on the same
evaluation, which favours it). And on the main-table average (the default backbone's six
benchmarks) SFT+SoftRankPO is at least LLM-Debate.

    python benchmarks/dominance.py [--budget quick] [--profiles 'llama3.1-8b/*' toy]

Prints the table and the number of profiles meeting the target; writes
``runs/bench/dominance.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _report import write_report  # benchmarks/ is on sys.path

from experiments.budgets import DEFAULT_BUDGET, get_budget
from experiments.paper.common import evaluate_rows
from experiments.paper.setup import BACKBONES, BENCHMARKS, DEFAULT_BACKBONE, HEURISTICS, Setup
from experiments.stats import interval

OUT = Path(__file__).resolve().parents[1] / "runs" / "bench" / "dominance.json"

COLUMNS = ("gsm8k", "math", "aime", "mmlu")
"""The benchmark columns whose profiles the target covers."""
LEARNED = ("softrankpo", "sft+softrankpo")
"""The learned rows held to the target."""
MARGIN = 0.005
"""A learned row may be at most this far (0.5 points) below the best heuristic."""
ROWS = (*HEURISTICS, *LEARNED, "oracle")


def profiles() -> list[str]:
    """The 16 calibrated profiles of `COLUMNS`, then ``toy``."""
    return [f"{b}/{c}" for b in BACKBONES for c in COLUMNS] + ["toy"]


def accuracies(runs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.array([r["team_accuracy"] for r in runs])


def judge(by_row: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """One profile's verdict: the best heuristic and each learned row's paired difference
    to it (per evaluation seed), with the target met or not."""
    acc = {row: accuracies(runs) for row, runs in by_row.items()}
    best = max((h for h in HEURISTICS if h in acc), key=lambda h: acc[h].mean())
    verdict: dict[str, Any] = {
        "best_heuristic": best,
        "accuracy": {row: float(a.mean()) for row, a in acc.items()},
        "tokens_per_question": {
            row: float(np.mean([r["tokens_per_question"] for r in runs]))
            for row, runs in by_row.items()
        },
        "difference": {},
    }
    for row in LEARNED:
        diff = interval(acc[row] - acc[best])
        verdict["difference"][row] = {**diff, "meets": diff["mean"] >= -MARGIN}
    verdict["meets"] = all(d["meets"] for d in verdict["difference"].values())
    return verdict


def main_table_average(setup: Setup, cells: Mapping[str, Any]) -> dict[str, Any]:
    """SFT+SoftRankPO against LLM-Debate on the default backbone's six benchmarks, averaged
    per evaluation seed (paired)."""
    per_seed: dict[str, list[np.ndarray]] = {"sft+softrankpo": [], "debate": []}
    for bench in BENCHMARKS:
        name = f"{DEFAULT_BACKBONE}/{bench}"
        runs = cells[name]["runs"] if name in cells else None
        if runs is None:
            runs = evaluate_rows(setup, list(per_seed), setup.cell(bench, DEFAULT_BACKBONE))
        for row in per_seed:
            per_seed[row].append(accuracies(runs[row]))
    avg = {row: np.mean(np.stack(v), axis=0) for row, v in per_seed.items()}
    diff = interval(avg["sft+softrankpo"] - avg["debate"])
    return {
        "sft+softrankpo": float(avg["sft+softrankpo"].mean()),
        "debate": float(avg["debate"].mean()),
        "difference": diff,
        "meets": diff["mean"] >= 0.0,
    }


def markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# Dominance (budget {report['budget']}, {report['wall_seconds']:.0f} s)",
        "",
        "| profile | best heuristic | acc | softrankpo - best | sft+softrankpo - best | oracle | meets |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in report["profiles"].items():
        best = v["best_heuristic"]
        cells = []
        for row in LEARNED:
            d = v["difference"][row]
            cells.append(
                f"{100 * d['mean']:+.2f} [{100 * d['ci95'][0]:+.2f}, {100 * d['ci95'][1]:+.2f}]"
            )
        lines.append(
            f"| {name} | {best} | {v['accuracy'][best]:.3f} | {cells[0]} | {cells[1]} "
            f"| {v['accuracy']['oracle']:.3f} | {'yes' if v['meets'] else 'no'} |"
        )
    met = sum(v["meets"] for v in report["profiles"].values())
    lines += ["", f"Profiles meeting the target: {met} of {len(report['profiles'])}."]
    avg = report.get("main_table_average")
    if avg:
        d = avg["difference"]
        lines.append(
            f"Main-table average ({DEFAULT_BACKBONE}): SFT+SoftRankPO {avg['sft+softrankpo']:.4f} "
            f"vs LLM-Debate {avg['debate']:.4f} (paired {100 * d['mean']:+.2f} points, "
            f"95% CI {100 * d['ci95'][0]:+.2f} to {100 * d['ci95'][1]:+.2f}): "
            f"{'meets' if avg['meets'] else 'misses'} the target."
        )
    return "\n".join(lines) + "\n"


def run(budget: str, patterns: Sequence[str], progress: bool = True) -> dict[str, Any]:
    setup = Setup(budget=get_budget(budget), progress=progress)
    start = time.perf_counter()
    chosen = [p for p in profiles() if any(fnmatch.fnmatchcase(p, pat) for pat in patterns)]
    cells: dict[str, Any] = {}
    for name in chosen:
        backbone, _, bench = name.partition("/")
        env = (
            setup.cell(bench, backbone)
            if bench
            else dataclasses.replace(setup.cell(), profile=name)
        )
        runs = evaluate_rows(setup, ROWS, env)
        cells[name] = {"runs": runs, "verdict": judge(runs)}
        if progress:
            print(f"{name}: meets={cells[name]['verdict']['meets']}", flush=True)
    report: dict[str, Any] = {
        "budget": budget,
        "margin": MARGIN,
        "profiles": {name: c["verdict"] for name, c in cells.items()},
    }
    if any(p.startswith(f"{DEFAULT_BACKBONE}/") for p in chosen):
        report["main_table_average"] = main_table_average(setup, cells)
    report["wall_seconds"] = time.perf_counter() - start
    report["profiles_meeting_target"] = sum(v["meets"] for v in report["profiles"].values())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default=DEFAULT_BUDGET)
    parser.add_argument(
        "--profiles", nargs="+", default=["*"], help="shell-style patterns over profile names"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    report = run(args.budget, args.profiles)
    text = markdown(report)
    write_report(report, args.out, text)
    args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
