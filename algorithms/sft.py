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

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from algorithms.common import TrainConfig, make_policy, optimise, split_tasks
from algorithms.policy import MetaPolicy
from deliberation_env import VectorDeliberationEnv
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


def train(
    cfg: SFTConfig | None = None, progress: bool = True
) -> tuple[MetaPolicy, list[dict[str, Any]]]:
    """Fit a fresh meta-policy to hindsight labels; history has one record per epoch."""
    cfg = cfg or SFTConfig()
    torch.set_num_threads(cfg.torch_threads)
    train_tasks, _ = split_tasks(cfg)
    data = collect_dataset(cfg, train_tasks, seed=cfg.seed)
    policy = make_policy(cfg)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    obs, masks, labels = (torch.as_tensor(x) for x in (data.obs, data.masks, data.labels))
    weight = torch.as_tensor(data.informative if cfg.skip_ties else np.ones_like(data.informative))
    weight = weight.float()
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for epoch in tqdm(range(cfg.epochs), desc="sft", disable=not progress, leave=False):
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
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "label_accuracy": float(np.mean(hits)),
                "label_shares": data.label_shares(informative_only=cfg.skip_ties),
                "states": len(obs),
                "informative_share": float(data.informative.mean()),
            }
        )
    if cfg.out:
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
