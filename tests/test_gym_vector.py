"""`VectorDeliberationEnv` as a `gymnasium.vector.VectorEnv`: the contract (spaces,
metadata, render, close) and Gymnasium's own checks where they apply to a vector env whose
sub-environments are multi-agent (`data_equivalence` for determinism and copies)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from deliberation_env import VectorDeliberationEnv

B = 4


def random_actions(vec: VectorDeliberationEnv, infos: dict, rng: np.random.Generator):
    scores = rng.random(infos["action_mask"].shape) * infos["action_mask"]
    return scores.argmax(-1)


def test_is_a_gymnasium_vector_env_with_batched_spaces():
    vec = VectorDeliberationEnv(B, num_agents=3)
    assert isinstance(vec, VectorEnv)
    assert vec.unwrapped is vec and vec.num_envs == B
    # Single spaces are one agent's; the batched ones add the env and agent axes.
    assert vec.observation_space == batch_space(batch_space(vec.single_observation_space, 3), B)
    assert vec.action_space == spaces.MultiDiscrete(np.full((B, 3), 3))
    assert vec.single_action_space == spaces.Discrete(3)
    obs, infos = vec.reset(seed=0)
    assert vec.observation_space.contains(obs)
    vec.action_space.seed(0)
    for _ in range(7):  # through an autoreset
        obs, rewards, terminated, truncated, infos = vec.step(vec.action_space.sample())
        assert vec.observation_space.contains(obs)
        assert rewards.shape == (B, 3) and rewards.dtype == np.float32
        assert terminated.shape == truncated.shape == (B,) and terminated.dtype == bool
    if "final_obs" in infos:
        assert vec.observation_space.contains(infos["final_obs"])


def test_metadata_holds_the_autoreset_mode_enum():
    assert VectorDeliberationEnv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert VectorDeliberationEnv(2).metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    frozen = VectorDeliberationEnv(2, autoreset=False)
    assert frozen.metadata["autoreset_mode"] is AutoresetMode.DISABLED
    assert VectorDeliberationEnv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP


def test_reset_and_step_are_deterministic_and_return_fresh_arrays():
    # Gymnasium's check_reset_seed_determinism / check_step_determinism /
    # check_returned_data_not_reused, written for a vector env.
    a, b = VectorDeliberationEnv(B), VectorDeliberationEnv(B)
    obs_a, info_a = a.reset(seed=123)
    obs_b, info_b = b.reset(seed=123)
    assert data_equivalence(obs_a, obs_b, exact=True) and data_equivalence(info_a, info_b)
    rng = np.random.default_rng(0)
    for _ in range(6):
        actions = random_actions(a, info_a, rng)
        out_a, out_b = a.step(actions), b.step(actions.copy())
        assert all(data_equivalence(x, y, exact=True) for x, y in zip(out_a, out_b))
        assert out_a[0] is not obs_a  # a new observation array every step
        obs_a, info_a = out_a[0], out_a[4]
    reset_again = a.reset(seed=123)[0]
    assert data_equivalence(reset_again, b.reset(seed=123)[0], exact=True)


def test_render_ansi_and_none():
    vec = VectorDeliberationEnv(2, render_mode="ansi")
    vec.reset(seed=0)
    lines = vec.render()
    assert isinstance(lines, tuple) and len(lines) == 2
    assert lines[0].startswith("env 0 [") and "agent_2:" in lines[0]
    with pytest.warns(UserWarning, match="without a render_mode"):
        assert VectorDeliberationEnv(2).render() is None
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        VectorDeliberationEnv(2, render_mode="rgb_array")


def test_close_closes_the_backend_once():
    vec = VectorDeliberationEnv(2)
    calls = []
    vec.core.backend.close = lambda: calls.append(1)  # type: ignore[method-assign]
    vec.close()
    vec.close()
    assert vec.closed and calls == [1]


def test_an_env_whose_constructor_raised_is_collected_quietly() -> None:
    """Gymnasium's `VectorEnv.__del__` closes an env whose `__init__` raised before it built
    its core (a bad config): closing must not raise then."""
    env = VectorDeliberationEnv.__new__(VectorDeliberationEnv)
    env.close_extras()  # no core and no backend yet: nothing to close
