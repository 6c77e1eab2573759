"""Tianshou: its `PettingZooEnv` credits a round's rewards to the round's last agent only;
`TianshouDeliberationEnv` credits each agent its own, summing to the true returns over 200
episodes collected by Tianshou's own `Collector` (slow: `.ci/integrations` runs them).
Skips without tianshou."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tianshou")
from tianshou.algorithm.multiagent.marl import MultiAgentPolicy  # noqa: E402
from tianshou.algorithm.random import MARLRandomDiscreteMaskedOffPolicyAlgorithm  # noqa: E402
from tianshou.data import Collector, VectorReplayBuffer  # noqa: E402
from tianshou.env import DummyVectorEnv, PettingZooEnv  # noqa: E402

import deliberation_env  # noqa: E402
from deliberation_env.integrations.tianshou import TianshouDeliberationEnv  # noqa: E402

EPISODES = 200


class TrueReturns:
    """Adds up the AEC env's own per-step rewards (the true returns) beside the credit."""

    returns = np.zeros(3)

    def step(self, action):
        settling = bool(getattr(self, "_settling", None))
        out = super().step(action)  # type: ignore[misc]
        if not settling:
            for agent, reward in self.env.rewards.items():
                type(self).returns[self.agent_idx[agent]] += reward
        return out


class StockEnv(TrueReturns, PettingZooEnv):
    returns = np.zeros(3)

    def __init__(self):
        super().__init__(deliberation_env.env(obs_mode="dict"))


class FixedEnv(TrueReturns, TianshouDeliberationEnv):
    returns = np.zeros(3)


def credited(make) -> tuple[np.ndarray, np.ndarray]:
    """Per-agent reward sums as Tianshou's multi-agent policy sees them, and the truth."""
    env = make()
    make.returns[:] = 0.0
    policy = MultiAgentPolicy(
        {a: MARLRandomDiscreteMaskedOffPolicyAlgorithm.Policy(env.action_space) for a in env.agents}
    )
    buffer = VectorReplayBuffer(20_000, 1)
    collector = Collector(policy, DummyVectorEnv([make]), buffer)
    collector.reset()
    np.random.seed(0)  # noqa: NPY002 (Tianshou's random policy draws from the global RNG)
    stats = collector.collect(n_episode=EPISODES, reset_before_collect=True)
    assert stats.n_collected_episodes == EPISODES
    batch = buffer.sample(0)[0]
    ids = batch.obs.agent_id
    got = np.array([batch.rew[ids == a][:, i].sum() for i, a in enumerate(env.agents)])
    return got, make.returns.copy()


@pytest.mark.slow
def test_stock_wrapper_loses_every_reward_but_the_last_agents():
    got, true = credited(StockEnv)
    assert got[-1] == pytest.approx(true[-1])
    assert got[0] == got[1] == 0.0 and np.abs(true[:2]).sum() > 0


@pytest.mark.slow
def test_fixed_wrapper_credits_every_agent_its_true_return():
    got, true = credited(FixedEnv)
    assert np.abs(true).sum() > 0
    np.testing.assert_allclose(got, true)


def test_fixed_wrapper_episode_shape():
    env = TianshouDeliberationEnv(max_rounds=2)
    obs, _ = env.reset(seed=0)
    turns, done = [], False
    while not done:
        turns.append((obs["agent_id"], obs["mask"]))
        obs, rew, done, trunc, _ = env.step(0)
        assert len(rew) == 3 and not trunc
    # 2 rounds x 3 agents, then one settling turn each (only PERSIST allowed).
    assert [a for a, _ in turns] == ["agent_0", "agent_1", "agent_2"] * 3
    assert all(mask == [True, False, False] for _, mask in turns[-3:])
