"""Stage 1 of MPDF's pipeline: supervised fine-tuning (behaviour cloning) of the
meta-policy on hindsight labels, and the two-stage pipeline (SFT, then RL with the KL
trust region anchored at the SFT policy).

Labels (docs/design_decisions.md#the-algorithms-choices, our reading of the paper): states are recorded while a
behaviour protocol (uniform random by default, so every situation appears) plays; for
each state and agent the label is the action with the best counterfactual reward that
round, the peers' actions held fixed (`deliberation_env.counterfactual`): exact for
PERSIST and CONCEDE, and for every outcome that involves a REFINE the mean over
`SFTConfig.refine_samples` REFINE draws, so the label is the action of best *expected*
return (one draw undervalues REFINE). Exact ties go to the cheapest action.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from algorithms.checkpoint import (
    RUNTIME_FIELDS,
    append_metrics,
    resume_checkpoint,
    saved_on_interrupt,
    unfinished,
    write_checkpoint,
    write_metrics,
)
from algorithms.common import TrainConfig, make_policy, optimise, split_tasks
from algorithms.policy import MetaPolicy
from algorithms.tracking import Tracker, log_row, start_run
from deliberation_env import VectorDeliberationEnv
from deliberation_env.config import check_int
from deliberation_env.counterfactual import hindsight_targets


@dataclass
class SFTConfig(TrainConfig):
    """Behaviour cloning on hindsight labels (fields of `TrainConfig` plus these)."""

    episodes: int = 4096
    """Deliberations recorded for the dataset (each gives T rounds x N agent states)."""
    behaviour: str = "random"
    """Protocol that plays while states are recorded (`algorithms.heuristics`)."""
    epochs: int = 15
    """Passes over the dataset."""
    batch_size: int = 512
    """Rounds (x N agents) per gradient step."""
    lr: float = 1e-3
    refine_samples: int = 8
    """K, REFINE outcomes averaged per counterfactual that involves a REFINE (the env's own
    draw and K - 1 more, `deliberation_env.counterfactual.refine_sample_keys`): labels
    pick the action of best expected reward. 1 is the single-draw labelling of earlier
    versions. 8, measured at the quick budget (2,048 episodes, seed 0): on `toy` the SFT
    policy's team accuracy goes 75.9% (K=1) -> ~82% (K=8) -> ~84% (K=32), on the default
    profile 91.1% -> 91.3%; labelling costs ~K single draws (1.3 s at K=8, 7.6 s at 32)."""
    skip_ties: bool = True
    """Leave out of the loss the agent-states where every allowed action earns the same
    reward: their label is only the tie-break (PERSIST), and they are most states (all
    agents already right), so keeping them teaches "always PERSIST"."""

    unused_fields: ClassVar[tuple[str, ...]] = (
        "questions_per_update", "group_size", "updates", "minibatches", "clip", "beta",
        "kl_control", "target_kl", "kl_horizon", "kl_floor", "kl_anneal", "entropy_coef",
        "reward_transform", "eval_every", "eval_episodes", "checkpoint_every",
    )  # fmt: skip
    """The RL fields of `TrainConfig` SFT does not read (its length: `epochs`, `episodes`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("episodes", "epochs", "batch_size", "refine_samples"):
            check_int(f"SFTConfig.{name}", getattr(self, name), 1)
        from algorithms.heuristics import PROTOCOLS

        if self.behaviour != "random" and self.behaviour not in PROTOCOLS:
            raise ValueError(
                f"SFTConfig.behaviour={self.behaviour!r} is not a protocol; valid: "
                f"{sorted({'random', *PROTOCOLS})}"
            )


@dataclass
class Dataset:
    obs: np.ndarray  # float32 [M, N, D]
    masks: np.ndarray  # int8 [M, N, 3]
    labels: np.ndarray  # int64 [M, N]
    informative: np.ndarray  # bool [M, N]: some action earns more than another

    def label_shares(self, informative_only: bool = False) -> dict[str, float]:
        labels = self.labels[self.informative] if informative_only else self.labels.ravel()
        counts = np.bincount(labels, minlength=3) / max(labels.size, 1)
        return dict(zip(("persist", "refine", "concede"), counts.round(4).tolist()))


def collect_dataset(cfg: SFTConfig, tasks: list, seed: int) -> Dataset:
    """Record states under the behaviour protocol with their hindsight labels."""
    from algorithms.heuristics import make_protocol

    behaviour = (
        make_protocol(cfg.behaviour)
        if cfg.behaviour != "random"
        else make_protocol("random", seed=seed)
    )
    env = VectorDeliberationEnv(
        cfg.episodes, config=replace(cfg.env, tasks=tuple(tasks)), autoreset=False
    )
    obs, info = env.reset(seed=seed)
    active = np.ones(env.num_envs, bool)
    parts: list[tuple[np.ndarray, ...]] = []
    while active.any():
        mask = info["action_mask"]
        actions = behaviour.act(obs, mask)
        labels, informative = hindsight_targets(env, actions, active, cfg.refine_samples)
        parts.append((obs[active], mask[active], labels[active], informative[active]))
        obs, _, _, _, info = env.step(actions)
        active = info["active"]
    return Dataset(*(np.concatenate(c) for c in zip(*parts)))


SFT_RUNTIME_FIELDS = RUNTIME_FIELDS | {"epochs"}
"""Fields a resumed SFT run may change: ``epochs`` (its length) and the runtime ones of
`algorithms.checkpoint.RUNTIME_FIELDS` (and, as for every config, its `unused_fields`)."""


def train(
    cfg: SFTConfig | None = None,
    progress: bool = True,
    resume: bool = False,
    tracker: Tracker | None = None,
) -> tuple[MetaPolicy, list[dict[str, Any]]]:
    """Fit a fresh meta-policy to hindsight labels; history has one record per epoch.

    With ``cfg.out``: one row per epoch in ``metrics.jsonl``, a checkpoint every
    ``cfg.checkpoint_every`` epochs, at the end and on Ctrl-C or SIGTERM (the last whole
    epoch), and ``policy.pt``. `resume` continues from the checkpoint: the dataset is
    recorded again (it is a function of ``cfg.seed``; with an LLM backend the response
    cache replays it), then the policy, optimizer and minibatch generator are restored, so
    the result is bit-identical to a run never stopped. `tracker` (`algorithms.tracking`)
    also gets the config and every row."""
    cfg = cfg or SFTConfig()
    torch.set_num_threads(cfg.torch_threads)
    payload = resume_checkpoint(cfg.out, "sft", cfg, SFT_RUNTIME_FIELDS) if resume else None
    train_tasks, _ = split_tasks(cfg)
    data = collect_dataset(cfg, train_tasks, seed=cfg.seed)
    policy = make_policy(cfg)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    obs, masks, labels = (torch.as_tensor(x) for x in (data.obs, data.masks, data.labels))
    weight = torch.as_tensor(data.informative if cfg.skip_ties else np.ones_like(data.informative))
    weight = weight.float()
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, Any]] = []
    if payload is not None:
        policy.load_state_dict(payload["policy"])
        optimizer.load_state_dict(payload["optimizer"])
        gen.set_state(payload["generator"])
        history = list(payload["history"])
    config = asdict(cfg) if cfg.out else {}

    def snapshot() -> dict[str, Any]:
        return {
            "algo": "sft",
            "config": config,
            "update": len(history),
            "total": cfg.epochs,
            "policy": copy.deepcopy(policy.state_dict()),
            "policy_config": asdict(policy.config),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "history": list(history),
            "generator": gen.get_state(),
        }

    boundary = snapshot() if cfg.out else {}  # what Ctrl-C saves: the last whole epoch

    def save() -> Path | None:
        return write_checkpoint(cfg.out, boundary) if cfg.out else None

    if cfg.out:
        if payload is None and (warning := unfinished(cfg.out)):
            warnings.warn(warning, stacklevel=2)
        write_metrics(cfg.out, history)
    start_run(tracker, "sft", cfg)
    epochs = range(len(history), cfg.epochs)
    with saved_on_interrupt(save):
        for epoch in tqdm(epochs, desc="sft", disable=not progress, leave=False):
            losses, hits = [], []
            for idx in torch.randperm(len(obs), generator=gen).split(cfg.batch_size):
                w = weight[idx]
                if w.sum() == 0:
                    continue
                logits = policy(obs[idx], masks[idx])
                per = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, 3), labels[idx].ravel(), reduction="none"
                )
                loss = (per * w.ravel()).sum() / w.sum()
                optimise(policy, optimizer, loss, cfg.max_grad_norm)
                losses.append(loss.item())
                hit = (logits.argmax(-1) == labels[idx]).float()
                hits.append(((hit * w).sum() / w.sum()).item())
            record = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "label_accuracy": float(np.mean(hits)),
                "label_shares": data.label_shares(informative_only=cfg.skip_ties),
                "states": len(obs),
                "informative_share": float(data.informative.mean()),
            }
            history.append(record)
            log_row(tracker, record, epoch)
            if cfg.out:
                boundary = snapshot()
                append_metrics(cfg.out, record)
                if (epoch + 1) % cfg.checkpoint_every == 0:
                    save()
    if cfg.out:
        save()
        policy.save(f"{cfg.out}/policy.pt", algo="sft", history=history)
    return policy, history


def two_stage(
    sft_cfg: SFTConfig,
    rl_train: Callable[..., tuple[MetaPolicy, list[dict[str, Any]]]],
    rl_cfg: TrainConfig,
    progress: bool = True,
) -> tuple[MetaPolicy, MetaPolicy, list[dict[str, Any]]]:
    """MPDF's pipeline: SFT, then RL (`rl_train`, e.g. `softrankpo.train`) starting from
    the SFT policy with its KL term anchored at the SFT policy. Returns (sft policy, RL
    policy, RL history)."""
    sft_policy, _ = train(sft_cfg, progress=progress)
    start = MetaPolicy(sft_policy.config)
    start.load_state_dict(sft_policy.state_dict())
    rl_policy, history = rl_train(rl_cfg, policy=start, ref=sft_policy, progress=progress)
    return sft_policy, rl_policy, history
