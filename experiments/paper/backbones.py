"""The four backbones on one benchmark: the best heuristic vs SFT+SoftRankPO."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.figures import plot_backbones
from experiments.paper.common import accuracy_and_tokens, clock, evaluate_rows, start
from experiments.paper.setup import BACKBONES, HEURISTICS, Setup
from experiments.report import (
    experiment_header,
    oracle_cell,
    pm,
    signed_interval,
    table,
    tokens_cell,
)
from experiments.stats import best_heuristic, interval

NAME = "backbones"
ROWS = (*HEURISTICS, "sft+softrankpo", "oracle")


def run(setup: Setup, backbones: Sequence[str] = BACKBONES) -> dict[str, Any]:
    t0, results = start(NAME, setup)
    per: dict[str, Any] = {}
    for bb in backbones:
        env = setup.cell(backbone=bb)
        setup.log(f"  {env.profile}")
        runs = evaluate_rows(setup, ROWS, env)
        agg = {row: accuracy_and_tokens(r) for row, r in runs.items()}
        best = best_heuristic(agg, HEURISTICS)
        diff = np.subtract(
            [r["team_accuracy"] for r in runs["sft+softrankpo"]],
            [r["team_accuracy"] for r in runs[best]],
        )
        per[bb] = {
            "profile": env.profile,
            "best_heuristic": best,
            "methods": agg,
            "softrankpo_minus_best": interval(diff),
        }
    results.update(backbones=per, **clock(t0))
    results["headline"] = "; ".join(
        f"{bb}: {p['methods']['sft+softrankpo']['team_accuracy']['mean']:.1%} vs "
        f"{p['best_heuristic']} {p['methods'][p['best_heuristic']]['team_accuracy']['mean']:.1%}"
        for bb, p in per.items()
    )
    return results


def _row(backbone: str, p: Mapping[str, Any]) -> list[str]:
    m, best = p["methods"], p["best_heuristic"]
    return [
        backbone,
        best,
        pm(m[best]["team_accuracy"]),
        pm(m["sft+softrankpo"]["team_accuracy"]),
        signed_interval(p["softrankpo_minus_best"]),
        oracle_cell(m),
        tokens_cell(m, best),
    ]


def render(results: Mapping[str, Any], out: Path) -> list[Path]:
    per = results["backbones"]
    md = experiment_header(f"Backbones ({results['config']['benchmark']}, N=3, T=3)", results)
    md += table(
        ["backbone", "best heuristic", "its accuracy (%)", "SFT+SoftRankPO (%)",
         "difference (points, 95% CI)", "oracle (%)", "tokens: heuristic / SoftRankPO"],
        (_row(bb, p) for bb, p in per.items()),
    )  # fmt: skip
    (out / "results.md").write_text(md)
    return [out / "results.md", plot_backbones(per, out / "backbones.png")]
