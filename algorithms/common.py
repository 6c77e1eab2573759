"""Pieces every group policy-gradient method shares, written once: the training config,
the clipped surrogate, the KL to the reference policy, the update, and the training loop.

SoftRankPO, GRPO and REINFORCE differ only in their advantage function (a pure function
on group rewards ``[..., G]``) and, for SoftRankPO, an optional rank-matching loss.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from algorithms.policy import MetaPolicy, PolicyConfig
from algorithms.rollout import Rollout, collect
from deliberation_env import VectorDeliberationEnv, load_tasks

AdvantageFn = Callable[[np.ndarray], np.ndarray]
"""Group rewards ``[..., G]`` -> advantages ``[..., G]``."""


@dataclass
class EnvSetup:
    """The deliberation env a method trains on (fields shared by every training config)."""

    profile: str = "llama3.1-8b/gsm8k"
    """Simulated backend profile (DESIGN section 5)."""
    tasks: str = "arithmetic:2000"
    """Task source; a held-out share is kept for evaluation (`eval_fraction`)."""
    eval_fraction: float = 0.25
    """Share of the tasks held out for evaluation, never trained on."""
    num_agents: int = 3
    """N (paper: 3)."""
    max_rounds: int = 3
    """T (paper: 3)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Other `EnvConfig` fields (reward, token_cost, ...)."""

    def env(self, tasks: list, num_envs: int) -> VectorDeliberationEnv:
        return VectorDeliberationEnv(num_envs, autoreset=False, tasks=tasks, **self.env_config())

    def env_config(self) -> dict[str, Any]:
        return {
            "num_agents": self.num_agents,
            "max_rounds": self.max_rounds,
            "profile": self.profile,
            **self.env_kwargs,
        }


@dataclass
class TrainConfig(EnvSetup):
    """Training of a meta-policy with grouped rollouts (fields shared by every method)."""

    questions_per_update: int = 64
    """Q, questions per update."""
    group_size: int = 8
    """G, rollouts per question (the group)."""
    updates: int = 100
    """Number of policy updates."""
    epochs: int = 4
    """Passes over each batch."""
    minibatches: int = 4
    """Minibatches per epoch (split by question, so groups stay whole)."""
    lr: float = 3e-4
    """Adam learning rate."""
    clip: float = 0.2
    """PPO-style ratio clipping of the surrogate (Schulman et al. 2017)."""
    beta: float = 0.02
    """Weight of KL(pi || pi_ref) to the reference policy (the SFT policy when stage 1
    ran, else the initial one)."""
    entropy_coef: float = 0.0
    """Entropy bonus."""
    max_grad_norm: float = 1.0
    hidden: int = 64
    share_parameters: bool = True
    """One network for all agents with an agent-index embedding (MPDF)."""
    seed: int = 0
    torch_threads: int = 1
    """CPU threads for torch. The meta-policy is tiny: with more threads, synchronisation
    costs more than the arithmetic (100x slower on a busy 2-core machine)."""
    eval_every: int = 0
    """Evaluate on held-out questions every k updates (0: only at the end)."""
    eval_episodes: int = 500
    checkpoint_every: int = 25
    """Save a checkpoint every k updates (when `out` is set)."""
    out: str | None = None
    """Directory for metrics.jsonl, checkpoint.pt and policy.pt."""


def split_tasks(cfg: EnvSetup) -> tuple[list, list]:
    from algorithms.evaluate import train_eval_split

    return train_eval_split(load_tasks(cfg.tasks), cfg.eval_fraction, seed=0)


# ---------------------------------------------------------------------- losses
def clipped_surrogate(
    logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip: float | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate (to minimise), with approx_kl and clipfrac diagnostics.
    ``clip=None`` gives the plain policy gradient ``-logp * adv`` (REINFORCE)."""
    log_ratio = logp - logp_old
    ratio = log_ratio.exp()
    if clip is None:
        loss = -(logp * adv).mean()
    else:
        loss = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
    with torch.no_grad():
        stats = {
            "approx_kl": float(((ratio - 1) - log_ratio).mean()),
            "clipfrac": float(((ratio - 1).abs() > (clip or math.inf)).float().mean()),
        }
    return loss, stats


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact KL(pi || pi_ref) over the three actions, averaged over rows."""
    logp = logits.log_softmax(-1)
    ref = ref_logits.log_softmax(-1)
    return (logp.exp() * (logp - ref)).sum(-1).mean()


# ---------------------------------------------------------------------- update
def rows_of(roll: Rollout, questions: np.ndarray) -> np.ndarray:
    """Flat (t, b) indices of the active rounds of the given questions."""
    envs = (questions[:, None] * roll.group_size + np.arange(roll.group_size)).ravel()
    T, B = roll.active.shape
    sel = np.zeros(B, bool)
    sel[envs] = True
    return np.flatnonzero((roll.active & sel[None, :]).ravel())


def policy_gradient_update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    advantages: np.ndarray,
    cfg: TrainConfig,
    clip: float | None = None,
    extra_loss: Callable[[torch.Tensor, Rollout, np.ndarray], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Epochs of minibatch steps on the clipped surrogate plus ``beta * KL``.

    Every round of agent i in rollout g gets the advantage ``advantages[g, i]`` ([B, N]).
    `extra_loss(logits, roll, questions)` replaces the surrogate when given
    (SoftRankPO's rank matching).
    """
    T, B, N, D = roll.obs.shape
    obs = torch.as_tensor(roll.obs.reshape(T * B, N, D))
    masks = torch.as_tensor(roll.masks.reshape(T * B, N, 3))
    actions = torch.as_tensor(roll.actions.reshape(T * B, N))
    logp_old = torch.as_tensor(roll.logp.reshape(T * B, N))
    adv = torch.as_tensor(
        np.broadcast_to(advantages, (T, B, N)).reshape(T * B, N).copy(), dtype=torch.float32
    )
    with torch.no_grad():
        ref_logits = ref(obs, masks)
    Q = B // roll.group_size
    log: dict[str, list[float]] = {}
    for _ in range(cfg.epochs):
        # torch's global generator: seeded by make_policy and saved in checkpoints.
        order = torch.randperm(Q).numpy()
        for questions in np.array_split(order, min(cfg.minibatches, Q)):
            idx = torch.as_tensor(rows_of(roll, questions))
            logits = policy(obs[idx], masks[idx])
            dist = torch.distributions.Categorical(logits=logits)
            if extra_loss is None:
                pg, stats = clipped_surrogate(
                    dist.log_prob(actions[idx]), logp_old[idx], adv[idx], clip
                )
            else:
                pg, stats = extra_loss(logits, roll, questions), {}
            kl = kl_to_reference(logits, ref_logits[idx])
            entropy = dist.entropy().mean()
            loss = pg + cfg.beta * kl - cfg.entropy_coef * entropy
            grad_norm = optimise(policy, optimizer, loss, cfg.max_grad_norm)
            log_stats(
                log, stats, loss=loss, pg_loss=pg, kl=kl, entropy=entropy, grad_norm=grad_norm
            )
    return {k: float(np.mean(v)) for k, v in log.items()}


