"""``info_mode="numeric"``: fixed-shape numeric infos, one key set at reset, every step and
the last step, the same episode as the default infos describe (for tensor pipelines such as
TorchRL and BenchMARL)."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test

import deliberation_env
from deliberation_env.env import NUMERIC_INFO_KEYS
from deliberation_env.registration import parallel_env_v0


def play(env, seed: int, rng: np.random.Generator, actions_log: list | None = None):
    """Infos of reset and every step of one episode (random allowed actions)."""
    obs, infos = env.reset(seed=seed)
    seen = [infos]
    step = 0
    while env.agents:
        if actions_log is not None and step < len(actions_log):
            actions = actions_log[step]
        else:
            actions = {a: int(rng.integers(2)) for a in env.agents}  # PERSIST / REFINE
            if actions_log is not None:
                actions_log.append(actions)
        obs, rewards, terms, truncs, infos = env.step(actions)
        seen.append((rewards, infos))
        step += 1
    return seen


@pytest.mark.parametrize(
    "kwargs", [{}, {"reward": "terminal"}, {"stop_on_consensus": True, "num_agents": 4}]
)
def test_same_keys_shapes_and_dtypes_at_every_step(kwargs):
    env = deliberation_env.parallel_env(info_mode="numeric", **kwargs)
    rng = np.random.default_rng(0)
    layouts = set()
    for seed in range(5):
        first, *steps = play(env, seed, rng)
        for infos in [first, *(i for _, i in steps)]:
            assert set(infos) == set(env.possible_agents)
            for info in infos.values():
                for value in info.values():
                    assert isinstance(value, np.ndarray), value
                    assert value.dtype.kind in "biuf"
                layouts.add(tuple((k, v.shape, v.dtype.str) for k, v in info.items()))
        assert bool(steps[-1][1]["agent_0"]["final"])
        assert not any(bool(i["agent_0"]["final"]) for _, i in steps[:-1])
        assert not bool(first["agent_0"]["final"])
    assert len(layouts) == 1
    keys = [k for k, _, _ in layouts.pop()]
    terms = (
        ["terminal", "token_cost"]
        if kwargs.get("reward") == "terminal"
        else ["local", "global", "token_cost"]
    )
    documented = [k for k, _, _ in NUMERIC_INFO_KEYS if k != "reward_{term}"]
    assert set(keys) == set(documented) | {f"reward_{t}" for t in terms}


def test_dict_observations_keep_the_mask_out_of_the_infos():
    env = deliberation_env.parallel_env(info_mode="numeric", obs_mode="dict")
    obs, infos = env.reset(seed=1)
    assert "action_mask" in obs["agent_0"] and "action_mask" not in infos["agent_0"]
    flat = deliberation_env.parallel_env(info_mode="numeric")
    assert "action_mask" in flat.reset(seed=1)[1]["agent_0"]


def test_numeric_infos_describe_the_same_episode_as_the_default_ones():
    py_env = deliberation_env.parallel_env()
    num_env = deliberation_env.parallel_env(info_mode="numeric")
    for seed in range(8):
        log: list = []
        py = play(py_env, seed, np.random.default_rng(seed), log)
        num = play(num_env, seed, np.random.default_rng(seed), log)
        py_infos = [py[0], *(i for _, i in py[1:])]
        num_infos = [num[0], *(i for _, i in num[1:])]
        for (r_py, _), (r_num, _) in zip(py[1:], num[1:]):
            assert r_py == r_num  # same dynamics, bit for bit
        for p, n in zip(py_infos, num_infos):
            texts = {}
            for agent in py_env.possible_agents:
                pi, ni = p[agent], n[agent]
                np.testing.assert_array_equal(pi["action_mask"], ni["action_mask"])
                assert pi["correct"] == bool(ni["correct"]) and pi["tokens"] == int(ni["tokens"])
                assert np.float32(pi["self_confidence"]) == ni["self_confidence"]
                assert (pi["answer"] is None) == (int(ni["answer"]) == -1)
                texts.setdefault(int(ni["answer"]), set()).add(pi["answer"])
                for name, value in pi.get("reward_terms", {}).items():
                    assert np.float32(value) == ni[f"reward_{name}"]
            assert all(len(t) == 1 for t in texts.values())  # one id, one answer text
        last_py, last_num = py_infos[-1]["agent_0"], num_infos[-1]["agent_0"]
        assert last_py["team_correct"] == bool(last_num["team_correct"])
        assert last_py["total_tokens"] == int(last_num["total_tokens"])
        assert list(last_py["actions"].values()) == last_num["actions"].tolist()
        team = int(last_num["team_answer"])
        assert (last_py["team_answer"] is None) == (team == -1)
        if team >= 0:
            holders = [a for a in py_env.possible_agents if int(num_infos[-1][a]["answer"]) == team]
            assert {py_infos[-1][a]["answer"] for a in holders} == {last_py["team_answer"]}


def test_passes_the_pettingzoo_api_tests():
    parallel_api_test(deliberation_env.parallel_env(info_mode="numeric"), num_cycles=20)
    api_test(deliberation_env.env(info_mode="numeric", obs_mode="dict"), num_cycles=20)


def test_render_still_shows_text_answers():
    env = deliberation_env.parallel_env(info_mode="numeric", render_mode="ansi")
    play(env, 0, np.random.default_rng(0))
    text = env.render()
    assert text.startswith("Question") and "Team answer:" in text


def test_info_mode_is_a_view_option():
    env = deliberation_env.parallel_env(info_mode="numeric")
    assert env.config == deliberation_env.EnvConfig()
    assert parallel_env_v0(info_mode="numeric").info_mode == "numeric"
    with pytest.raises(ValueError, match="info_mode='tensor' is not one of"):
        deliberation_env.parallel_env(info_mode="tensor")
