"""Learned methods by name: what `deliberate train` and `deliberate compare` can run.

Adding an algorithm is one module plus one ``register_algorithm(...)`` call: the CLI
builds its options from the config dataclass, and `compare` trains and evaluates it
beside the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from algorithms.policy import Policy

TrainFn = Callable[..., tuple[Policy, list[dict[str, Any]]]]
"""``train(cfg, progress=True) -> (policy, history)``; history records carry
``agent_steps`` and ``team_accuracy`` (the learning curve). The RL methods' train, made by
`algorithms.trainer.make_train`, also takes ``policy``, ``ref`` and ``resume``."""


@dataclass(frozen=True)
class Algorithm:
    name: str
    module: str
    """Module holding the config class and `train` (imported on first use)."""
    config: str
    """Name of the config dataclass in `module`."""
    train: str = "train"
    description: str = ""

    def load(self) -> tuple[type, TrainFn]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config), getattr(mod, self.train)


ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(
    name: str, module: str, config: str, train: str = "train", description: str = ""
) -> None:
    """Register a learned method (see docs/new_algorithm.md)."""
    ALGORITHMS[name] = Algorithm(name, module, config, train, description)


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; registered: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


register_algorithm(
    "softrankpo",
    "algorithms.softrankpo",
    "SoftRankPOConfig",
    description="SoftRankPO (MPDF): rank-based normal-score advantages",
)
register_algorithm(
    "grpo", "algorithms.grpo", "GRPOConfig", description="GRPO with TRL's reward scaling"
)
register_algorithm(
    "ppo",
    "algorithms.ppo",
    "PPOConfig",
    description="PPO (IPPO, or MAPPO with a centralised critic)",
)
register_algorithm(
    "reinforce",
    "algorithms.reinforce",
    "REINFORCEConfig",
    description="REINFORCE with a group-mean baseline",
)
register_algorithm(
    "sft",
    "algorithms.sft",
    "SFTConfig",
    description="behaviour cloning on hindsight labels (MPDF stage 1)",
)
register_algorithm(
    "sb3_ppo",
    "algorithms.sb3",
    "SB3Config",
    train="train_sb3",
    description="Stable-Baselines3 PPO through SuperSuit, shared parameters",
)
register_algorithm(
    "agentprune",
    "algorithms.topology_methods.agentprune",
    "AgentPruneConfig",
    description="AgentPrune: one-shot pruning of a learned spatial-temporal graph",
)
register_algorithm(
    "gptswarm",
    "algorithms.topology_methods.gptswarm",
    "GPTSwarmConfig",
    description="GPTSwarm: Bernoulli edge distribution optimised with REINFORCE",
)
register_algorithm(
    "dylan",
    "algorithms.topology_methods.dylan",
    "DyLANConfig",
    description="DyLAN: agent importance scores, early stop at consensus",
)
