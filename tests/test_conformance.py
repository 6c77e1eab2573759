"""PettingZoo/Gymnasium conformance: the shipped suite on every variant, the registry ids,
the AEC twin, pickling, spaces and the documented shapes."""

from __future__ import annotations

import functools
import importlib
import pickle
import re

import numpy as np
import pettingzoo
import pytest
from gymnasium.utils.env_checker import data_equivalence
from scripted_backend import TASKS, R, Say, ScriptedBackend, X

import deliberation_env
from deliberation_env.observation import ObservationLayout
from deliberation_env.registration import ENV_ID_V0, env_v0, parallel_env_v0
from deliberation_env.testing import VARIANTS, check_env

needs_registry = pytest.mark.skipif(
    not hasattr(pettingzoo, "make"), reason="pettingzoo < 1.27 has no registry"
)


def random_actions(env, infos, rng):
    return {a: int(rng.choice(np.flatnonzero(infos[a]["action_mask"]))) for a in env.agents}


@pytest.mark.parametrize("kwargs", list(VARIANTS.values()), ids=list(VARIANTS))
def test_check_env(kwargs):
    check_env(functools.partial(deliberation_env.parallel_env, **kwargs))


def test_check_env_v0():
    check_env(parallel_env_v0)


@needs_registry
@pytest.mark.parametrize("env_id", [deliberation_env.ENV_ID, ENV_ID_V0])
def test_registry_parallel_env_plays_an_episode(env_id):
    env = pettingzoo.make("parallel", env_id, num_agents=2, max_rounds=2)
    assert isinstance(env, deliberation_env.DeliberationEnv)
    assert env.possible_agents == ["agent_0", "agent_1"]
    _, infos = env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps = 0
    while env.agents:
        *_, infos = env.step(random_actions(env, infos, rng))
        steps += 1
    assert steps == 2


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda **kw: pettingzoo.make("aec", deliberation_env.ENV_ID, **kw),
            id="registry",
            marks=needs_registry,
        ),
        pytest.param(
            lambda **kw: pettingzoo.make("aec", ENV_ID_V0, **kw),
            id="registry-v0",
            marks=needs_registry,
        ),
        pytest.param(deliberation_env.env, id="env"),
        pytest.param(deliberation_env.raw_env, id="raw_env"),
        pytest.param(env_v0, id="env_v0"),
    ],
)
def test_aec_env_plays_a_full_episode(make):
    env = make(num_agents=3, max_rounds=3)
    assert isinstance(env, pettingzoo.AECEnv)
    env.reset(seed=1)
    rng = np.random.default_rng(1)
    acted, returns = 0, dict.fromkeys(env.possible_agents, 0.0)
    for agent in env.agent_iter():
        obs, reward, termination, truncation, info = env.last()
        returns[agent] += reward
        assert env.observation_space(agent).contains(obs)
        if termination or truncation:
            action = None
        else:
            action = int(rng.choice(np.flatnonzero(info["action_mask"])))
            acted += 1
        env.step(action)
    assert acted == 3 * 3  # every agent acts once in each of the 3 rounds
    assert env.agents == []
    assert all(np.isfinite(list(returns.values())))


def _episode(env, seed: int = 4) -> list:
    _, infos = env.reset(seed=seed)
    rng, out = np.random.default_rng(seed), []
    while env.agents:
        obs, rewards, *_, infos = env.step(random_actions(env, infos, rng))
        out.append((obs, rewards))
    return out


@needs_registry
def test_the_ids_are_the_versions():
    """v1 is the default; v0 pins every simulator profile to its @v0 twin, so its episodes
    are those of the @v0 profile; `toy` is the same in both."""
    v1 = pettingzoo.make("parallel", deliberation_env.ENV_ID)
    v0 = pettingzoo.make("parallel", ENV_ID_V0, render_mode="ansi")
    assert deliberation_env.ENV_ID == "deliberation/Deliberation-v1"
    assert v1.backend.profile.refine_model == "v1" and v1.config.profile == "llama3.1-8b/gsm8k"
    assert v0.config.profile == v0.backend.profile.name == "llama3.1-8b/gsm8k@v0"
    assert v0.render_mode == "ansi" and v0.backend.profile.refine_model == "v0"
    pinned = deliberation_env.parallel_env(profile="llama3.1-8b/gsm8k@v0")
    data_equivalence(_episode(v0), _episode(pinned))
    assert pettingzoo.make("parallel", ENV_ID_V0, profile="qwen2.5-7b/math").config.profile == (
        "qwen2.5-7b/math@v0"
    )
    toy = [
        pettingzoo.make("parallel", i, profile="toy") for i in (ENV_ID_V0, deliberation_env.ENV_ID)
    ]
    assert toy[0].backend.profile is toy[1].backend.profile
    data_equivalence(_episode(toy[0]), _episode(toy[1]))
    twin = pickle.loads(pickle.dumps(v0))
    assert twin.config == v0.config


def test_pickle_mid_episode_continues_identically():
    env = deliberation_env.parallel_env(render_mode="ansi")
    _, infos = env.reset(seed=3)
    rng = np.random.default_rng(3)
    env.step(random_actions(env, infos, rng))
    twin = pickle.loads(pickle.dumps(env))
    assert twin is not env and twin.agents == env.agents
    np.testing.assert_array_equal(twin.state(), env.state())
    for _episode in range(3):
        while env.agents:
            actions = random_actions(env, infos, rng)
            a = env.step(actions)
            b = twin.step(actions)
            assert data_equivalence(a, b)
            infos = a[-1]
        assert twin.render() == env.render()
        a = env.reset()  # unseeded: the next episode of the same seed stream
        b = twin.reset()
        assert data_equivalence(a, b)
        infos = a[-1]


