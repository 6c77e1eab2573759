"""Pieces every group policy-gradient method shares, written once: the training config,
the clipped surrogate, the KL to the reference policy, minibatches, one optimiser step,
and the grouped update of SoftRankPO, GRPO and REINFORCE.

Those methods differ in their advantage function (`algorithms.advantages`: a pure
function on group rewards ``[..., G]``) and SoftRankPO, optionally, in its loss. The
training loop is `algorithms.trainer` (`Trainer`, `make_train`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch

from algorithms.advantages import reward_transform
from algorithms.kl import KLAnneal, KLControl, make_kl_controller
from algorithms.policy import MetaPolicy, PolicyConfig, use_generator
from algorithms.rollout import Rollout, distinct_rows
from deliberation_env import EnvConfig, load_tasks
from deliberation_env.config import check_finite, check_int
from deliberation_env.core import layout_for
from deliberation_env.tasks import Task, train_eval_split

RewardTransform = Literal["identity", "x1", "x0.1", "x10", "exp"]
"""`algorithms.advantages.REWARD_TRANSFORMS` by name (`TrainConfig.reward_transform`)."""

AdvantageFn = Callable[[np.ndarray], np.ndarray]
"""Group rewards ``[..., G]`` -> advantages ``[..., G]``."""

TRAIN_TASKS = "arithmetic:2000"
"""The question pool trainers draw from by default (`TrainConfig.env`): larger than the
env's own default (``"arithmetic"``, 1,000 questions) so that the held-out share
(`TrainConfig.eval_fraction`) is big enough to evaluate on."""


def train_env() -> EnvConfig:
    """The env trainers default to: the env's defaults with ``tasks=TRAIN_TASKS``."""
    return EnvConfig(tasks=TRAIN_TASKS)


def check_env(env: object, owner: str) -> EnvConfig:
    """`env` when it is an `EnvConfig`; else a TypeError naming `owner` and the fix."""
    if not isinstance(env, EnvConfig):
        raise TypeError(
            f"{owner}: env must be an EnvConfig, got {type(env).__name__}; pass "
            "env=EnvConfig(num_agents=..., profile=..., ...) or, from a mapping of its "
            "fields, env=EnvConfig.build(mapping)"
        )
    return env


