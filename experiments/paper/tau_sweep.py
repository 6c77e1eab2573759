"""SoftRankPO at each temperature tau (the paper's best: 0.8), after SFT and alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.figures import plot_tau
from experiments.paper.common import accuracy_and_tokens, clock, evaluate_policies, start
from experiments.paper.setup import LABELS, PAPER_TAUS, Setup
from experiments.pipeline import learned
from experiments.report import experiment_header, pm, profile_of, table
from experiments.stats import metric

NAME = "tau-sweep"
VARIANTS = ("sft+softrankpo", "softrankpo")
"""The tau sweep runs the pipeline (SFT then SoftRankPO) and SoftRankPO alone: when the
KL anchor keeps the pipeline near its SFT start, tau can only show in the second."""


def run(
    setup: Setup, taus: Sequence[float] = PAPER_TAUS, variants: Sequence[str] = VARIANTS
) -> dict[str, Any]:
    t0, results = start(NAME, setup)
    env = setup.cell()
    per: dict[str, dict[str, Any]] = {}
    for variant in variants:
        per[variant] = {}
        for tau in taus:
            policies = learned(setup, variant, env, tau=float(tau))
            runs = evaluate_policies(setup, policies, env)
            per[variant][str(tau)] = {
                "tau": float(tau),
                **accuracy_and_tokens(runs),
                "persist_share": float(np.mean([r["persist_share"] for r in runs])),
            }
    sft_runs = evaluate_policies(setup, learned(setup, "sft", env), env)
    best = {
        v: max(by.values(), key=lambda p: p["team_accuracy"]["mean"])["tau"]
        for v, by in per.items()
    }
    results.update(taus=per, sft=metric(sft_runs), best_tau=best, **clock(t0))
    parts = []
    for v, by in per.items():
        acc = [p["team_accuracy"]["mean"] for p in by.values()]
        parts.append(f"{LABELS[v]}: best tau {best[v]}, range {min(acc):.1%}-{max(acc):.1%}")
    results["headline"] = "; ".join(parts) + " (paper: 0.8 best)"
    return results


def render(results: Mapping[str, Any], out: Path) -> list[Path]:
    per, best = results["taus"], results["best_tau"]
    taus = list(next(iter(per.values())))  # str(tau) keys, in sweep order
    header = ["tau"]
    for v in per:
        header += [f"{LABELS[v]}: accuracy (%)", "tokens", "persist"]
    rows = []
    for tau in taus:
        row = [tau]
        for by in per.values():
            p = by[tau]
            row += [pm(p["team_accuracy"]), f"{p['tokens_per_question']['mean']:.0f}",
                    f"{p['persist_share']:.1%}"]  # fmt: skip
        rows.append(row)
    md = experiment_header(f"Temperature sweep ({profile_of(results)})", results)
    md += table(header, rows)
    md += f"\nSFT alone: {pm(results['sft'])}. Best tau here: "
    md += ", ".join(f"{best[v]} ({LABELS[v]})" for v in per) + "; the paper's: 0.8.\n"
    (out / "results.md").write_text(md)
    return [out / "results.md", plot_tau(per, results["sft"], out / "tau_sweep.png")]