def test_pickled_env_before_reset_works():
    env = pickle.loads(pickle.dumps(deliberation_env.parallel_env(profile="toy")))
    obs, _ = env.reset(seed=0)
    assert set(obs) == set(env.possible_agents)


@pytest.mark.parametrize("num_agents", [1, 2, 3, 4, 5])
def test_observation_size_does_not_depend_on_num_agents(num_agents):
    env = deliberation_env.parallel_env(num_agents=num_agents, max_peers=4)
    obs, _ = env.reset(seed=0)
    size = ObservationLayout(4).size
    assert env.observation_space("agent_0").shape == (size,)
    assert len(ObservationLayout(4).names()) == size
    for agent in env.possible_agents:
        assert obs[agent].shape == (size,)
        assert obs[agent].dtype == np.float32
    assert env.state().shape == env.state_space.shape == (ObservationLayout(4).state_size,)
    present = obs["agent_0"].reshape(-1)[ObservationLayout(4).peers].reshape(4, -1)[:, 0]
    assert present.tolist() == [1.0] * (num_agents - 1) + [0.0] * (5 - num_agents)


@pytest.mark.parametrize("max_peers", [0, 1, 2, 6])
def test_layout_names_match_observation_size(max_peers):
    layout = ObservationLayout(max_peers)
    env = deliberation_env.parallel_env(num_agents=1 + min(max_peers, 2), max_peers=max_peers)
    obs, _ = env.reset(seed=0)
    assert len(layout.names()) == layout.size == obs["agent_0"].shape[0]
    assert len(set(layout.names())) == layout.size
    assert env.state().shape == (layout.state_size,)


@pytest.mark.parametrize("kwargs", list(VARIANTS.values()), ids=list(VARIANTS))
def test_spaces_hold_every_observation_and_state(kwargs):
    env = deliberation_env.parallel_env(**kwargs)
    rng = np.random.default_rng(5)
    for episode in range(4):
        obs, infos = env.reset(seed=100 + episode)
        while True:
            for agent, o in obs.items():
                assert env.observation_space(agent).contains(o), (agent, o)
                mask = infos[agent]["action_mask"]
                assert mask.dtype == np.int8 and mask.shape == (3,)
                if env.obs_mode == "dict":
                    np.testing.assert_array_equal(o["action_mask"], mask)
            state = env.state()
            assert state.shape == env.state_space.shape
            assert env.state_space.contains(state)
            if not env.agents:
                break
            obs, rewards, terminations, truncations, infos = env.step(
                random_actions(env, infos, rng)
            )
            assert set(rewards) == set(terminations) == set(truncations) == set(obs)
            assert all(isinstance(r, float) and np.isfinite(r) for r in rewards.values())


def test_dict_mask_forbids_concede_without_parsed_peers():
    env = deliberation_env.parallel_env(
        backend=ScriptedBackend([Say(R), Say(X), Say(X)]), tasks=TASKS, obs_mode="dict"
    )
    obs, infos = env.reset(seed=0)
    for agent in env.possible_agents:
        np.testing.assert_array_equal(obs[agent]["action_mask"], infos[agent]["action_mask"])
        assert env.observation_space(agent).contains(obs[agent])
    # Agent 0's peers are unparsed; agents 1 and 2 can copy agent 0.
    assert obs["agent_0"]["action_mask"].tolist() == [1, 1, 0]
    assert obs["agent_1"]["action_mask"].tolist() == [1, 1, 1]


def test_infos_carry_the_documented_keys():
    env = deliberation_env.parallel_env()
    _, infos = env.reset(seed=0)
    for info in infos.values():
        assert {"action_mask", "answer", "tokens"} <= set(info)
    while env.agents:
        _, _, _, _, infos = env.step(dict.fromkeys(env.agents, 0))
        for info in infos.values():
            assert set(info["reward_terms"]) == {"local", "global", "token_cost"}
    for info in infos.values():
        assert {"team_answer", "team_correct", "total_tokens", "actions"} <= set(info)
        assert sum(info["actions"].values()) == 3 * 3


def test_render_ansi_is_a_transcript_and_human_prints(capsys):
    question = deliberation_env.load_tasks("arithmetic:3")[1].question
    env = deliberation_env.parallel_env(render_mode="ansi", tasks="arithmetic:3")
    env.reset(seed=0, options={"task_index": 1})
    while env.agents:
        env.step(dict.fromkeys(env.agents, 1))
    text = env.render()
    assert question in text
    assert text.count("REFINE") == 9
    assert "Team answer" in text
    assert capsys.readouterr().out == ""

    env = deliberation_env.parallel_env(render_mode="human", tasks="arithmetic:3")
    env.reset(seed=0, options={"task_index": 1})
    while env.agents:
        env.step(dict.fromkeys(env.agents, 1))
    assert env.render() is None
    printed = capsys.readouterr().out
    assert question in printed and "Team answer" in printed


def test_documented_shapes_match_the_spaces():
    # The module docstring is the documentation page: its header table must be right.
    # (`deliberation_env.env` is the AEC factory function; the module is in sys.modules.)
    doc = importlib.import_module("deliberation_env.env").__doc__
    obs = re.search(r"Observation shape \| \((\d+),\)", doc)
    state = re.search(r"State shape \| \((\d+),\)", doc)
    assert obs and state, "the header table lost its shape rows"
    env = deliberation_env.parallel_env(max_peers=4)
    assert int(obs.group(1)) == env.observation_space("agent_0").shape[0], (
        "deliberation_env/env.py docstring: wrong observation shape"
    )
    assert int(state.group(1)) == env.state_space.shape[0]