@dataclass
class TrainConfig:
    """Training of a meta-policy with grouped rollouts (fields shared by every method)."""

    env: EnvConfig = field(default_factory=train_env)
    """The deliberation env trained on (`deliberation_env.EnvConfig`; default `train_env()`);
    its questions are split into a training and a held-out share (`eval_fraction`)."""
    eval_fraction: float = 0.25
    """Share of the env's questions held out for evaluation, never trained on."""

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
    ran, else the initial one); with `kl_control` other than "fixed", its start."""
    kl_control: KLControl = "fixed"
    """How beta moves during training (`algorithms.kl`): "fixed", the paper's constant
    trust region; "adaptive", toward `target_kl` (Ziegler et al. 2019, "Fine-Tuning
    Language Models from Human Preferences"; TRL's `AdaptiveKLController`); "anneal",
    decaying to `kl_floor` over `kl_horizon` rollouts (`kl_anneal`)."""
    target_kl: float = 0.1
    """Target of the adaptive controller for the update's mean KL(pi || pi_ref) per agent
    and round: beta *= 1 + clip(kl / target_kl - 1, -0.2, 0.2) * rollouts / kl_horizon
    (Ziegler et al. 2019). Ours, not the paper's: SFT+SoftRankPO at the quick budget
    measures ~0.04 with beta = 0.02 fixed and ~0.2 with beta = 0."""
    kl_horizon: int = 10_000
    """Rollouts (episodes) over which the adaptive controller can move beta by 20% (TRL's
    default horizon, 10,000: slow, beta moves by <= 20% over the quick budget's 10,240
    rollouts; ~2,000 lets it halve), or over which "anneal" reaches `kl_floor`."""
    kl_floor: float = 0.0
    """The beta "anneal" ends at."""
    kl_anneal: KLAnneal = "linear"
    """Shape of "anneal": linear, or exponential (geometric from beta to `kl_floor`; a
    floor of 0 falls back to linear)."""
    entropy_coef: float = 0.0
    """Entropy bonus."""
    max_grad_norm: float = 1.0
    hidden: int = 64
    share_parameters: bool = True
    """One network for all agents with an agent-index embedding (MPDF)."""
    seed: int = 0
    """Seeds the trainer's own torch generator (initial weights, actions, minibatches)
    and the env resets; torch's global generator is never read."""
    torch_threads: int = 1
    """CPU threads for torch. The meta-policy is tiny: with more threads, synchronisation
    costs more than the arithmetic (100x slower on a busy 2-core machine)."""
    reward_transform: RewardTransform = "identity"
    """Strictly increasing transform of the group returns before the advantage function
    (`algorithms.advantages.REWARD_TRANSFORMS`: identity, x0.1, x10, exp): the paper's
    reward-scale experiment. PPO ignores it."""
    eval_every: int = 0
    """Evaluate on held-out questions every k updates, logging ``eval_team_accuracy`` (0:
    never during training; `deliberate compare` and `algorithms.evaluate` evaluate the
    trained policy)."""
    eval_episodes: int = 500
    checkpoint_every: int = 25
    """Save a checkpoint every k updates (when `out` is set)."""
    out: str | None = None
    """Directory for metrics.jsonl, checkpoint.pt and policy.pt."""

    min_group_size: ClassVar[int] = 2
    """The smallest `group_size` the method learns from: its advantages compare the
    rollouts of a group, so one rollout gives zero advantages (PPO, with a value head: 1)."""
    unused_fields: ClassVar[tuple[str, ...]] = ()
    """Fields of `TrainConfig` the method does not read (SFT: the RL fields); they are not
    checked and ``deliberate train`` refuses them."""

    def __post_init__(self) -> None:
        check_env(self.env, type(self).__name__)
        check_train_fields(self, TRAIN_BOUNDS)
        reward_transform(self.reward_transform)  # a clear error for an unknown name
        make_kl_controller(self)  # and for a bad KL setting, at construction
        used = set(self.__dataclass_fields__) - set(self.unused_fields)
        if "group_size" in used and self.group_size < self.min_group_size:
            raise ValueError(
                f"group_size={self.group_size}: {type(self).__name__} needs group_size >= "
                f"{self.min_group_size} (its advantages compare the rollouts of one question; "
                "a group of one gives zero advantages and no learning)"
            )
        split = {"minibatches", "questions_per_update"} <= used
        if split and self.minibatches > self.questions_per_update:
            raise ValueError(
                f"minibatches={self.minibatches} > questions_per_update="
                f"{self.questions_per_update}: minibatches are split by question; pass "
                f"minibatches <= {self.questions_per_update} or more questions per update"
            )
        if {"eval_every", "updates"} <= used and self.eval_every > self.updates:
            raise ValueError(
                f"eval_every={self.eval_every} > updates={self.updates} never evaluates; pass "
                f"eval_every <= {self.updates} (or 0: no evaluation during training)"
            )
        heads = PolicyConfig.heads
        if self.hidden % heads:
            fix = max(heads, round(self.hidden / heads) * heads)
            raise ValueError(
                f"hidden={self.hidden} must be divisible by the policy's {heads} attention "
                f"heads (PolicyConfig.heads); pass hidden={fix}"
            )


TRAIN_BOUNDS: dict[str, tuple[str, float]] = {
    "eval_fraction": ("fraction", 0.0),
    "questions_per_update": ("int", 1),
    "group_size": ("int", 1),
    "updates": ("int", 1),
    "epochs": ("int", 1),
    "minibatches": ("int", 1),
    "lr": (">", 0.0),
    "clip": (">", 0.0),
    "beta": (">=", 0.0),
    "target_kl": (">=", 0.0),
    "kl_floor": (">=", 0.0),
    "entropy_coef": (">=", 0.0),
    "max_grad_norm": (">", 0.0),
    "hidden": ("int", 1),
    "seed": ("int", 0),
    "torch_threads": ("int", 1),
    "eval_every": ("int", 0),
    "eval_episodes": ("int", 1),
    "checkpoint_every": ("int", 1),
}
"""Range of each numeric `TrainConfig` field: ("int", minimum), (">", x), (">=", x) or
("fraction", _) for a share strictly between 0 and 1."""


def check_train_fields(cfg: Any, bounds: dict[str, tuple[str, float]]) -> None:
    """Refuse a field of `cfg` outside its range in `bounds`, naming it and the range;
    fields in ``cfg.unused_fields`` (or absent from `cfg`) are skipped."""
    owner = type(cfg).__name__
    unused = getattr(cfg, "unused_fields", ())
    for name, (kind, bound) in bounds.items():
        if name in unused or not hasattr(cfg, name):
            continue
        value = getattr(cfg, name)
        if kind == "int":
            check_int(f"{owner}.{name}", value, int(bound))
            continue
        check_finite(f"{owner}.{name}", value)
        if kind == "fraction" and not 0.0 < value < 1.0:
            raise ValueError(f"{owner}.{name} must lie strictly between 0 and 1, got {value}")
        if (kind == ">" and not value > bound) or (kind == ">=" and not value >= bound):
            raise ValueError(f"{owner}.{name} must be {kind} {bound:g}, got {value}")


class SplitConfig(Protocol):
    """A config that names an env and the share of its questions held out
    (`TrainConfig`, `algorithms.sb3.SB3Config`)."""

    env: EnvConfig
    eval_fraction: float


def split_tasks(cfg: SplitConfig) -> tuple[list[Task], list[Task]]:
    """(train, held-out) questions of ``cfg.env.tasks`` (a `load_tasks` spec or the tasks
    themselves): the held-out share, ``cfg.eval_fraction``, is never trained on."""
    return train_eval_split(load_tasks(cfg.env.tasks), cfg.eval_fraction, seed=0)


def make_policy(
    cfg: TrainConfig,
    value_head: bool = False,
    critic_state_size: int = 0,
    generator: torch.Generator | None = None,
) -> MetaPolicy:
    """A fresh `MetaPolicy` for `cfg`. Its weights are drawn from `generator` (advancing
    it), or from a generator seeded with ``cfg.seed``; torch's global one is untouched."""
    with use_generator(generator or torch.Generator().manual_seed(cfg.seed)):
        return MetaPolicy(
            PolicyConfig(
                max_peers=cfg.env.max_peers,
                num_agents=cfg.env.num_agents,
                hidden=cfg.hidden,
                share_parameters=cfg.share_parameters,
                value_head=value_head,
                critic_state_size=critic_state_size,
                groups=tuple(layout_for(cfg.env).groups),
            )
        )


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
            "approx_kl": approx_kl(logp, logp_old),
            "clipfrac": float(((ratio - 1).abs() > (clip or math.inf)).float().mean()),
        }
    return loss, stats


