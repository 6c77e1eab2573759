"""PettingZoo / Gymnasium / RLlib conventions of `DeliberationEnv` that the conformance
suite does not check: ``metadata["render_fps"]``, unknown agents in the space methods,
spaces that do not keep a dropped env (and its backend) alive, ``render(mode)`` as RLlib
calls it, and a transcript that never outgrows one episode."""

from __future__ import annotations

import gc
import pickle
import weakref

import gymnasium
import numpy as np
import pettingzoo
import pytest

import deliberation_env
from deliberation_env import Solution, Task, VectorDeliberationEnv

TASKS = (Task(id="conv/0", question="What is 6 * 7?", answer="42", kind="numeric"),)


def play(env, seed: int = 0, action: int = 1) -> None:
    env.reset(seed=seed)
    while env.agents:
        env.step(dict.fromkeys(env.agents, action))


# ---------------------------------------------------------------------- metadata
def test_metadata_has_render_fps():
    for env in (deliberation_env.parallel_env(), deliberation_env.env()):
        fps = env.metadata["render_fps"]
        assert isinstance(fps, int) and fps > 0
        assert set(env.metadata["render_modes"]) == {"ansi", "human"}


# ---------------------------------------------------------------------- spaces
@pytest.mark.parametrize("method", ["observation_space", "action_space"])
@pytest.mark.parametrize("agent", ["agent_3", "agent_-1", "player_0", 0, None, ["agent_0"]])
def test_unknown_agent_raises_listing_possible_agents(method, agent):
    env = deliberation_env.parallel_env()
    with pytest.raises(ValueError, match=r"no such agent; possible agents are \['agent_0'") as err:
        getattr(env, method)(agent)
    assert repr(agent) in str(err.value) and "agent_2" in str(err.value)


def test_spaces_are_cached_per_agent_and_match_the_layout():
    env = deliberation_env.parallel_env(num_agents=4)
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
        assert env.observation_space(agent).shape == (env.layout.size,)
        assert env.action_space(agent) == gymnasium.spaces.Discrete(3)
    # One object per agent: seeding one agent's space leaves the others' streams alone.
    a0, a1 = (env.action_space(a) for a in env.possible_agents[:2])
    assert a0 is not a1
    dict_env = deliberation_env.parallel_env(obs_mode="dict")
    space = dict_env.observation_space("agent_1")
    assert isinstance(space, gymnasium.spaces.Dict) and space is dict_env.observation_space(
        "agent_1"
    )


def test_pickled_env_has_its_own_spaces():
    env = deliberation_env.parallel_env()
    copy = pickle.loads(pickle.dumps(env))
    assert copy.observation_space("agent_0") == env.observation_space("agent_0")
    assert copy.observation_space("agent_0") is not env.observation_space("agent_0")
    with pytest.raises(ValueError, match="possible agents"):
        copy.action_space("agent_9")


class HeavyBackend:
    """A text backend holding a large object, as an HF backend holds its model."""

    def __init__(self) -> None:
        self.model = np.zeros(1 << 16)  # weakref-able, like a torch module

    def solve(self, requests):
        return [Solution("", "42", 0.5, 0.5, None, 1, 1, 1, 1) for _ in requests]

    refine = solve


def _dropped(make) -> tuple[weakref.ref, weakref.ref]:
    """Build an env with `make(backend)`, use its spaces and play, then drop everything:
    (weakref to the env, weakref to the backend's model)."""
    backend = HeavyBackend()
    model = weakref.ref(backend.model)
    env = make(backend)
    del backend
    inner = getattr(env, "unwrapped", env)
    for agent in getattr(inner, "possible_agents", []):
        env.observation_space(agent).contains(env.observation_space(agent).sample())
        env.action_space(agent).sample()
    if isinstance(env, VectorDeliberationEnv):
        env.reset(seed=0)
        env.step(np.ones((env.num_envs, env.num_agents), np.int64))
    elif isinstance(env, pettingzoo.AECEnv):
        env.reset(seed=0)
        for _ in env.agent_iter(6):
            env.step(None if any(env.last()[2:4]) else 1)
    else:
        play(env)
    ref = weakref.ref(inner)
    del env, inner
    gc.collect()
    return ref, model


