"""GPTSwarm's edge optimisation (Zhuge et al., "GPTSwarm: Language Agents as Optimizable
Graphs", ICML 2024, arXiv 2402.16823) on the env's communication graph.

A distribution over graphs: every potential edge (agent i reads agent j) is an
independent Bernoulli with probability ``sigmoid(theta_ij)``, initialised at 0.5. Each
training episode samples its own graph; everyone REFINEs on it; the utility is team
correctness, and ``theta`` takes an Adam step on the REINFORCE loss
``-mean((u - b) * log p(graph))`` with ``b`` a moving average of the utility (the
reference code's ``optimize``: Adam, lr 0.1, ``utility - moving_average``). Evaluation
uses the distribution's mode: the edges with probability above 0.5 (``realize(...,
threshold=0.5)``). Deviations from the paper: docs/baselines.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms.topology_methods.common import (
    EdgeDistribution,
    GraphPolicy,
    GraphTrainConfig,
    check_start,
    finish,
    reinforce_edges,
)

__all__ = ["GPTSwarmConfig", "train"]


@dataclass
class GPTSwarmConfig(GraphTrainConfig):
    """GPTSwarm edge optimisation (arXiv 2402.16823, section 4.1)."""

    lr: float = 0.1
    """Adam learning rate of the edge logits (GPTSwarm's ``optimize``: lr=1e-1)."""
    initial_probability: float = 0.5
    """Initial probability of every edge (GPTSwarm's ``EdgeWiseDistribution``: 0.5)."""
    baseline_momentum: float = 0.9
    """Weight of the past in the moving-average baseline of the utility, ``b <- m * b +
    (1 - m) * mean(u)`` (the first update uses its own batch mean, as GPTSwarm's first
    step does). GPTSwarm subtracts its evaluator's moving average; its window is ours to
    choose. 0: the batch mean."""
    threshold: float = 0.5
    """Evaluation keeps the edges whose probability exceeds this (the mode at 0.5)."""
    share_rounds: bool = True
    """One logit per ordered pair, used in every round (a GPTSwarm graph is one set of
    edges); False: one per round (``[T, N, N]``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("initial_probability", "threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"GPTSwarmConfig.{name} must lie strictly between 0 and 1")
        if not 0.0 <= self.baseline_momentum < 1.0:
            raise ValueError("GPTSwarmConfig.baseline_momentum must lie in [0, 1)")


def train(
    cfg: GPTSwarmConfig | None = None,
    policy: Any = None,
    ref: Any = None,
    progress: bool = True,
) -> tuple[GraphPolicy, list[dict[str, Any]]]:
    """Optimise the edge distribution; returns the mode graph's policy and the history."""
    cfg = cfg if cfg is not None else GPTSwarmConfig()
    check_start("gptswarm", policy, ref)
    env = cfg.env
    dist = EdgeDistribution(
        env.num_agents, env.max_rounds, cfg.share_rounds, cfg.initial_probability
    )
    baseline: list[float] = []

    def advantage(utility: np.ndarray, update: int) -> np.ndarray:
        mean = float(utility.mean())
        b = mean if not baseline else baseline[-1]
        baseline.append(mean if not baseline else
                        cfg.baseline_momentum * b + (1 - cfg.baseline_momentum) * mean)  # fmt: skip
        return utility - b

    history, _ = reinforce_edges(cfg, "gptswarm", dist, advantage, progress=progress)
    probs = dist.probs()
    graph = probs > cfg.threshold
    result = GraphPolicy(
        "gptswarm", graph, {"edge_probabilities": probs.tolist(), "edges": int(graph.sum())}
    )
    finish(cfg, result, history)
    return result, history
