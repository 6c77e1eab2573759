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

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from algorithms.common import (
    TrainConfig,
    Trainer,
    clipped_surrogate,
    kl_to_reference,
    log_stats,
    make_policy,
    optimise,
)
from algorithms.policy import MetaPolicy
from algorithms.rollout import Rollout
from deliberation_env.observation import ObservationLayout


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

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must lie in [0, 1], got {self.gae_lambda}")
        if self.vf_coef < 0:
            raise ValueError(f"vf_coef must be >= 0, got {self.vf_coef}")


def gae(
    rewards: Any, values: Any, active: Any, gamma: float = 1.0, lam: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016) per agent, over rounds.

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
    live = live[..., None].astype(np.float64)
    adv = np.zeros_like(r)
    last = np.zeros_like(r[0])
    for t in reversed(range(len(r))):
        if t + 1 < len(r):
            next_live, next_value = live[t + 1], v[t + 1]
        else:
            next_live, next_value = 0.0, 0.0
        delta = r[t] + gamma * next_live * next_value - v[t]
        last = delta + gamma * lam * next_live * last
        adv[t] = last
    adv *= live
    return adv.astype(np.float32), ((adv + v) * live).astype(np.float32)


def explained_variance(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """``1 - Var(y_true - y_pred) / Var(y_true)``: 1 is a perfect critic, 0 a constant one,
    NaN when the targets do not vary."""
    var = np.var(y_true)
    return float("nan") if var == 0 else float(1 - np.var(y_true - y_pred) / var)


def update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    cfg: PPOConfig,
) -> dict[str, float]:
    """One PPO update: values and GAE on the batch, then `epochs` passes of `minibatches`
    steps over the active (round, env) rows."""
    T, B, N, D = roll.obs.shape
    obs = torch.as_tensor(roll.obs.reshape(T * B, N, D))
    masks = torch.as_tensor(roll.masks.reshape(T * B, N, 3))
    states = torch.as_tensor(roll.states.reshape(T * B, -1)) if cfg.centralised_critic else None
    actions = torch.as_tensor(roll.actions.reshape(T * B, N))
    logp_old = torch.as_tensor(roll.logp.reshape(T * B, N))
    with torch.no_grad():
        values = policy.value(obs, states).reshape(T, B, N).numpy()
        ref_logits = ref(obs, masks) if cfg.beta else None
    adv, ret = gae(roll.rewards, values, roll.active, cfg.gamma, cfg.gae_lambda)
    advantages = torch.as_tensor(adv.reshape(T * B, N))
    returns = torch.as_tensor(ret.reshape(T * B, N))
    values_old = torch.as_tensor(values.reshape(T * B, N))
    rows = np.flatnonzero(roll.active.ravel())  # finished envs' frozen rounds are not data

    log: dict[str, list[float]] = {}
    for _ in range(cfg.epochs):
        # torch's generator: seeded by `make_policy`, saved in checkpoints, new each update.
        order = torch.as_tensor(rows)[torch.randperm(len(rows))]
        for idx in order.tensor_split(min(cfg.minibatches, len(rows))):
            logits = policy(obs[idx], masks[idx])
            dist = torch.distributions.Categorical(logits=logits)
            a = advantages[idx]
            if cfg.norm_adv and a.numel() > 1:
                a = (a - a.mean()) / (a.std() + 1e-8)
            pg, stats = clipped_surrogate(dist.log_prob(actions[idx]), logp_old[idx], a, cfg.clip)

            v = policy.value(obs[idx], None if states is None else states[idx])
            v_loss = (v - returns[idx]) ** 2
            if cfg.clip_vloss:
                v_clipped = values_old[idx] + (v - values_old[idx]).clamp(-cfg.clip, cfg.clip)
                v_loss = torch.max(v_loss, (v_clipped - returns[idx]) ** 2)
            v_loss = 0.5 * v_loss.mean()

            entropy = dist.entropy().mean()
            kl = kl_to_reference(logits, ref_logits[idx]) if cfg.beta else torch.zeros(())
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
        **{k: float(np.mean(v)) for k, v in log.items()},
        "explained_variance": explained_variance(values[live], ret[live]),
        "value_mean": float(values[live].mean()),
        "adv_std": float(adv[live].std()),
    }


def with_value_head(policy: MetaPolicy, critic_state_size: int = 0) -> MetaPolicy:
    """`policy` itself if it has the value head PPO needs, else a copy with a fresh one
    (an SFT policy keeps its actor weights)."""
    c = policy.config
    if c.value_head and c.critic_state_size == critic_state_size:
        return policy
    out = MetaPolicy(replace(c, value_head=True, critic_state_size=critic_state_size))
    actor = {k: v for k, v in policy.state_dict().items() if ".value." not in k}
    missing, unexpected = out.load_state_dict(actor, strict=False)
    if unexpected or any(".value." not in k for k in missing):
        raise ValueError(f"cannot add a value head to {policy!r}: mismatched weights")
    return out


def train(
    cfg: PPOConfig | None = None,
    policy: MetaPolicy | None = None,
    ref: MetaPolicy | None = None,
    resume: bool = False,
    progress: bool = True,
) -> tuple[MetaPolicy, list[dict[str, Any]]]:
    """Train a meta-policy with PPO (IPPO, or MAPPO with ``centralised_critic=True``).

    `policy` (e.g. an SFT policy) is the start; it gets a value head if it has none. `ref`
    is the KL anchor (used when ``beta > 0``; default: the start policy)."""
    cfg = cfg or PPOConfig()
    state_size = (
        ObservationLayout(cfg.env_kwargs.get("max_peers", 4)).state_size
        if cfg.centralised_critic
        else 0
    )
    if policy is None:
        policy = make_policy(cfg, value_head=True, critic_state_size=state_size)
    else:
        torch.manual_seed(cfg.seed)
        policy = with_value_head(policy, state_size)
    trainer = Trainer("ppo", cfg, update, policy, ref, progress)
    if resume:
        trainer.resume()
    return trainer.run()
