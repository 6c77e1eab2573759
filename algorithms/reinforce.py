"""REINFORCE (Williams 1992) with a group-mean baseline: advantage ``r - mean_g``
(`algorithms.advantages.group_baseline`) and the plain policy gradient
``-log pi(a) * A`` (one epoch, no clipping), plus the same KL term."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from algorithms import advantages
from algorithms.common import TrainConfig, grouped_advantages, policy_gradient_update
from algorithms.policy import MetaPolicy
from algorithms.rollout import Rollout
from algorithms.trainer import make_train

baseline_advantages = advantages.group_baseline
"""`algorithms.advantages.group_baseline`, under its old import path."""


@dataclass
class REINFORCEConfig(TrainConfig):
    """REINFORCE training: one pass per batch (on-policy gradient)."""

    epochs: int = 1
    """One pass: the plain policy gradient is only unbiased on-policy."""
    minibatches: int = 1
    """The whole batch in one step."""
    lr: float = 1e-3
    """Adam learning rate (higher than the clipped methods': one step per batch)."""


def update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    cfg: REINFORCEConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """One REINFORCE update: the unclipped policy gradient on group-baselined returns."""
    adv = grouped_advantages(roll, advantages.group_baseline, cfg.reward_transform)  # [B, N]
    return policy_gradient_update(policy, ref, optimizer, roll, adv, cfg, None, generator)


train = make_train("reinforce", REINFORCEConfig, update, doc="Train a meta-policy with REINFORCE.")
