"""GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) on grouped deliberation
rollouts: advantages ``(r - mean_g) / (std + 1e-4)`` with the reward scaling of TRL's
`GRPOConfig.scale_rewards` ("group", "batch" or "none"; `algorithms.advantages.grpo`),
the same clipped surrogate and KL as SoftRankPO."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch

from algorithms import advantages
from algorithms.advantages import SCALE_REWARDS
from algorithms.common import TrainConfig, grouped_advantages, policy_gradient_update
from algorithms.policy import MetaPolicy
from algorithms.rollout import Rollout
from algorithms.trainer import make_train

grpo_advantages = advantages.grpo
"""`algorithms.advantages.grpo`, under its old import path."""


@dataclass
class GRPOConfig(TrainConfig):
    """GRPO training (fields of `TrainConfig` plus these)."""

    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Divide the centred rewards by the group's std ("group", GRPO's original), the
    batch's std ("batch") or nothing ("none", Dr. GRPO, arXiv 2503.20783), as TRL does."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"scale_rewards={self.scale_rewards!r} is not one of {SCALE_REWARDS}")


def update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    cfg: GRPOConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """One GRPO update on a batch of grouped rollouts."""
    grpo = partial(advantages.grpo, scale_rewards=cfg.scale_rewards)
    adv = grouped_advantages(roll, grpo, cfg.reward_transform)  # [B, N]
    stats = policy_gradient_update(policy, ref, optimizer, roll, adv, cfg, cfg.clip, generator)
    return {**stats, "adv_std": float(adv.std())}


train = make_train("grpo", GRPOConfig, update, doc="Train a meta-policy with GRPO.")
