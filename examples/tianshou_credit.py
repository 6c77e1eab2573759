"""Tianshou: rewards credited per agent through its stock `PettingZooEnv` and through
`TianshouDeliberationEnv`, beside the true returns, over random masked episodes collected
by Tianshou's own `Collector` and multi-agent policy.

    .venv/bin/python examples/tianshou_credit.py --episodes 200
"""

from __future__ import annotations

import argparse

import numpy as np
from tianshou.algorithm.multiagent.marl import MultiAgentPolicy
from tianshou.algorithm.random import MARLRandomDiscreteMaskedOffPolicyAlgorithm
from tianshou.data import Collector, VectorReplayBuffer
from tianshou.env import DummyVectorEnv, PettingZooEnv

import deliberation_env
from deliberation_env.integrations.tianshou import TianshouDeliberationEnv


class Recorded:
    """Adds the AEC env's own per-step rewards (the true returns) up beside the credit."""

    true = np.zeros(3)

    def step(self, action):
        settling = bool(getattr(self, "_settling", None))  # the fixed env's extra turns
        out = super().step(action)  # type: ignore[misc]
        if not settling:
            for agent, reward in self.env.rewards.items():  # type: ignore[attr-defined]
                Recorded.true[self.agent_idx[agent]] += reward  # type: ignore[attr-defined]
        return out


class Stock(Recorded, PettingZooEnv):
    def __init__(self) -> None:
        super().__init__(deliberation_env.env(obs_mode="dict"))


class Fixed(Recorded, TianshouDeliberationEnv):
    pass


def credited(make, episodes: int) -> np.ndarray:
    """Each agent's summed reward over its own transitions in the replay buffer."""
    env = make()
    random = MARLRandomDiscreteMaskedOffPolicyAlgorithm.Policy
    policy = MultiAgentPolicy({a: random(env.action_space) for a in env.agents})
    buffer = VectorReplayBuffer(50 * episodes, 1)
    Collector(policy, DummyVectorEnv([make]), buffer).collect(
        n_episode=episodes, reset_before_collect=True
    )
    batch = buffer.sample(0)[0]
    ids = batch.obs.agent_id  # type: ignore[union-attr]
    return np.array([batch.rew[ids == a][:, i].sum() for i, a in enumerate(env.agents)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=200)
    args = p.parse_args()
    for name, make in (("stock PettingZooEnv", Stock), ("TianshouDeliberationEnv", Fixed)):
        np.random.seed(0)  # noqa: NPY002 (Tianshou's random policy draws from the global RNG)
        Recorded.true[:] = 0.0
        got = credited(make, args.episodes)
        print(
            f"{name:<24} credited {got.round(2).tolist()}, true {Recorded.true.round(2).tolist()}"
        )


if __name__ == "__main__":
    main()
