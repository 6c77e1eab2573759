"""SoftRankPO (MPDF, Yang & Thomason, arXiv 2509.03817): group policy optimisation on
rank-based normal scores of the rewards, so the update is invariant to any strictly
increasing transform of the reward scale.

Advantage (our reading of the paper, DESIGN section 9), for each group of G rollouts:
mid-ranks with ties averaged -> normal scores ``ndtri((rank - 0.5) / G)`` (Hazen plotting
position) -> centred -> divided by the group's std of the scores (zero for an all-tied
group) -> divided by the temperature tau. Loss: PPO's clipped surrogate on these
advantages plus ``beta * KL(pi || pi_ref)``. Advantages have zero mean, unit std times
1/tau, and ``|A| <= ndtri(1 - 0.5/G) / (std * tau)`` for a group without ties (ties shift
the scores' mean off 0 and widen the bound by that mean); or, with ``loss="rank_matching"``, the
cross-entropy between softmax over the group of the scaled scores and softmax of the
implicit reward ``beta * log(pi / pi_ref)`` of each rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from scipy.special import ndtri
from scipy.stats import rankdata

from algorithms.common import (
    TrainConfig,
    Trainer,
    grouped_advantages,
    policy_gradient_update,
    rows_of,
)
from algorithms.policy import MetaPolicy
from algorithms.rollout import Rollout

LOSSES = ("clipped", "rank_matching")


@dataclass
class SoftRankPOConfig(TrainConfig):
    """SoftRankPO training (fields of `TrainConfig` plus these)."""

    tau: float = 0.8
    """Temperature of the soft ranks; 0.8 is the paper's best of {0.4, 0.6, 0.8, 1.0, 2.0,
    5.0} (arXiv 2509.03817)."""
    loss: str = "clipped"
    """``"clipped"`` (surrogate on rank advantages) or ``"rank_matching"``."""

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not one of {LOSSES}")


def _check_rewards(rewards: Any) -> np.ndarray:
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


def normal_scores(rewards: Any) -> np.ndarray:
    """Centred normal scores of the mid-ranks over the last axis, divided by their
    group std (zero where the group is all ties). Pure; the core of SoftRankPO."""
    r = _check_rewards(rewards)
    G = r.shape[-1]
    ranks = rankdata(r, axis=-1)  # mid-ranks: ties share the mean of their ranks
    q = ndtri((ranks - 0.5) / G)
    q = q - q.mean(-1, keepdims=True)
    std = q.std(-1, keepdims=True)
    return np.divide(q, std, out=np.zeros_like(q), where=std > 1e-12)


def softrank_advantages(rewards: Any, tau: float = 0.8) -> np.ndarray:
    """SoftRankPO advantages ``[..., G]`` from group rewards ``[..., G]``."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return normal_scores(rewards) / tau


def rank_matching_loss(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    roll: Rollout,
    questions: np.ndarray,
    targets: np.ndarray,
    beta: float,
) -> torch.Tensor:
    """Cross-entropy between softmax_g(targets) and softmax_g(beta * log pi/pi_ref summed
    over the rollout's rounds), for each (question, agent) of `questions`."""
    T, B, N = roll.actions.shape
    G = roll.group_size
    idx = rows_of(roll, questions)
    actions = torch.as_tensor(roll.actions.reshape(T * B, N)[idx])
    logp = logits.log_softmax(-1).gather(-1, actions[..., None])[..., 0]
    ref = ref_logits.log_softmax(-1).gather(-1, actions[..., None])[..., 0]
    env = torch.as_tensor(idx % B)
    implicit = torch.zeros(B, N).index_add(0, env, beta * (logp - ref))  # [B, N]
    envs = torch.as_tensor((questions[:, None] * G + np.arange(G)).ravel())
    implicit = implicit[envs].reshape(len(questions), G, N)
    target = torch.as_tensor(targets.reshape(-1, G, N)[questions], dtype=torch.float32)
    return -(target.softmax(1) * implicit.log_softmax(1)).sum(1).mean()


def update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    cfg: SoftRankPOConfig,
) -> dict[str, float]:
    """One SoftRankPO update on a batch of grouped rollouts."""
    adv = grouped_advantages(roll, partial(softrank_advantages, tau=cfg.tau))
    extra = None
    if cfg.loss == "rank_matching":
        T, B, N, D = roll.obs.shape
        with torch.no_grad():
            ref_logits = ref(
                torch.as_tensor(roll.obs.reshape(T * B, N, D)),
                torch.as_tensor(roll.masks.reshape(T * B, N, 3)),
            )

        def extra(logits, roll, questions):
            idx = torch.as_tensor(rows_of(roll, questions))
            return rank_matching_loss(logits, ref_logits[idx], roll, questions, adv, cfg.beta)

    stats = policy_gradient_update(
        policy, ref, optimizer, roll, adv, cfg, clip=cfg.clip, extra_loss=extra
    )
    return {**stats, "adv_std": float(adv.std())}


def train(
    cfg: SoftRankPOConfig | None = None,
    policy: MetaPolicy | None = None,
    ref: MetaPolicy | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[MetaPolicy, list[dict[str, Any]]]:
    """Train a meta-policy with SoftRankPO; `policy`/`ref` give the two-stage pipeline's
    SFT start and KL anchor."""
    trainer = Trainer("softrankpo", cfg or SoftRankPOConfig(), update, policy, ref, progress)
    if resume:
        trainer.resume()
    return trainer.run()
