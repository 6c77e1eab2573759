"""RLlib: `RLlibMaskedEnv` (RLlib's masking keys) and PPO with a shared masked policy
(`examples/rllib_ppo_masked.py`). The RLlib part skips without ``ray[rllib]``
(`.ci/integrations` runs it in ``.venv-rllib``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

import deliberation_env
from deliberation_env.integrations.rllib import RLlibMaskedEnv

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_masked_env_renames_the_observation_key_and_keeps_the_episode():
    env, plain = (
        RLlibMaskedEnv(profile="toy"),
        deliberation_env.parallel_env(profile="toy", obs_mode="dict"),
    )
    obs, _ = env.reset(seed=3)
    ref, _ = plain.reset(seed=3)
    space = env.observation_space("agent_0")
    assert set(space.spaces) == {"observations", "action_mask"}
    for agent in env.possible_agents:
        assert space.contains(obs[agent])
        np.testing.assert_array_equal(obs[agent]["observations"], ref[agent]["observation"])
        np.testing.assert_array_equal(obs[agent]["action_mask"], ref[agent]["action_mask"])
    with pytest.raises(ValueError, match="no such agent"):
        env.observation_space("agent_9")
    with pytest.raises(ValueError, match="obs_mode='dict'"):
        RLlibMaskedEnv(deliberation_env.parallel_env())
    assert env.render() is None or True  # render(mode) is forwarded (RLlib calls it)


def test_masked_env_passes_the_pettingzoo_parallel_api_test():
    parallel_api_test(RLlibMaskedEnv(), num_cycles=20)


def test_rllib_ppo_trains_a_shared_masked_policy():
    pytest.importorskip("tree", reason="ray[rllib] (dm-tree) is not installed")
    pytest.importorskip("ray.rllib.algorithms.ppo")
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import rllib_ppo_masked
    finally:
        sys.path.remove(str(EXAMPLES))
    algo = rllib_ppo_masked.build(batch_size=120)
    try:
        module = algo.get_module("shared")
        before = [p.detach().clone() for p in module.parameters()]
        result = algo.train()
        assert np.isfinite(result["env_runners"]["episode_return_mean"])
        after = list(module.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after))
        # The masking module turns a forbidden CONCEDE into a -inf-like logit.
        obs = {
            "observations": torch.rand(4, 81),
            "action_mask": torch.tensor([[1, 1, 0]] * 4, dtype=torch.int8),
        }
        out = module.forward_inference({"obs": obs})
        logits = out["action_dist_inputs"]
        assert (logits[:, 2] < -1e30).all() and (logits[:, :2] > -1e30).all()
    finally:
        algo.stop()
