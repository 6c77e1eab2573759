"""SoftRankPO (MPDF, Yang & Thomason, arXiv 2509.03817): group policy optimisation on
rank-based normal scores of the rewards, so the update is invariant to any strictly
increasing transform of the reward scale.

Advantage (`algorithms.advantages.softrank`, our reading of the paper, docs/design_decisions.md#the-algorithms-choices),
for each group of G rollouts: mid-ranks with ties averaged -> normal scores
``ndtri((rank - 0.5) / G)`` (Hazen plotting position) -> centred -> divided by the group's
std of the scores (zero for an all-tied group) -> divided by the temperature tau.
Loss: PPO's clipped surrogate on these advantages plus ``beta * KL(pi || pi_ref)``; or,
with ``loss="rank_matching"``, the cross-entropy between softmax over the group of the
scaled scores and softmax of the implicit reward ``beta * log(pi / pi_ref)`` of each
rollout, plus the same KL.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch

from algorithms import advantages
from algorithms.common import (
    DistinctRows,
    FlatBatch,
    TrainConfig,
    approx_kl,
    grouped_advantages,
    kl_to_reference,
    log_stats,
    mean_stats,
    optimise,
    policy_gradient_update,
    question_minibatches,
)
from algorithms.policy import MetaPolicy
from algorithms.rollout import Rollout
from algorithms.trainer import make_train

LOSSES = ("clipped", "rank_matching")

normal_scores = advantages.normal_scores
"""`algorithms.advantages.normal_scores`, under its old import path."""
softrank_advantages = advantages.softrank
"""`algorithms.advantages.softrank`, under its old import path."""


@dataclass
class SoftRankPOConfig(TrainConfig):
    """SoftRankPO training (fields of `TrainConfig` plus these)."""

    tau: float = 0.8
    """Temperature of the soft ranks; 0.8 is the paper's best of {0.4, 0.6, 0.8, 1.0, 2.0,
    5.0} (arXiv 2509.03817)."""
    loss: Literal["clipped", "rank_matching"] = "clipped"
    """``"clipped"`` (surrogate on rank advantages) or ``"rank_matching"``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not one of {LOSSES}")


def rank_matching_loss(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    roll: Rollout,
    questions: np.ndarray,
    rows: torch.Tensor,
    targets: np.ndarray,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy between softmax_g(targets) and softmax_g(beta * log pi/pi_ref summed
    over the rollout's rounds), for each (question, agent) of `questions`; `rows` are the
    flat indices of their rounds, `logits` and `ref_logits` those rows' logits.

    Diagnostic: ``top1_agreement``, the share of groups whose highest implicit reward is
    the rollout with the highest target."""
    T, B, N = roll.actions.shape
    G = roll.group_size
    actions = torch.as_tensor(roll.actions.reshape(T * B, N))[rows]
    logp = logits.log_softmax(-1).gather(-1, actions[..., None])[..., 0]
    ref = ref_logits.log_softmax(-1).gather(-1, actions[..., None])[..., 0]
    env = rows % B
    implicit = torch.zeros(B, N).index_add(0, env, beta * (logp - ref))  # [B, N]
    envs = torch.as_tensor((questions[:, None] * G + np.arange(G)).ravel())
    implicit = implicit[envs].reshape(len(questions), G, N)
    target = torch.as_tensor(targets.reshape(-1, G, N)[questions], dtype=torch.float32)
    loss = -(target.softmax(1) * implicit.log_softmax(1)).sum(1).mean()
    with torch.no_grad():
        top1 = (implicit.argmax(1) == target.argmax(1)).float().mean()
    return loss, {"top1_agreement": float(top1)}


def rank_matching_update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    adv: np.ndarray,
    cfg: SoftRankPOConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """Epochs of minibatch steps on the rank-matching loss plus ``beta * KL`` minus the
    entropy bonus."""
    batch = FlatBatch.of(roll)
    distinct = DistinctRows.of(batch.obs, batch.masks)
    ref_logits = distinct.reference_logits(ref)
    log: dict[str, list[float]] = {}
    for questions, idx in question_minibatches(roll, cfg.epochs, cfg.minibatches, generator):
        logits = distinct.logits(policy, idx)
        dist = torch.distributions.Categorical(logits=logits)
        rm, stats = rank_matching_loss(logits, ref_logits[idx], roll, questions, idx, adv, cfg.beta)
        kl = kl_to_reference(logits, ref_logits[idx])
        entropy = dist.entropy().mean()
        loss = rm + cfg.beta * kl - cfg.entropy_coef * entropy
        stats["approx_kl"] = approx_kl(dist.log_prob(batch.actions[idx]), batch.logp_old[idx])
        grad_norm = optimise(policy, optimizer, loss, cfg.max_grad_norm)
        log_stats(log, stats, loss=loss, pg_loss=rm, kl=kl, entropy=entropy, grad_norm=grad_norm)
    return mean_stats(log)


def update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    cfg: SoftRankPOConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """One SoftRankPO update on a batch of grouped rollouts."""
    softrank = partial(advantages.softrank, tau=cfg.tau)
    adv = grouped_advantages(roll, softrank, cfg.reward_transform)  # [B, N]
    if cfg.loss == "clipped":
        stats = policy_gradient_update(policy, ref, optimizer, roll, adv, cfg, cfg.clip, generator)
    else:
        stats = rank_matching_update(policy, ref, optimizer, roll, adv, cfg, generator)
    return {**stats, "adv_std": float(adv.std())}


train = make_train(
    "softrankpo",
    SoftRankPOConfig,
    update,
    doc="""Train a meta-policy with SoftRankPO; `policy`/`ref` give the two-stage pipeline's
    SFT start and KL anchor; `resume` continues from ``cfg.out``'s checkpoint.""",
)
