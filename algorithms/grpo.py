"""GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) on grouped deliberation
rollouts: advantages ``(r - mean_g) / (std + 1e-4)`` with the reward scaling of TRL's
`GRPOConfig.scale_rewards` ("group", "batch" or "none"), the same clipped surrogate and KL
as SoftRankPO."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from algorithms.common import TrainConfig, Trainer, grouped_advantages, policy_gradient_update
from algorithms.policy import MetaPolicy
from algorithms.rollout import Rollout
from algorithms.softrankpo import _check_rewards

SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class GRPOConfig(TrainConfig):
    """GRPO training (fields of `TrainConfig` plus these)."""

    scale_rewards: str = "group"
    """Divide the centred rewards by the group's std ("group", GRPO's original), the
    batch's std ("batch") or nothing ("none", Dr. GRPO, arXiv 2503.20783), as TRL does."""

    def __post_init__(self) -> None:
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"scale_rewards={self.scale_rewards!r} is not one of {SCALE_REWARDS}")


def grpo_advantages(rewards: Any, scale_rewards: str = "group") -> np.ndarray:
    """TRL's GRPO advantages over the last (group) axis; std is the unbiased one
    (``torch.std``), and a group of one has advantage 0."""
    r = _check_rewards(rewards)
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


def update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    cfg: GRPOConfig,
) -> dict[str, float]:
    """One GRPO update on a batch of grouped rollouts."""
    adv = grouped_advantages(roll, partial(grpo_advantages, scale_rewards=cfg.scale_rewards))
    stats = policy_gradient_update(policy, ref, optimizer, roll, adv, cfg, clip=cfg.clip)
    return {**stats, "adv_std": float(adv.std())}


def train(
    cfg: GRPOConfig | None = None,
    policy: MetaPolicy | None = None,
    ref: MetaPolicy | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[MetaPolicy, list[dict[str, Any]]]:
    """Train a meta-policy with GRPO."""
    trainer = Trainer("grpo", cfg or GRPOConfig(), update, policy, ref, progress)
    if resume:
        trainer.resume()
    return trainer.run()
