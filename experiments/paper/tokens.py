"""Tokens per question against team accuracy for every method, with the Pareto front (the
oracle is drawn but not on the front: no meta-policy can see correctness)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.figures import plot_pareto
from experiments.paper.common import accuracy_and_tokens, clock, evaluate_rows, start
from experiments.paper.setup import HEURISTICS, LABELS, LEARNED, PAPER, Setup
from experiments.report import experiment_header, pm, profile_of, table
from experiments.stats import best_heuristic, pareto_front

NAME = "tokens"
ROWS = (
    *HEURISTICS,
    "always_persist",
    "concede_to_plurality",
    "confidence_threshold",
    "random",
    *LEARNED,
    "oracle",
)


def _tokens(methods: Mapping[str, Any], name: str) -> float:
    return float(methods[name]["tokens_per_question"]["mean"])


def run(setup: Setup, rows: Sequence[str] = ROWS) -> dict[str, Any]:
    t0, results = start(NAME, setup)
    runs = evaluate_rows(setup, rows, setup.cell())
    methods = {row: accuracy_and_tokens(r) for row, r in runs.items()}
    names = [n for n in methods if n != "oracle"]
    front = [
        names[i]
        for i in pareto_front(
            [_tokens(methods, n) for n in names],
            [methods[n]["team_accuracy"]["mean"] for n in names],
        )
    ]
    strongest = best_heuristic(
        methods, [h for h in ROWS if h in methods and h not in LEARNED and h != "oracle"]
    )
    srpo, debate = _tokens(methods, "sft+softrankpo"), _tokens(methods, "debate")
    ratios = {
        "softrankpo_over_debate": srpo / debate,
        "softrankpo_over_strongest": srpo / _tokens(methods, strongest),
        "paper_softrankpo_over_strongest": PAPER["tokens_softrankpo"]
        / PAPER["tokens_strongest_baseline"],
    }
    headline = (
        f"SFT+SoftRankPO {srpo:.0f} tokens/question vs debate {debate:.0f} "
        f"({ratios['softrankpo_over_debate']:.2f}x) and strongest baseline {strongest} "
        f"{_tokens(methods, strongest):.0f} ({ratios['softrankpo_over_strongest']:.2f}x; "
        "paper 0.70x)"
    )
    if "softrankpo" in methods:
        alone = _tokens(methods, "softrankpo")
        ratios["rl_only_softrankpo_over_debate"] = alone / debate
        ratios["rl_only_softrankpo_over_strongest"] = alone / _tokens(methods, strongest)
        headline += f"; SoftRankPO without SFT {alone:.0f}"
    results.update(methods=methods, pareto_front=front, strongest_baseline=strongest,
                   **clock(t0), ratios=ratios, headline=headline)  # fmt: skip
    return results


def render(results: Mapping[str, Any], out: Path) -> list[Path]:
    methods, front, ratios = results["methods"], results["pareto_front"], results["ratios"]
    rows = []
    for name, m in sorted(methods.items(), key=lambda kv: kv[1]["tokens_per_question"]["mean"]):
        on = "yes" if name in front else ("(limit)" if name == "oracle" else "")
        rows.append([LABELS.get(name, name), pm(m["team_accuracy"]),
                     pm(m["tokens_per_question"], 1.0, 0), on])  # fmt: skip
    md = experiment_header(f"Tokens vs accuracy ({profile_of(results)})", results)
    md += table(["method", "team accuracy (%)", "tokens / question", "on the Pareto front"], rows)
    md += (
        f"\nSFT+SoftRankPO uses {ratios['softrankpo_over_debate']:.2f}x the tokens of debate "
        f"and {ratios['softrankpo_over_strongest']:.2f}x those of the strongest baseline "
        f"({results['strongest_baseline']}). Paper: 47.1k vs 67.2k tokens (0.70x).\n"
    )
    (out / "results.md").write_text(md)
    return [out / "results.md", plot_pareto(methods, front, out / "tokens_pareto.png")]