def optimise(
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    max_grad_norm: float,
) -> torch.Tensor:
    """One gradient step with the gradient norm clipped; returns the norm before clipping."""
    optimizer.zero_grad()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
    optimizer.step()
    return grad_norm


def log_stats(
    log: dict[str, list[float]], *parts: dict[str, float], **tensors: torch.Tensor
) -> None:
    """Append diagnostics (floats, or scalar tensors) to per-name lists."""
    for part in (*parts, tensors):
        for k, v in part.items():
            log.setdefault(k, []).append(v.item() if isinstance(v, torch.Tensor) else float(v))


# ---------------------------------------------------------------------- training loop
def rollout_stats(roll: Rollout) -> dict[str, float]:
    counts = roll.action_counts.sum(0)
    shares = counts / max(counts.sum(), 1)
    return {
        "team_accuracy": float(roll.team_correct.mean()),
        "mean_return": float(roll.returns.mean()),
        "tokens_per_question": float(roll.tokens.mean()),
        "persist_share": float(shares[0]),
        "refine_share": float(shares[1]),
        "concede_share": float(shares[2]),
    }


def grouped_advantages(roll: Rollout, advantage_fn: AdvantageFn) -> np.ndarray:
    """Apply `advantage_fn` to each (question, agent) group of returns; ``[B, N]``."""
    R = roll.by_group(roll.returns)  # [Q, G, N]
    adv = advantage_fn(np.moveaxis(R, 1, -1))  # over the group axis
    return np.moveaxis(adv, -1, 1).reshape(roll.returns.shape)


