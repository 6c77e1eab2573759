"""PPO for the meta-policy: IPPO (de Witt et al. 2020, arXiv 2011.09533) or MAPPO (Yu et
al. 2022, arXiv 2103.01955) with GAE and a value head, the CleanRL recipe
(`cleanrl/ppo.py`, Huang et al. 2022, "The 37 Implementation Details of PPO").

Read in the order it runs: `Trainer` collects one episode per env with
`algorithms.rollout.collect` (no groups needed: ``group_size=1``); `update` computes the
values of the recorded observations (or global states) with the value head, turns the
per-agent rewards into advantages with `gae`, then runs epochs of minibatch steps on the
clipped surrogate, the clipped value loss and the entropy bonus, logging approx_kl,
clipfrac and explained variance beside the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from algorithms.advantages import explained_variance, gae
from algorithms.common import (
    ActionLogProbs,
    DistinctRows,
    FlatBatch,
    TrainConfig,
    clipped_surrogate,
    log_stats,
    mean_stats,
    optimise,
)
from algorithms.policy import MetaPolicy, with_value_head
from algorithms.rollout import Rollout
from algorithms.trainer import make_train
from deliberation_env.core import layout_for

__all__ = ["PPOConfig", "critic_state_size", "explained_variance", "gae", "train", "update"]
__all__ += ["with_value_head"]  # moved to algorithms.policy; importable from here as before


@dataclass
class PPOConfig(TrainConfig):
    """PPO training (fields of `TrainConfig`, some defaults changed, plus these)."""

    questions_per_update: int = 512
    """Envs (questions) per batch: one episode each. 512 matches the episodes per update of
    SoftRankPO/GRPO's defaults (64 questions x 8 rollouts), so the budgets compare."""
    group_size: int = 1
    """PPO needs no groups: the value head is the baseline. (G > 1 replays a question's
    initial answers G times; the rollouts are then still treated independently.)"""
    epochs: int = 4
    """Passes over each batch (CleanRL's ``update_epochs``)."""
    minibatches: int = 4
    """Minibatches per epoch, drawn over the active (round, env) rows, each row with its N
    agents (CleanRL's ``num_minibatches``)."""
    beta: float = 0.0
    """Weight of KL(pi || pi_ref); 0 in plain PPO (the clipping is the trust region).
    Set it > 0 to anchor PPO to an SFT policy as in the two-stage pipeline."""
    entropy_coef: float = 0.01
    """Entropy bonus, CleanRL's ``ent_coef`` default (cleanrl/ppo.py)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip, CleanRL's default (cleanrl/ppo.py)."""
    gamma: float = 1.0
    """Discount. 1: episodes last `max_rounds` (3) rounds and always end, so there is no
    horizon to shorten (CleanRL's 0.99 is for long episodes)."""
    gae_lambda: float = 0.95
    """GAE's lambda (Schulman et al. 2016, arXiv 1506.02438; CleanRL's default)."""
    vf_coef: float = 0.5
    """Weight of the value loss (CleanRL's default)."""
    norm_adv: bool = True
    """Normalise the advantages per minibatch (CleanRL's default; implementation detail 7
    of Huang et al. 2022)."""
    clip_vloss: bool = True
    """Clip the value update around the old values with `clip` (CleanRL's default, from
    OpenAI baselines' PPO2)."""
    centralised_critic: bool = False
    """MAPPO (Yu et al. 2022): the value head reads the global state `env.state()`.
    False: IPPO (de Witt et al. 2020), the value head reads the agent's own features."""

    min_group_size: ClassVar[int] = 1
    """The value head is the baseline: a group of one rollout is PPO's default."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward_transform != "identity":
            raise ValueError(
                f"reward_transform={self.reward_transform!r}: PPO has no group returns to "
                "transform (its advantages come from per-round rewards); leave it 'identity'"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must lie in [0, 1], got {self.gae_lambda}")
        if self.vf_coef < 0:
            raise ValueError(f"vf_coef must be >= 0, got {self.vf_coef}")


def value_loss(
    v: torch.Tensor, v_old: torch.Tensor, returns: torch.Tensor, clip: float | None
) -> torch.Tensor:
    """``0.5 * (v - returns)^2``, averaged; with `clip`, the larger of it and the error of
    the update clipped to ``v_old +- clip`` (CleanRL's ``clip_vloss``, from OpenAI
    baselines' PPO2)."""
    loss = (v - returns) ** 2
    if clip is not None:
        v_clipped = v_old + (v - v_old).clamp(-clip, clip)
        loss = torch.max(loss, (v_clipped - returns) ** 2)
    return 0.5 * loss.mean()


def update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    cfg: PPOConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """One PPO update: values and GAE on the batch, then `epochs` passes of `minibatches`
    steps over the active (round, env) rows, in an order drawn from `generator`."""
    T, B, N = roll.actions.shape
    batch = FlatBatch.of(roll)
    obs, masks, actions, logp_old = batch.obs, batch.masks, batch.actions, batch.logp_old
    states = torch.as_tensor(roll.states.reshape(T * B, -1)) if cfg.centralised_critic else None
    with torch.no_grad():
        values = policy.value(obs, states).reshape(T, B, N).numpy()
    distinct = DistinctRows.of(obs, masks) if cfg.beta else None
    ref_logp = None if distinct is None else distinct.reference_logits(ref).log_softmax(-1)
    adv, ret = gae(roll.rewards, values, roll.active, cfg.gamma, cfg.gae_lambda)
    advantages = torch.as_tensor(adv.reshape(T * B, N))
    returns = torch.as_tensor(ret.reshape(T * B, N))
    values_old = torch.as_tensor(values.reshape(T * B, N))
    rows = np.flatnonzero(roll.active.ravel())  # finished envs' frozen rounds are not data

    log: dict[str, list[float]] = {}
    for _ in range(cfg.epochs):
        order = torch.as_tensor(rows)[torch.randperm(len(rows), generator=generator)]
        for idx in order.tensor_split(min(cfg.minibatches, len(rows))):
            logits, v = policy.logits_and_value(
                obs[idx], masks[idx], None if states is None else states[idx]
            )
            lp = ActionLogProbs.of(logits, actions[idx])
            a = advantages[idx]
            if cfg.norm_adv and a.numel() > 1:
                a = (a - a.mean()) / (a.std() + 1e-8)
            pg, stats = clipped_surrogate(lp.logp, logp_old[idx], a, cfg.clip)

            v_clip = cfg.clip if cfg.clip_vloss else None
            v_loss = value_loss(v, values_old[idx], returns[idx], v_clip)

            entropy = lp.entropy()
            kl = torch.zeros(()) if ref_logp is None else lp.kl_to(ref_logp[idx])
            loss = pg - cfg.entropy_coef * entropy + cfg.vf_coef * v_loss + cfg.beta * kl

            grad_norm = optimise(policy, optimizer, loss, cfg.max_grad_norm)
            log_stats(
                log,
                stats,
                loss=loss,
                pg_loss=pg,
                value_loss=v_loss,
                entropy=entropy,
                kl=kl,
                grad_norm=grad_norm,
            )
    live = roll.active[..., None].repeat(N, -1)
    return {
        **mean_stats(log),
        "explained_variance": explained_variance(values[live], ret[live]),
        "value_mean": float(values[live].mean()),
        "adv_std": float(adv[live].std()),
    }


def critic_state_size(cfg: PPOConfig) -> int:
    """Size of the global state the value head reads: `env.state()`'s for MAPPO, none
    (0) for IPPO."""
    if not cfg.centralised_critic:
        return 0
    return layout_for(cfg.env).state_size


train = make_train(
    "ppo",
    PPOConfig,
    update,
    critic_state_size=critic_state_size,
    doc="""Train a meta-policy with PPO (IPPO, or MAPPO with ``centralised_critic=True``).

    `policy` (e.g. an SFT policy) is the start; it gets a value head if it has none. `ref`
    is the KL anchor (used when ``beta > 0``; default: the start policy).""",
)
