"""REINFORCE (Williams 1992) with a group-mean baseline: advantage ``r - mean_g`` and the
plain policy gradient ``-log pi(a) * A`` (one epoch, no clipping), plus the same KL term."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from algorithms.common import TrainConfig, Trainer, grouped_advantages, policy_gradient_update
from algorithms.policy import MetaPolicy
from algorithms.rollout import Rollout
from algorithms.softrankpo import _check_rewards


@dataclass
class REINFORCEConfig(TrainConfig):
    """REINFORCE training: one pass per batch (on-policy gradient)."""

    epochs: int = 1
    minibatches: int = 1
    lr: float = 1e-3


def baseline_advantages(rewards: Any) -> np.ndarray:
    """``r - mean`` over the last (group) axis."""
    r = _check_rewards(rewards)
    return r - r.mean(-1, keepdims=True)


def update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    cfg: REINFORCEConfig,
) -> dict[str, float]:
    adv = grouped_advantages(roll, baseline_advantages)
    return policy_gradient_update(policy, ref, optimizer, roll, adv, cfg, clip=None)


def train(
    cfg: REINFORCEConfig | None = None,
    policy: MetaPolicy | None = None,
    ref: MetaPolicy | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[MetaPolicy, list[dict[str, Any]]]:
    """Train a meta-policy with REINFORCE."""
    trainer = Trainer("reinforce", cfg or REINFORCEConfig(), update, policy, ref, progress)
    if resume:
        trainer.resume()
    return trainer.run()