def make_policy(
    cfg: TrainConfig, value_head: bool = False, critic_state_size: int = 0
) -> MetaPolicy:
    torch.manual_seed(cfg.seed)
    return MetaPolicy(
        PolicyConfig(
            max_peers=cfg.env_kwargs.get("max_peers", 4),
            num_agents=cfg.num_agents,
            hidden=cfg.hidden,
            share_parameters=cfg.share_parameters,
            value_head=value_head,
            critic_state_size=critic_state_size,
        )
    )


class Trainer:
    """The loop every group method runs: collect grouped rollouts, compute advantages,
    update, log, evaluate, checkpoint. Interrupting it (Ctrl-C) saves a checkpoint first."""

    def __init__(
        self,
        name: str,
        cfg: TrainConfig,
        update: Callable[..., dict[str, float]],
        policy: MetaPolicy | None = None,
        ref: MetaPolicy | None = None,
        progress: bool = True,
    ) -> None:
        self.name, self.cfg, self.update = name, cfg, update
        torch.set_num_threads(cfg.torch_threads)
        self.train_tasks, self.eval_tasks = split_tasks(cfg)
        self.env = cfg.env(self.train_tasks, cfg.questions_per_update * cfg.group_size)
        if policy is None:
            policy = make_policy(cfg)  # seeds torch
        else:
            torch.manual_seed(cfg.seed)  # sampling stays reproducible from a given start
        self.policy = policy
        self.ref = copy.deepcopy(ref if ref is not None else self.policy).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
        self.history: list[dict[str, Any]] = []
        self.start = 0
        self.progress = progress
        self.out = Path(cfg.out) if cfg.out else None

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "algo": self.name,
            "config": asdict(self.cfg),
            "update": len(self.history),
            "policy": self.policy.state_dict(),
            "policy_config": asdict(self.policy.config),
            "ref": self.ref.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.out / "checkpoint.pt.tmp"
        torch.save(payload, tmp)
        tmp.replace(self.out / "checkpoint.pt")  # atomic: a kill never leaves half a file

    def resume(self) -> bool:
        """Load ``out/checkpoint.pt`` if there is one; returns whether it did."""
        path = self.out / "checkpoint.pt" if self.out else None
        if path is None or not path.exists():
            return False
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if payload["algo"] != self.name:
            raise ValueError(
                f"{path} is a {payload['algo']} checkpoint, not {self.name}: pick another --out"
            )
        self.policy.load_state_dict(payload["policy"])
        self.ref.load_state_dict(payload["ref"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.history = payload["history"]
        self.start = payload["update"]
        torch.set_rng_state(payload["torch_rng"])
        # Rows logged after the checkpoint will be produced again: keep the log in step.
        with open(self.out / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.history)
        return True

    # -------------------------------------------------------------- loop
    def evaluate(self) -> float:
        from algorithms.evaluate import evaluate

        runs = evaluate(
            self.policy,
            self.cfg.env_config(),
            self.eval_tasks,
            seeds=(10_000 + self.cfg.seed,),
            episodes=self.cfg.eval_episodes,
        )
        return float(runs[0]["team_accuracy"])

    def run(self) -> tuple[MetaPolicy, list[dict[str, Any]]]:
        cfg = self.cfg
        bar = tqdm(
            range(self.start, cfg.updates), desc=self.name, disable=not self.progress, leave=False
        )
        try:
            for u in bar:
                t0 = time.perf_counter()
                roll = collect(
                    self.env, self.policy, seed=cfg.seed * 1_000_003 + u, group_size=cfg.group_size
                )
                stats = self.update(self.policy, self.ref, self.optimizer, roll, cfg)
                record = {
                    "update": u + 1,
                    "agent_steps": roll.agent_steps,
                    **rollout_stats(roll),
                    **stats,
                }
                if cfg.eval_every and (u + 1) % cfg.eval_every == 0:
                    record["eval_team_accuracy"] = self.evaluate()
                record["seconds"] = time.perf_counter() - t0
                self.history.append(record)
                bar.set_postfix(
                    acc=f"{record['team_accuracy']:.3f}", persist=f"{record['persist_share']:.2f}"
                )
                if self.out is not None:
                    self.out.mkdir(parents=True, exist_ok=True)
                    with open(self.out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    if (u + 1) % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        if self.out is not None:
            self.save_checkpoint()
            self.policy.save(self.out / "policy.pt", algo=self.name, train_config=asdict(cfg))
        return self.policy, self.history
