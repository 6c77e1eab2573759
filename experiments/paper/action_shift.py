"""PERSIST / REFINE / CONCEDE shares after SFT and after RL (SFT+SoftRankPO; and SoftRankPO
alone, for reference), overall and per round, with the effective shares (a CONCEDE that
copies my own answer is a no-op, counted apart: `algorithms.evaluate.effective_counts`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.figures import plot_action_shift
from experiments.paper.common import clock, evaluate_policies, start
from experiments.paper.setup import LABELS, Setup
from experiments.pipeline import learned
from experiments.report import experiment_header, pm, profile_of, table
from experiments.stats import aggregate

NAME = "action-shift"
STAGES = ("sft", "sft+softrankpo", "softrankpo")
KEPT = (
    "team_accuracy",
    "tokens_per_question",
    "action_shares",
    "action_shares_per_round",
    "effective_shares",
    "effective_shares_per_round",
)
"""What each stage keeps of `aggregate`'s summary."""


def run(setup: Setup, stages: Sequence[str] = STAGES) -> dict[str, Any]:
    t0, results = start(NAME, setup)
    env = setup.cell()
    by_stage: dict[str, Any] = {}
    for name in stages:
        runs = evaluate_policies(setup, learned(setup, name, env), env)
        agg = aggregate(runs)
        by_stage[name] = {k: agg[k] for k in KEPT}
    results.update(stages=by_stage, **clock(t0))
    results["headline"] = _headline(by_stage)
    return results


def _headline(stages: Mapping[str, Any]) -> str:
    s, r = stages["sft"], stages["sft+softrankpo"]
    line = (
        f"PERSIST {s['action_shares']['persist']:.1%} after SFT -> "
        f"{r['action_shares']['persist']:.1%} after RL (paper 19.1% -> 78.8%); kept answer "
        f"without an LLM call {s['effective_shares']['keeps_answer_without_llm']:.1%} -> "
        f"{r['effective_shares']['keeps_answer_without_llm']:.1%}"
    )
    if "softrankpo" in stages:
        alone = stages["softrankpo"]
        line += (
            f"; SoftRankPO without SFT: PERSIST {alone['action_shares']['persist']:.1%}, "
            f"no-op CONCEDE {alone['effective_shares']['concede_noop']:.1%}"
        )
    return line


def _stage_row(name: str, st: Mapping[str, Any]) -> list[str]:
    a, e = st["action_shares"], st["effective_shares"]
    return [
        LABELS[name],
        pm(st["team_accuracy"]),
        f"{st['tokens_per_question']['mean']:.0f}",
        *(f"{a[k]:.1%}" for k in ("persist", "refine", "concede")),
        *(f"{e[k]:.1%}" for k in ("persist", "refine", "concede", "concede_noop")),
        f"{e['concede_all_agree']:.1%}",
    ]


def _round_cell(a: Mapping[str, float], e: Mapping[str, float]) -> str:
    return f"{a['persist']:.0%} / {a['refine']:.0%} / {a['concede']:.0%} [{e['concede_noop']:.0%}]"


def render(results: Mapping[str, Any], out: Path) -> list[Path]:
    stages = results["stages"]
    md = experiment_header(f"Action shift ({profile_of(results)})", results)
    md += table(
        ["stage", "accuracy (%)", "tokens", "persist", "refine", "concede", "effective: persist",
         "refine", "concede (changes answer)", "concede no-op", "of which all peers agree"],
        (_stage_row(name, st) for name, st in stages.items()),
    )  # fmt: skip
    md += "\nPer round (persist / refine / concede; effective no-op concede in brackets):\n\n"
    rounds = len(stages["sft"]["action_shares_per_round"])
    md += table(
        ["round", *(LABELS[n] for n in stages)],
        (
            [t + 1, *(_round_cell(st["action_shares_per_round"][t],
                                  st["effective_shares_per_round"][t]) for st in stages.values())]
            for t in range(rounds)
        ),
    )  # fmt: skip
    md += "\nPaper: PERSIST 19.1% after SFT -> 78.8% after RL.\n"
    (out / "results.md").write_text(md)
    return [out / "results.md", plot_action_shift(stages, out / "action_shift.png")]