@pytest.mark.parametrize(
    "make",
    [
        lambda b: deliberation_env.parallel_env(backend=b, tasks=TASKS),
        lambda b: deliberation_env.parallel_env(backend=b, tasks=TASKS, obs_mode="dict"),
        lambda b: deliberation_env.env(backend=b, tasks=TASKS),
        lambda b: VectorDeliberationEnv(4, backend=b, tasks=TASKS),
    ],
    ids=["parallel", "parallel-dict", "aec", "vector"],
)
def test_a_dropped_env_and_its_backend_are_freed(make):
    env_ref, model_ref = _dropped(make)
    assert env_ref() is None, gc.get_referrers(env_ref())
    assert model_ref() is None


def test_many_envs_do_not_accumulate():
    refs = []
    for seed in range(20):
        env = deliberation_env.parallel_env()
        env.observation_space("agent_0")
        env.action_space("agent_1")
        env.reset(seed=seed)
        refs.append(weakref.ref(env))
    del env
    gc.collect()
    assert all(r() is None for r in refs)


# ---------------------------------------------------------------------- render
def test_render_accepts_an_optional_mode():
    env = deliberation_env.parallel_env(render_mode="ansi")
    play(env)
    text = env.render()
    assert text and text.startswith("Question [")
    assert env.render(None) == text == env.render("ansi")  # positional, as RLlib passes it
    assert env.render(mode="ansi") == text


def test_render_mode_overrides_for_one_call(capsys):
    ansi = deliberation_env.parallel_env(render_mode="ansi")
    play(ansi)
    capsys.readouterr()
    assert ansi.render("human") is None
    assert capsys.readouterr().out.strip() == ansi.render()

    human = deliberation_env.parallel_env(render_mode="human")
    play(human)
    capsys.readouterr()
    text = human.render("ansi")
    assert text and capsys.readouterr().out == ""
    assert human.render() is None and capsys.readouterr().out.strip() == text


def test_render_rejects_unknown_modes_and_warns_without_a_render_mode(monkeypatch):
    env = deliberation_env.parallel_env(render_mode="ansi")
    with pytest.raises(ValueError, match=r"render\(mode='rgb_array'\).*'ansi'"):
        env.render("rgb_array")
    quiet = deliberation_env.parallel_env()
    play(quiet)
    warned: list[str] = []
    monkeypatch.setattr(gymnasium.logger, "warn", lambda msg, *a, **k: warned.append(msg))
    assert quiet.render() is None and quiet.render(None) is None and quiet.render("ansi") is None
    assert len(warned) == 3 and "render_mode='ansi'" in warned[0]


class RLlibStyleWrapper(gymnasium.Env):
    """What `ray.rllib.env.wrappers.pettingzoo_env.ParallelPettingZooEnv` does (ray 2.x):
    `render()` calls ``self.par_env.render(self.render_mode)``, where its own `render_mode`
    is gymnasium.Env's default None."""

    def __init__(self, env) -> None:
        self.par_env = env
        self.par_env.reset()

    def render(self):
        return self.par_env.render(self.render_mode)


def test_render_through_an_rllib_style_wrapper():
    env = deliberation_env.parallel_env(render_mode="ansi")
    wrapper = RLlibStyleWrapper(env)
    assert wrapper.render_mode is None
    assert wrapper.render() == env.render()
    assert wrapper.render().startswith("Question [")


def test_render_through_rllib():
    pz = pytest.importorskip("ray.rllib.env.wrappers.pettingzoo_env", exc_type=ImportError)
    wrapped = pz.ParallelPettingZooEnv(deliberation_env.parallel_env(render_mode="ansi"))
    assert wrapped.render().startswith("Question [")


# ---------------------------------------------------------------------- bounded state
def test_transcript_holds_one_episode_only():
    env = deliberation_env.parallel_env(render_mode="ansi", max_rounds=3)
    play(env, seed=0)
    lines = len(env.render().splitlines())
    assert lines == 1 + 1 + 3 + 1  # question, initial answers, 3 rounds, team answer
    for seed in range(1, 30):
        play(env, seed=seed)
        assert len(env.render().splitlines()) == lines


def test_no_transcript_is_kept_without_a_render_mode():
    env = deliberation_env.parallel_env()
    for seed in range(10):
        play(env, seed=seed)
    assert env._transcript == []
