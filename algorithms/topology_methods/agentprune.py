"""AgentPrune (Zhang et al., "Cut the Crap: An Economical Communication Pipeline for
LLM-based Multi-Agent Systems", ICLR 2025, arXiv 2410.02506): one-shot pruning of the
spatial-temporal communication graph.

1. A learnable mask over every potential edge of the graph unrolled over the T rounds
   (``[T, N, N]``: agent i reads agent j when it REFINEs in round r), the edge
   probabilities ``S = sigmoid(theta)``, initialised at 0.5.
2. ``updates`` optimisation steps of ``-mean(u * log p(graph)) + low_rank * sum_r
   ||S_r||_*``: graphs sampled from ``S`` on training questions, everyone REFINEs, the
   utility ``u`` is team correctness (the reference code's ``-log_prob * utility``), and
   the nuclear norm is the paper's low-rank relaxation of the mask's sparsity.
3. One-shot pruning: keep the `keep` share of the potential edges with the largest
   ``S`` (or, with `token_budget`, as many top edges as fit the budget of tokens per
   question, from a linear fit of tokens on edges over the training episodes), drop
   the rest, and deliberate on the pruned graph.

Every place where the env forces a deviation: docs/baselines.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from algorithms.topology_methods.common import (
    EdgeDistribution,
    GraphPolicy,
    GraphTrainConfig,
    check_start,
    finish,
    reinforce_edges,
)

__all__ = ["AgentPruneConfig", "prune", "token_fit", "train"]


@dataclass
class AgentPruneConfig(GraphTrainConfig):
    """AgentPrune's graph-mask optimisation and one-shot pruning (arXiv 2410.02506)."""

    lr: float = 0.1
    """Adam learning rate of the mask logits (the reference ``run_gsm8k.py``: 0.1)."""
    initial_probability: float = 0.5
    """Initial probability of every edge (the reference ``Graph``: 0.5)."""
    low_rank: float = 0.01
    """Weight of the low-rank regulariser, the nuclear norm of each round's edge
    probability matrix (the paper's relaxation of rank(S)); 0 turns it off."""
    keep: float = 0.5
    """Share of the potential edges kept by the one-shot pruning (1 - pruning rate);
    rounded to a whole number of edges."""
    token_budget: float | None = None
    """Tokens per question the pruned graph may cost (None: use `keep`): keep the
    top-weighted edges while the estimated tokens (a linear fit of episode tokens on
    edges over the training episodes) stay within it."""
    baseline: Literal["none", "mean"] = "none"
    """What the utility is compared with: "none" (the reference code: ``-log_prob *
    utility``) or "mean" (the batch mean, ours: less variance)."""
    share_rounds: bool = False
    """False: a mask per round, the graph unrolled over time (``[T, N, N]``); True: one
    ``[N, N]`` mask in every round (the reference code's single temporal mask)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.keep <= 1.0:
            raise ValueError(f"AgentPruneConfig.keep must lie in [0, 1], got {self.keep}")
        if not 0.0 < self.initial_probability < 1.0:
            raise ValueError("AgentPruneConfig.initial_probability must lie in (0, 1)")
        if self.token_budget is not None and not self.token_budget > 0:
            raise ValueError(f"AgentPruneConfig.token_budget must be > 0, got {self.token_budget}")


def nuclear_norm(dist: EdgeDistribution) -> torch.Tensor:
    """``sum_r ||S_r||_*`` of the edge probabilities of each round (diagonal 0)."""
    probs = torch.sigmoid(dist.logits) * dist.potential
    return torch.linalg.matrix_norm(probs, ord="nuc").sum()


def token_fit(edges: np.ndarray, tokens: np.ndarray) -> tuple[float, float]:
    """(intercept, tokens per edge) of the least-squares line tokens ~ edges; slope 0
    when every episode had the same number of edges."""
    edges, tokens = np.asarray(edges, float), np.asarray(tokens, float)
    if np.ptp(edges) == 0:
        return float(tokens.mean()), 0.0
    slope, intercept = np.polyfit(edges, tokens, 1)
    return float(intercept), float(slope)


def prune(weights: np.ndarray, potential: np.ndarray, k: int) -> np.ndarray:
    """The `k` potential edges with the largest `weights` (ties: lower flat index first),
    as a bool mask of `weights`' shape."""
    flat = np.where(potential.ravel(), weights.ravel(), -np.inf)
    order = np.argsort(-flat, kind="stable")[: max(0, min(k, int(potential.sum())))]
    kept = np.zeros(flat.shape, bool)
    kept[order] = True
    return kept.reshape(weights.shape)


def train(
    cfg: AgentPruneConfig | None = None,
    policy: Any = None,
    ref: Any = None,
    progress: bool = True,
) -> tuple[GraphPolicy, list[dict[str, Any]]]:
    """Learn the mask, prune it in one shot; returns the pruned graph's policy and the
    history (one record per optimisation step)."""
    cfg = cfg if cfg is not None else AgentPruneConfig()
    check_start("agentprune", policy, ref)
    env = cfg.env
    dist = EdgeDistribution(
        env.num_agents, env.max_rounds, cfg.share_rounds, cfg.initial_probability
    )

    def advantage(utility: np.ndarray, update: int) -> np.ndarray:
        return utility - utility.mean() if cfg.baseline == "mean" else utility

    def penalty(d: EdgeDistribution) -> torch.Tensor:
        return cfg.low_rank * nuclear_norm(d)

    history, seen = reinforce_edges(cfg, "agentprune", dist, advantage, penalty, progress)
    with torch.no_grad():
        weights = (torch.sigmoid(dist.logits) * dist.potential).numpy()
    potential = dist.potential.numpy()
    per_edge_rounds = env.max_rounds if cfg.share_rounds else 1  # a shared pair is T edges
    intercept, per_edge = token_fit(seen["edges"], seen["tokens"])
    total = int(potential.sum())
    if cfg.token_budget is None:
        k = int(round(cfg.keep * total))
    elif per_edge <= 0:
        k = total
    else:
        k = int(np.floor((cfg.token_budget - intercept) / (per_edge * per_edge_rounds)))
    k = max(0, min(total, k))
    graph = dist.full(prune(weights, potential, k))
    kept = int(graph.sum())
    info = {
        "edge_weights": dist.full(weights).tolist(),
        "edges": kept,
        "potential_edges": int(dist.full(potential).sum()),
        "tokens_intercept": intercept,
        "tokens_per_edge": per_edge,
        "estimated_tokens": intercept + per_edge * kept,
        "estimated_tokens_complete": intercept + per_edge * int(dist.full(potential).sum()),
    }
    result = GraphPolicy("agentprune", graph, info)
    finish(cfg, result, history)
    return result, history