def approx_kl(logp: torch.Tensor, logp_old: torch.Tensor) -> float:
    """Estimate of KL(pi_old || pi) from the sampled actions, ``E[(r - 1) - log r]``
    (Schulman's k3 estimator, CleanRL's ``approx_kl``)."""
    with torch.no_grad():
        log_ratio = logp - logp_old
        return float(((log_ratio.exp() - 1) - log_ratio).mean())


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact KL(pi || pi_ref) over the three actions, averaged over rows."""
    logp = logits.log_softmax(-1)
    ref = ref_logits.log_softmax(-1)
    return (logp.exp() * (logp - ref)).sum(-1).mean()


@dataclass
class ActionLogProbs:
    """What a loss reads of ``Categorical(logits)`` at the taken actions, computed once
    from one ``log_softmax`` (cheaper than building the distribution per minibatch)."""

    logp_all: torch.Tensor
    """Log-probabilities of every action ``[..., 3]`` (masked ones near -1e9)."""
    logp: torch.Tensor
    """Log-probability of the taken actions ``[...]``."""

    @classmethod
    def of(cls, logits: torch.Tensor, actions: torch.Tensor) -> ActionLogProbs:
        logp_all = logits.log_softmax(-1)
        return cls(logp_all, logp_all.gather(-1, actions[..., None])[..., 0])

    def entropy(self) -> torch.Tensor:
        """Mean entropy over rows."""
        return -(self.logp_all.exp() * self.logp_all).sum(-1).mean()

    def kl_to(self, ref_logp_all: torch.Tensor) -> torch.Tensor:
        """Exact KL(pi || pi_ref) over the three actions, averaged over rows, given the
        reference's log-probabilities (`kl_to_reference` on precomputed log-softmaxes)."""
        return (self.logp_all.exp() * (self.logp_all - ref_logp_all)).sum(-1).mean()


# ---------------------------------------------------------------------- batches
def grouped_advantages(
    roll: Rollout, advantage_fn: AdvantageFn, transform: str = "identity"
) -> np.ndarray:
    """``advantage_fn(transform(R))`` for each (question, agent) group of returns R
    (`transform` a `REWARD_TRANSFORMS` name); ``[B, N]``."""
    fn = reward_transform(transform)
    R = roll.by_group(roll.returns)  # [Q, G, N]
    adv = advantage_fn(fn(np.moveaxis(R, 1, -1)))  # over the group axis
    return np.moveaxis(adv, -1, 1).reshape(roll.returns.shape)


@dataclass
class FlatBatch:
    """A rollout's rows ``[T * B, N, ...]`` as tensors."""

    obs: torch.Tensor
    masks: torch.Tensor
    actions: torch.Tensor
    logp_old: torch.Tensor

    @classmethod
    def of(cls, roll: Rollout) -> FlatBatch:
        T, B, N, D = roll.obs.shape
        return cls(
            obs=torch.as_tensor(roll.obs.reshape(T * B, N, D)),
            masks=torch.as_tensor(roll.masks.reshape(T * B, N, 3)),
            actions=torch.as_tensor(roll.actions.reshape(T * B, N)),
            logp_old=torch.as_tensor(roll.logp.reshape(T * B, N)),
        )

    def logits(self, policy: MetaPolicy) -> torch.Tensor:
        """`policy`'s logits on every row, without gradient (the reference's, once per
        update)."""
        with torch.no_grad():
            return policy(self.obs, self.masks)


