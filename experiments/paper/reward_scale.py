"""Rewards x0.1, x1, x10 and exp (``TrainConfig.reward_transform``): the transform is
applied to the group returns before the advantage function (not to the env's rewards).
SoftRankPO is exactly invariant: with one seed its runs under every transform give
identical parameters (`check` asserts it).

RL starts from a fresh policy (KL-anchored at it) unless `from_sft`, so the learning curves
show the algorithms learning rather than staying near an SFT policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from algorithms.policy import MetaPolicy
from experiments.figures import plot_reward_scale
from experiments.paper.common import accuracy_and_tokens, clock, evaluate_policies, start
from experiments.paper.setup import Setup
from experiments.pipeline import learning_curve, train_rl
from experiments.report import experiment_header, pm, profile_of, table

NAME = "reward-scale"
TRANSFORMS = ("x0.1", "x1", "x10", "exp")
"""Strictly increasing transforms, by their `algorithms.advantages.REWARD_TRANSFORMS` names."""
METHODS = {
    "softrankpo": ("softrankpo", {}),
    "grpo": ("grpo", {"scale_rewards": "group"}),
    "grpo_unscaled": ("grpo", {"scale_rewards": "none"}),
}
"""SoftRankPO; GRPO as in DeepSeekMath/TRL (rewards divided by the group std, so a pure
rescaling changes only the 1e-4 in the denominator); and Dr. GRPO (``scale_rewards=
"none"``), where the reward scale sets the advantage scale against the KL term."""

Trained = list[tuple[MetaPolicy, list[dict[str, Any]]]]


def _param_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def _curve_diff(runs: Trained, reference: Trained) -> float:
    return max(
        abs(a["team_accuracy"] - b["team_accuracy"])
        for (_, h), (_, g) in zip(runs, reference)
        for a, b in zip(learning_curve(h), learning_curve(g))
    )


def _method(
    setup: Setup, method: str, overrides: Mapping[str, Any], transforms: Sequence[str],
    ref: str, from_sft: bool,
) -> tuple[dict[str, Any], dict[str, list]]:  # fmt: skip
    """Each transform's accuracy, and its parameter and curve distance to `ref`'s runs."""
    env = setup.cell()
    trained: dict[str, Trained] = {
        tf: [
            train_rl(setup, method, env, s, from_sft, reward_transform=tf, **overrides)
            for s in setup.budget.train_seeds
        ]
        for tf in transforms
    }
    by_tf: dict[str, Any] = {}
    curves: dict[str, list] = {}
    for tf, runs in trained.items():
        evaluated = evaluate_policies(setup, [p for p, _ in runs], env)
        by_tf[tf] = accuracy_and_tokens(evaluated)
        curves[tf] = [learning_curve(h) for _, h in runs]
        if tf != ref:
            pairs = zip(runs, trained[ref])
            by_tf[tf][f"max_abs_param_diff_vs_{ref}"] = max(
                _param_diff(p, q) for (p, _), (q, _) in pairs
            )
            by_tf[tf][f"max_abs_curve_diff_vs_{ref}"] = _curve_diff(runs, trained[ref])
    return by_tf, curves


def run(
    setup: Setup, transforms: Sequence[str] = TRANSFORMS, from_sft: bool = False
) -> dict[str, Any]:
    t0, results = start(NAME, setup)
    ref = "x1" if "x1" in transforms else transforms[0]
    methods: dict[str, Any] = {}
    curves: dict[str, dict[str, list]] = {}
    for name, (method, overrides) in METHODS.items():
        methods[name], curves[name] = _method(setup, method, overrides, transforms, ref, from_sft)
    key = f"max_abs_param_diff_vs_{ref}"
    invariance = {
        name: {tf: m[key] for tf, m in by.items() if key in m} for name, by in methods.items()
    }
    results.update(
        transform_applied_to="group returns, before the advantage function (env rewards unchanged)",
        from_sft=from_sft,
        transforms=list(transforms),
        reference=ref,
        methods=methods,
        learning_curves=curves,
        invariance=invariance,
        softrankpo_identical=all(v == 0.0 for v in invariance["softrankpo"].values()),
        **clock(t0),
    )
    results["headline"] = (
        "SoftRankPO max abs param diff vs x1: "
        + ", ".join(
            f"{tf} {d:.0e}" if d else f"{tf} 0" for tf, d in invariance["softrankpo"].items()
        )
        + "; GRPO: "
        + ", ".join(f"{tf} {d:.1e}" for tf, d in invariance["grpo"].items())
    )
    return results


def check(results: Mapping[str, Any]) -> None:
    """Raise when SoftRankPO's runs differ under a transform (after the files are written)."""
    if not results["softrankpo_identical"]:
        raise AssertionError(
            f"SoftRankPO changed under a reward transform: {results['invariance']}"
        )


def render(results: Mapping[str, Any], out: Path) -> list[Path]:
    transforms, ref, invariance = results["transforms"], results["reference"], results["invariance"]
    start_from = "from SFT" if results["from_sft"] else "from scratch"
    md = experiment_header(f"Reward scale ({profile_of(results)})", results)
    md += (
        "The transform is applied to each group's returns before the advantage function "
        f"(`advantage_fn(transform(R))`); training starts {start_from} with the same seed "
        "for every transform.\n\n"
    )
    md += table(
        ["method", *(f"{tf} accuracy (%)" for tf in transforms),
         f"max abs parameter difference vs {ref}"],
        (
            [name, *(pm(by[tf]["team_accuracy"]) for tf in transforms),
             ", ".join(f"{tf}: {d:.3g}" for tf, d in invariance[name].items())]
            for name, by in results["methods"].items()
        ),
    )  # fmt: skip
    confirmed = "confirmed" if results["softrankpo_identical"] else "NOT confirmed"
    md += (
        "\nSoftRankPO's runs are bit-identical under every strictly increasing transform "
        f"({confirmed}): its advantages depend on the ranks only. GRPO's depend on the values.\n"
    )
    (out / "results.md").write_text(md)
    curves = results["learning_curves"]
    return [out / "results.md", plot_reward_scale(curves, out / "reward_scale_curves.png")]
