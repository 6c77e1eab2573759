"""What the topology baselines share: their config fields, the policy they train to
("everyone REFINEs" on a communication graph), edge bookkeeping, and the all-REFINE
rollout that scores sampled graphs on training questions.

A graph is a bool array ``[T, N, N]``: ``graph[r, i, j]`` means agent i reads agent j's
solution when it REFINEs in round r (`deliberation_env.topology`); the diagonal is
ignored. The potential edges are the off-diagonal entries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from algorithms.checkpoint import write_metrics
from algorithms.common import check_env, check_train_fields, split_tasks, train_env
from deliberation_env import EnvConfig, VectorDeliberationEnv
from deliberation_env.actions import Action

__all__ = [
    "EdgeDistribution",
    "GraphPolicy",
    "GraphTrainConfig",
    "all_refine",
    "finish",
    "off_diagonal",
    "play",
    "reinforce_edges",
    "training_env",
]

REFINE, CONCEDE, PERSIST = int(Action.REFINE), int(Action.CONCEDE), int(Action.PERSIST)


@dataclass
class GraphTrainConfig:
    """Training of a topology baseline on the training share of the env's questions.

    Sized by the same `experiments.budgets.Budget` fields as the group RL methods: each
    update plays ``questions_per_update x group_size`` episodes (G rollouts per question,
    sharing their initial answers), so every method sees the same questions and episodes.
    """

    env: EnvConfig = field(default_factory=train_env)
    """The deliberation env trained on (`deliberation_env.EnvConfig`); its questions are
    split into a training and a held-out share (`eval_fraction`)."""
    eval_fraction: float = 0.25
    """Share of the env's questions held out for evaluation, never trained on."""
    questions_per_update: int = 64
    """Questions per update."""
    group_size: int = 8
    """Rollouts per question (each with its own sampled graph)."""
    updates: int = 100
    """Number of updates (optimisation steps of the graph parameters)."""
    seed: int = 0
    """Seeds the graph sampling and the env resets (``seed * 1_000_003 + update``, as the
    RL trainers do)."""
    out: str | None = None
    """Directory for metrics.jsonl and policy.json (the learned graph)."""

    def __post_init__(self) -> None:
        check_env(self.env, type(self).__name__)
        check_train_fields(self, BOUNDS)


BOUNDS: dict[str, tuple[str, float]] = {
    "eval_fraction": ("fraction", 0.0),
    "questions_per_update": ("int", 1),
    "group_size": ("int", 1),
    "updates": ("int", 1),
    "seed": ("int", 0),
    "lr": (">", 0.0),
    "low_rank": (">=", 0.0),
    "drop": ("int", 0),
    "select_round": ("int", 0),
}
"""Ranges of the numeric fields (`algorithms.common.check_train_fields`)."""


def off_diagonal(num_agents: int, rounds: int) -> np.ndarray:
    """``[T, N, N]`` bool: the potential edges (every ordered pair of distinct agents)."""
    eye = np.eye(num_agents, dtype=bool)
    return np.broadcast_to(~eye, (rounds, num_agents, num_agents)).copy()


def all_refine(action_mask: np.ndarray) -> np.ndarray:
    """REFINE for every agent (PERSIST where the mask forbids it)."""
    mask = np.asarray(action_mask)
    return np.where(mask[..., REFINE] > 0, REFINE, PERSIST).astype(np.int64)