@dataclass
class DistinctRows:
    """The distinct (observations, mask) rows of a batch, so that the network runs once
    per distinct row. The G rollouts of a group start from the same solutions: their first
    round is one row G times over, and rollouts that acted alike stay alike (~30% of the
    rows of a default SoftRankPO batch repeat). A row's logits do not depend on the other
    rows, so the logits of the distinct rows, indexed back, are those of every row, and
    their gradients sum over the repeats."""

    obs: torch.Tensor
    """``[U, N, D]``: the first occurrence of each distinct row."""
    masks: torch.Tensor
    """``[U, N, 3]``."""
    index: torch.Tensor
    """``[R]``: the distinct row of each row."""

    @classmethod
    def of(cls, obs: torch.Tensor, masks: torch.Tensor) -> DistinctRows:
        first_np, index = distinct_rows(obs.numpy(), masks.numpy())
        first = torch.as_tensor(first_np)
        return cls(obs[first], masks[first], torch.as_tensor(index))

    def logits(self, policy: MetaPolicy, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``policy(obs[rows], masks[rows])`` (all rows when None), the network run on the
        distinct ones only."""
        index = self.index if rows is None else self.index[rows]
        distinct, inverse = torch.unique(index, return_inverse=True)
        return policy(self.obs[distinct], self.masks[distinct])[inverse]

    def reference_logits(self, ref: MetaPolicy) -> torch.Tensor:
        """`ref`'s logits on every row, without gradient (once per update)."""
        with torch.no_grad():
            return self.logits(ref)


def rows_of(roll: Rollout, questions: np.ndarray) -> np.ndarray:
    """Flat (t, b) indices of the active rounds of the given questions."""
    envs = (questions[:, None] * roll.group_size + np.arange(roll.group_size)).ravel()
    T, B = roll.active.shape
    sel = np.zeros(B, bool)
    sel[envs] = True
    return np.flatnonzero((roll.active & sel[None, :]).ravel())


def question_minibatches(
    roll: Rollout, epochs: int, minibatches: int, generator: torch.Generator | None = None
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """``(questions, rows)`` of each minibatch: `epochs` passes over the questions in an
    order drawn from `generator` (None: torch's global one), split into `minibatches`
    parts, so groups stay whole; rows are the flat indices of their active rounds."""
    Q = roll.active.shape[1] // roll.group_size
    for _ in range(epochs):
        order = torch.randperm(Q, generator=generator).numpy()
        for questions in np.array_split(order, min(minibatches, Q)):
            yield questions, torch.as_tensor(rows_of(roll, questions))


# ---------------------------------------------------------------------- update
def policy_gradient_update(
    policy: MetaPolicy,
    ref: MetaPolicy,
    optimizer: torch.optim.Optimizer,
    roll: Rollout,
    advantages: np.ndarray,
    cfg: TrainConfig,
    clip: float | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Epochs of minibatch steps on the clipped surrogate plus ``beta * KL`` minus the
    entropy bonus; every round of agent i in rollout g gets ``advantages[g, i]`` ([B, N]).
    Minibatches are drawn from `generator` (the trainer's)."""
    T, B, N = roll.actions.shape
    batch = FlatBatch.of(roll)
    distinct = DistinctRows.of(batch.obs, batch.masks)
    ref_logp = distinct.reference_logits(ref).log_softmax(-1)
    # Every round of an episode gets its advantage (a copy: torch refuses a read-only view).
    adv = torch.as_tensor(advantages, dtype=torch.float32).expand(T, B, N).reshape(T * B, N)
    log: dict[str, list[float]] = {}
    for _, idx in question_minibatches(roll, cfg.epochs, cfg.minibatches, generator):
        lp = ActionLogProbs.of(distinct.logits(policy, idx), batch.actions[idx])
        pg, stats = clipped_surrogate(lp.logp, batch.logp_old[idx], adv[idx], clip)
        kl = lp.kl_to(ref_logp[idx])
        entropy = lp.entropy()
        loss = pg + cfg.beta * kl - cfg.entropy_coef * entropy
        grad_norm = optimise(policy, optimizer, loss, cfg.max_grad_norm)
        log_stats(log, stats, loss=loss, pg_loss=pg, kl=kl, entropy=entropy, grad_norm=grad_norm)
    return mean_stats(log)


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
    for part in parts:
        for k, v in part.items():
            log.setdefault(k, []).append(float(v))
    for k, t in tensors.items():
        log.setdefault(k, []).append(t.item())


def mean_stats(log: dict[str, list[float]]) -> dict[str, float]:
    """The mean of each diagnostic over an update's minibatch steps."""
    return {k: float(np.mean(v)) for k, v in log.items()}
