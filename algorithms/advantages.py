"""The advantage maths of every method, in one place: pure functions on NumPy arrays.

Group methods (SoftRankPO, GRPO, REINFORCE, RLOO) map the group rewards ``[..., G]`` of
each (question, agent) pair, the last axis holding its G rollouts, to advantages of the
same shape (`algorithms.common.grouped_advantages` applies them to a rollout). PPO's
`gae` works over rounds instead. `REWARD_TRANSFORMS` are the strictly increasing reward
transforms of the reward-scale experiment (``TrainConfig.reward_transform``).

Each function is tested against values worked out by hand and, where the method
promises a property (invariance, zero mean, ties), by hypothesis (tests/test_advantages.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

SCALE_REWARDS = ("group", "batch", "none")
"""GRPO's reward scalings, as TRL's ``GRPOConfig.scale_rewards``."""


def check_rewards(rewards: Any) -> np.ndarray:
    """`rewards` as float64 with a group axis (last), every value finite; else a
    ValueError naming the first bad entry."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim == 0:
        raise ValueError("rewards must have a group axis (last): shape [..., G]")
    bad = ~np.isfinite(r)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"rewards contain {r[where]} at index {where}: group rewards must be finite; "
            "check the reward function or the env's reward terms"
        )
    return r


# --------------------------------------------------------------------------- SoftRankPO
def normal_scores(rewards: Any) -> np.ndarray:
    """Centred normal scores of the mid-ranks over the last axis, divided by their group
    std (zero where the group is all ties): SoftRankPO's advantage before the temperature.

    Mid-ranks with ties averaged -> ``ndtri((rank - 0.5) / G)`` (Hazen plotting
    position) -> centred -> divided by the group's (population) std of the scores.
    """
    r = check_rewards(rewards)
    G = r.shape[-1]
    ranks = rankdata(r, axis=-1)  # mid-ranks: ties share the mean of their ranks
    q = ndtri((ranks - 0.5) / G)
    q = q - q.mean(-1, keepdims=True)
    std = q.std(-1, keepdims=True)
    return np.divide(q, std, out=np.zeros_like(q), where=std > 1e-12)


def softrank(rewards: Any, tau: float = 0.8) -> np.ndarray:
    """SoftRankPO advantages (MPDF, Yang & Thomason, arXiv 2509.03817; our reading of the
    paper): `normal_scores` divided by the temperature `tau` (0.8, the paper's best).

    Exactly invariant to any strictly increasing transform of the rewards (only their
    order counts); zero mean per group; an all-tied group gives zeros; without ties
    ``|A| <= ndtri(1 - 0.5/G) / (std * tau)``, std the group's std of the scores.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return normal_scores(rewards) / tau


# --------------------------------------------------------------------------- GRPO
def grpo(rewards: Any, scale_rewards: str = "group") -> np.ndarray:
    """GRPO advantages (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) as TRL computes
    them: ``(r - mean_g) / (std + 1e-4)`` over the last (group) axis.

    `scale_rewards`: the std of the group (``"group"``, GRPO's original), of the whole
    batch (``"batch"``) or none (``"none"``, Dr. GRPO, arXiv 2503.20783). The std is the
    unbiased one (``torch.std``); a group of one has advantage 0.
    """
    r = check_rewards(rewards)
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards={scale_rewards!r} is not one of {SCALE_REWARDS}")
    G = r.shape[-1]
    adv = r - r.mean(-1, keepdims=True)
    if scale_rewards == "none" or G == 1:
        return adv
    if scale_rewards == "group":
        std = r.std(-1, ddof=1, keepdims=True)
    else:
        std = r.std(ddof=1) if r.size > 1 else 0.0
    return adv / (std + 1e-4)


# --------------------------------------------------------------------------- baselines
def group_baseline(rewards: Any) -> np.ndarray:
    """REINFORCE (Williams 1992) with the group mean as baseline: ``r - mean_g``."""
    r = check_rewards(rewards)
    return r - r.mean(-1, keepdims=True)


def rloo(rewards: Any) -> np.ndarray:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics",
    arXiv 2402.14740): each rollout's baseline is the mean of the other G - 1,
    ``r_g - (sum(r) - r_g) / (G - 1)``, which equals ``G / (G - 1) * (r_g - mean_g)``.
    Needs G >= 2."""
    r = check_rewards(rewards)
    G = r.shape[-1]
    if G < 2:
        raise ValueError(f"rloo needs group_size >= 2 (a baseline from the others); got {G}")
    return r - (r.sum(-1, keepdims=True) - r) / (G - 1)


# --------------------------------------------------------------------------- PPO
def gae(
    rewards: Any, values: Any, active: Any, gamma: float = 1.0, lam: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438) per
    agent, over rounds.

    Args:
        rewards: ``[T, B, N]`` reward of each agent after round t.
        values: ``[T, B, N]`` value estimates of the state before round t.
        active: ``[T, B]`` bool, env b played round t. The value after an env's last
            active round is 0: episodes end naturally (terminated, never truncated).
        gamma, lam: discount and GAE lambda.

    Returns:
        ``(advantages, returns)``, both ``[T, B, N]`` float32, zero where not active;
        ``returns = advantages + values`` (the value targets).
    """
    r = np.asarray(rewards, np.float64)
    v = np.asarray(values, np.float64)
    live = np.asarray(active, bool)
    if r.shape != v.shape or r.ndim != 3 or live.shape != r.shape[:2]:
        raise ValueError(
            f"gae needs rewards and values [T, B, N] and active [T, B]; got rewards "
            f"{r.shape}, values {v.shape}, active {live.shape}"
        )
    alive = live[..., None].astype(np.float64)
    adv = np.zeros_like(r)
    last = np.zeros_like(r[0])
    for t in reversed(range(len(r))):
        if t + 1 < len(r):
            next_live, next_value = alive[t + 1], v[t + 1]
        else:
            next_live, next_value = np.zeros_like(last), np.zeros_like(last)
        delta = r[t] + gamma * next_live * next_value - v[t]
        last = delta + gamma * lam * next_live * last
        adv[t] = last
    adv *= alive
    return adv.astype(np.float32), ((adv + v) * alive).astype(np.float32)


def explained_variance(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """``1 - Var(y_true - y_pred) / Var(y_true)``: 1 is a perfect critic, 0 a constant one,
    NaN when the targets do not vary (CleanRL's diagnostic)."""
    var = np.var(y_true)
    return float("nan") if var == 0 else float(1 - np.var(y_true - y_pred) / var)


# --------------------------------------------------------------------------- transforms
REWARD_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda r: r,
    "x1": lambda r: r,
    "x0.1": lambda r: 0.1 * r,
    "x10": lambda r: 10.0 * r,
    "exp": np.exp,
}
"""Strictly increasing reward transforms (the paper's reward-scale experiment): applied
to the group returns before the advantage function (``TrainConfig.reward_transform``).
``"x1"`` is ``"identity"`` under the name the experiment's results use."""


def reward_transform(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The `REWARD_TRANSFORMS` entry `name`, or a ValueError listing the names."""
    if name not in REWARD_TRANSFORMS:
        raise ValueError(
            f"reward_transform={name!r} is not one of {sorted(REWARD_TRANSFORMS)} "
            "(strictly increasing transforms of the group returns)"
        )
    return REWARD_TRANSFORMS[name]