class GraphPolicy:
    """Everyone REFINEs every round, reading only its in-neighbours in `graph`.

    The graph reaches the env through `bind`, which `algorithms.evaluate.evaluate` calls
    after every reset (``env.set_topology``, one ``[T, N, N]`` graph for every env), so
    `deliberate compare`, `deliberate reproduce` and the bench suite run it like any
    protocol; the env config keeps its own topology (its observation layout unchanged).
    ``env_overrides`` are further `EnvConfig` fields (DyLAN: ``stop_on_consensus``).
    """

    def __init__(
        self,
        name: str,
        graph: np.ndarray,
        info: Mapping[str, Any] | None = None,
        extra_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.graph = np.asarray(graph, bool)
        """``[T, N, N]`` bool, diagonal False."""
        self.info: dict[str, Any] = dict(info or {})
        """What training found (edge weights, estimated tokens, ...), JSON-able."""
        self.extra_overrides = dict(extra_overrides or {})

    @property
    def env_overrides(self) -> dict[str, Any]:
        return dict(self.extra_overrides)

    def bind(self, env: VectorDeliberationEnv) -> None:
        """Put the graph into `env` (every env, every round) for the episodes just reset."""
        env.set_topology(np.broadcast_to(self.graph, (env.num_envs, *self.graph.shape)))

    @property
    def edges(self) -> int:
        """Number of kept edges (over all rounds)."""
        return int(self.graph.sum())

    def act(
        self, obs: np.ndarray, action_mask: np.ndarray, deterministic: bool = True
    ) -> np.ndarray:
        return all_refine(action_mask)

    def save(self, path: str | Path) -> None:
        """Write the graph and the training summary as JSON."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        payload = {"algo": self.name, "graph": self.graph.astype(int).tolist(), **self.info,
                   "env_overrides": self.env_overrides}  # fmt: skip
        Path(path).write_text(json.dumps(payload, indent=1, default=float))

    def __repr__(self) -> str:
        return f"GraphPolicy(name={self.name!r}, edges={self.edges})"


def training_env(cfg: Any, num_envs: int, **overrides: Any) -> VectorDeliberationEnv:
    """The vector env on the training share of ``cfg.env``'s questions (the RL trainers'
    split), with config fields `overrides`."""
    train_tasks, _ = split_tasks(cfg)
    config = EnvConfig.build(cfg.env, tasks=tuple(train_tasks), **overrides)
    return VectorDeliberationEnv(num_envs, config=config, autoreset=False)


def play(
    env: VectorDeliberationEnv, seed: int, group_size: int, graphs: np.ndarray
) -> dict[str, np.ndarray]:
    """One all-REFINE episode per env on `graphs` (``[B, T, N, N]``): ``team_correct``
    [B] (float), ``tokens`` [B], ``agent_steps`` (agent-rounds played, an int)."""
    obs, infos = env.reset(seed=seed, options={"group_size": group_size})
    env.set_topology(graphs)
    active = np.ones(env.num_envs, bool)
    while active.any():
        obs, _, _, _, infos = env.step(all_refine(infos["action_mask"]))
        active = infos["active"]
    return {
        "team_correct": np.asarray(infos["team_correct"], float),
        "tokens": np.asarray(infos["episode_tokens"], float),
        "agent_steps": np.asarray(int(np.sum(infos["rounds"]) * env.num_agents)),
    }


def finish(cfg: Any, policy: GraphPolicy, history: list[dict[str, Any]]) -> None:
    """Write ``metrics.jsonl`` and ``policy.json`` under ``cfg.out`` (when set)."""
    if cfg.out:
        write_metrics(cfg.out, history)
        policy.save(Path(cfg.out) / "policy.json")


def check_start(name: str, policy: Any, ref: Any) -> None:
    """The topology baselines learn a graph, not a meta-policy network: refuse a start or
    reference policy (``sft+agentprune`` is not a method)."""
    if policy is not None or ref is not None:
        raise ValueError(
            f"{name} learns a communication graph, not a meta-policy network: it takes no "
            "start or reference policy (use the row name without 'sft+')"
        )


class EdgeDistribution:
    """Independent Bernoulli edges: ``P(edge) = sigmoid(logit)``, one logit per potential
    edge of every round (``[T, N, N]``), or one per ordered pair shared by all rounds
    (`share_rounds`: ``[1, N, N]``, broadcast to the T rounds). GPTSwarm's
    ``EdgeWiseDistribution`` and AgentPrune's edge logits, on the env's graph."""

    def __init__(
        self, num_agents: int, rounds: int, share_rounds: bool, initial_probability: float = 0.5
    ) -> None:
        self.rounds = rounds
        depth = 1 if share_rounds else rounds
        init = float(np.log(initial_probability / (1 - initial_probability)))
        self.logits = torch.nn.Parameter(torch.full((depth, num_agents, num_agents), init))
        self.potential = torch.as_tensor(off_diagonal(num_agents, depth))

    def probs(self) -> np.ndarray:
        """``[T, N, N]`` edge probabilities (0 on the diagonal)."""
        with torch.no_grad():
            p = torch.sigmoid(self.logits) * self.potential
        return self.full(p.numpy())

    def full(self, per_depth: np.ndarray) -> np.ndarray:
        """A ``[depth, N, N]`` array as the ``[T, N, N]`` one (copied when rounds share)."""
        return np.broadcast_to(per_depth, (self.rounds, *per_depth.shape[1:])).copy()

    def sample(self, n: int, generator: torch.Generator) -> tuple[np.ndarray, torch.Tensor]:
        """`n` graphs ``[n, T, N, N]`` (bool) and their log-probabilities ``[n]``."""
        logits = self.logits.expand(n, *self.logits.shape)
        u = torch.rand(logits.shape, generator=generator)
        edges = (u < torch.sigmoid(logits).detach()) & self.potential
        log_p = torch.where(edges, F.logsigmoid(logits), F.logsigmoid(-logits))
        log_prob = torch.where(self.potential, log_p, 0.0).sum(dim=(1, 2, 3))
        graphs = np.broadcast_to(edges.numpy()[:, :1] if self.logits.shape[0] == 1 else
                                 edges.numpy(), (n, self.rounds, *edges.shape[2:]))  # fmt: skip
        return graphs.copy(), log_prob


Advantage = Callable[[np.ndarray, int], np.ndarray]
"""``(utilities [B], update index) -> weights [B]``: what multiplies each episode's
log-probability in the REINFORCE loss."""
Penalty = Callable[[EdgeDistribution], torch.Tensor]
"""A regulariser of the edge distribution added to the loss (AgentPrune: low rank)."""


def reinforce_edges(
    cfg: Any,
    name: str,
    dist: EdgeDistribution,
    advantage: Advantage,
    penalty: Penalty | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Optimise `dist` with REINFORCE on team correctness: every update samples one graph
    per episode (``questions_per_update x group_size`` episodes, G rollouts per
    question), plays them all-REFINE on training questions, and takes one Adam step
    (``cfg.lr``) on ``-mean(advantage(u) * log p(graph)) + penalty(dist)``.

    Returns the history (one record per update) and the samples ``edges`` / ``tokens``
    of every episode played (for token estimates)."""
    B = cfg.questions_per_update * cfg.group_size
    env = training_env(cfg, B)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.Adam([dist.logits], lr=cfg.lr)
    history: list[dict[str, Any]] = []
    edges_seen, tokens_seen = [], []
    try:
        for u in tqdm(range(cfg.updates), desc=name, disable=not progress, leave=False):
            graphs, log_prob = dist.sample(B, generator)
            played = play(env, cfg.seed * 1_000_003 + u, cfg.group_size, graphs)
            utility = played["team_correct"]
            weights = torch.as_tensor(advantage(utility, u), dtype=torch.float32)
            loss = -(weights * log_prob).mean()
            reg = penalty(dist) if penalty is not None else torch.zeros(())
            optimizer.zero_grad()
            (loss + reg).backward()
            optimizer.step()
            edges_seen.append(graphs.sum(axis=(1, 2, 3)))
            tokens_seen.append(played["tokens"])
            history.append({
                "update": u + 1,
                "agent_steps": int(played["agent_steps"]),
                "team_accuracy": float(utility.mean()),
                "tokens_per_question": float(played["tokens"].mean()),
                "edges_sampled": float(edges_seen[-1].mean()),
                "expected_edges": float(dist.probs().sum()),
                "loss": float(loss.detach()),
                "penalty": float(reg.detach()),
            })  # fmt: skip
    finally:
        env.close()
    return history, {"edges": np.concatenate(edges_seen), "tokens": np.concatenate(tokens_seen)}
