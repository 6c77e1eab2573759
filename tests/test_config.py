"""`EnvConfig`: one typed description of an env, one way to build it (`EnvConfig.build`),
the same env whichever entry point builds it, and the rule that keeps `profile` a field."""

from __future__ import annotations

import ast
import inspect
import pickle
import typing
from dataclasses import fields

import numpy as np
import pytest

import deliberation_env
from agents.simulated import SimulatedBackend
from deliberation_env import EnvConfig, VectorDeliberationEnv, config, voting
from deliberation_env.backends import BACKENDS, register_backend
from deliberation_env.rewards import REWARDS
from deliberation_env.tasks import generate_arithmetic


def test_build_sorts_fields_from_backend_arguments():
    cfg = EnvConfig.build(num_agents=5, model="x", backend_kwargs={"cache": "c.sqlite"})
    assert cfg == EnvConfig(num_agents=5, backend_kwargs={"model": "x", "cache": "c.sqlite"})
    # On top of a config: fields replace, backend arguments merge (overrides win).
    base = EnvConfig(max_rounds=2, backend_kwargs={"model": "a", "seed": 1})
    cfg = EnvConfig.build(base, max_rounds=4, model="b")
    assert cfg.max_rounds == 4 and cfg.backend_kwargs == {"model": "b", "seed": 1}
    assert base.max_rounds == 2 and base.backend_kwargs == {"model": "a", "seed": 1}
    assert EnvConfig.build(base) is base
    assert EnvConfig.build() == EnvConfig()
    # A mapping is read like keyword arguments.
    assert EnvConfig.build({"num_agents": 2, "model": "x"}, tie_break="first") == EnvConfig(
        num_agents=2, tie_break="first", backend_kwargs={"model": "x"}
    )
    with pytest.raises(TypeError, match=r"config must be an EnvConfig.*got int"):
        EnvConfig.build(3)  # type: ignore[arg-type]


def test_tasks_are_stored_as_a_tuple_and_the_config_pickles():
    tasks = generate_arithmetic(5, seed=0)
    cfg = EnvConfig(tasks=tasks, backend_kwargs={"seed": 3})
    assert isinstance(cfg.tasks, tuple) and list(cfg.tasks) == tasks
    assert hash(cfg.tasks) == hash(tuple(tasks))
    tasks.clear()  # the caller's list is not the config's
    assert len(cfg.tasks) == 5
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_profile_is_a_field_and_only_backends_that_take_one_get_it():
    with pytest.raises(ValueError, match=r"backend_kwargs holds env arguments \['profile'\]"):
        EnvConfig(backend_kwargs={"profile": "toy"})
    with pytest.raises(ValueError, match=r"\['num_agents'\].*pass them as EnvConfig fields"):
        EnvConfig.build(backend_kwargs={"num_agents": 4})
    seen = {}

    def with_profile(profile: str = "unset", seed: int = 0) -> SimulatedBackend:
        seen["profile"] = profile
        return SimulatedBackend(profile)

    def without_profile(**kwargs) -> SimulatedBackend:
        seen["kwargs"] = kwargs
        return SimulatedBackend("toy")

    register_backend("test-with-profile", with_profile)
    register_backend("test-without-profile", without_profile)
    try:
        deliberation_env.parallel_env(backend="test-with-profile", profile="toy")
        assert seen["profile"] == "toy"
        deliberation_env.parallel_env(backend="test-without-profile", profile="toy", seed=2)
        assert seen["kwargs"] == {"seed": 2}
    finally:
        BACKENDS.pop("test-with-profile")
        BACKENDS.pop("test-without-profile")
    env = deliberation_env.parallel_env(profile="qwen2.5-7b/math")
    assert env.backend.profile.name == "qwen2.5-7b/math"


def test_one_default_profile():
    assert EnvConfig().profile == config.DEFAULT_PROFILE
    assert deliberation_env.parallel_env().config.profile == config.DEFAULT_PROFILE
    assert deliberation_env.parallel_env().backend.profile.name == config.DEFAULT_PROFILE


FIELDS = {"num_agents": 4, "max_rounds": 2, "profile": "toy", "vote": "weighted",
          "tie_break": "random", "concede_rule": "most_confident", "token_cost": 0.5}  # fmt: skip


def _first_obs(env):
    obs, _ = env.reset(seed=3)
    return obs


def test_every_entry_point_builds_the_same_env_from_a_config_or_keywords():
    cfg = EnvConfig(**FIELDS)
    keywords = deliberation_env.parallel_env(**FIELDS)
    from_config = deliberation_env.parallel_env(config=cfg)
    positional = deliberation_env.DeliberationEnv(cfg, render_mode="ansi")
    mixed = deliberation_env.parallel_env(EnvConfig(num_agents=4), **{**FIELDS, "num_agents": 4})
    for env in (keywords, from_config, positional, mixed):
        assert env.config == cfg
        assert env.possible_agents == [f"agent_{i}" for i in range(4)]
    reference = _first_obs(keywords)
    for env in (from_config, positional, mixed):
        obs = _first_obs(env)
        assert all(np.array_equal(obs[a], reference[a]) for a in reference)
    assert deliberation_env.raw_env(config=cfg).unwrapped.config == cfg
    assert deliberation_env.env(cfg, max_rounds=3).unwrapped.config.max_rounds == 3

    vec = VectorDeliberationEnv(2, config=cfg, autoreset=False)
    assert vec.config == cfg and not vec.autoreset
    assert VectorDeliberationEnv(2, autoreset=False, **FIELDS).config == cfg
    assert VectorDeliberationEnv(2, cfg, token_cost=0.0).config.token_cost == 0.0
    obs, _ = vec.reset(seed=3)
    assert np.array_equal(obs[0], np.stack([reference[f"agent_{i}"] for i in range(4)]))


def test_every_field_reaches_the_parallel_env():
    # The parallel env once copied its arguments by hand and dropped `vote`.
    for f in fields(EnvConfig):
        if f.name in ("backend", "tasks", "backend_kwargs"):
            continue
        value = FIELDS.get(f.name, getattr(EnvConfig(**FIELDS), f.name))
        assert getattr(deliberation_env.parallel_env(**FIELDS).config, f.name) == value


def test_view_options_are_not_fields():
    for name in ("obs_mode", "render_mode", "autoreset"):
        assert name not in config.FIELD_NAMES
    env = deliberation_env.parallel_env(obs_mode="dict", render_mode="ansi")
    assert env.config == EnvConfig()
    with pytest.raises(ValueError, match=r"does not take \['obs_mode'\]"):
        VectorDeliberationEnv(2, obs_mode="dict")


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: deliberation_env.parallel_env(**kw),
        lambda **kw: deliberation_env.parallel_env(EnvConfig(), **kw),
        lambda **kw: VectorDeliberationEnv(2, **kw),
        lambda **kw: VectorDeliberationEnv(2, config=EnvConfig(max_rounds=2), **kw),
    ],
    ids=["parallel", "parallel_config", "vector", "vector_config"],
)
def test_a_misspelled_argument_is_named_by_every_entry_point(make):
    # A keyword close to an env field is a typo, caught before the backend factory sees it
    # (which once answered "does not take ['max_round', 'profile']").
    typo = r"unknown argument 'max_round'; did you mean 'max_rounds'\?"
    with pytest.raises(ValueError, match=typo):
        make(max_round=2)
    with pytest.raises(ValueError, match=typo):
        make(backend=SimulatedBackend(), max_round=2)
    # Any other keyword is a backend argument: the factory refuses it by name.
    with pytest.raises(ValueError, match=r"\['colour'\].*accepts.*env arguments.*'max_rounds'"):
        make(colour=2)
    with pytest.raises(ValueError, match=r"\['colour'\].*instance.*'max_rounds'"):
        make(backend=SimulatedBackend(), colour=2)


def test_mode_fields_are_literals_checked_at_runtime():
    hints = typing.get_type_hints(EnvConfig)
    for name, valid in (
        ("concede_rule", config.CONCEDE_RULES),
        ("tie_break", voting.TIE_BREAKS),
        ("vote", voting.VOTES),
        ("reward", REWARDS),
    ):
        assert typing.get_origin(hints[name]) is typing.Literal
        assert typing.get_args(hints[name]) == valid
        with pytest.raises(ValueError, match=rf"{name}='nope' is not one of"):
            EnvConfig(**{name: "nope"})
    with pytest.raises(ValueError, match=r"backend_kwargs must be a mapping"):
        EnvConfig(backend_kwargs=["model"])  # type: ignore[arg-type]


def test_every_field_has_a_docstring():
    # The spec tables are generated from these (deliberation_env.spec).
    tree = ast.parse(inspect.getsource(EnvConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    documented = {
        node.target.id
        for node, doc in zip(body, body[1:])
        if isinstance(node, ast.AnnAssign)
        and isinstance(doc, ast.Expr)
        and isinstance(doc.value, ast.Constant)
        and len(doc.value.value) > 20
    }
    assert documented == {f.name for f in fields(EnvConfig)}


# --- training configs: every field checked at construction ------------------------------

BAD_TRAIN = {
    "group_size_1": ("softrankpo", {"group_size": 1}, r"needs group_size >= 2 .*zero advantages"),
    "grpo_group_1": ("grpo", {"group_size": 1}, r"GRPOConfig needs group_size >= 2"),
    "reinforce_group_1": ("reinforce", {"group_size": 1}, r"needs group_size >= 2"),
    "updates_0": ("softrankpo", {"updates": 0}, r"updates must be an integer >= 1, got 0"),
    "epochs_0": ("grpo", {"epochs": 0}, r"GRPOConfig\.epochs must be an integer >= 1, got 0"),
    "epochs_-1": ("ppo", {"epochs": -1}, r"PPOConfig\.epochs must be an integer >= 1"),
    "clip_negative": ("softrankpo", {"clip": -0.2}, r"clip must be > 0, got -0\.2"),
    "ppo_clip_0": ("ppo", {"clip": 0.0}, r"PPOConfig\.clip must be > 0"),
    "minibatches": ("grpo", {"questions_per_update": 8, "minibatches": 9},
                    r"minibatches=9 > questions_per_update=8.*minibatches <= 8"),
    "hidden": ("softrankpo", {"hidden": 30}, r"hidden=30 must be divisible .*4 attention heads.*hidden=32"),
    "eval_every": ("softrankpo", {"updates": 10, "eval_every": 20}, r"eval_every=20 > updates=10 never"),
    "eval_every_-1": ("softrankpo", {"eval_every": -1}, r"eval_every must be an integer >= 0"),
    "lr_nan": ("softrankpo", {"lr": float("nan")}, r"lr must be a finite number, got nan"),
    "lr_0": ("reinforce", {"lr": 0.0}, r"lr must be > 0"),
    "beta": ("softrankpo", {"beta": -1.0}, r"beta must be >= 0"),
    "eval_fraction": ("softrankpo", {"eval_fraction": 1.0}, r"eval_fraction must lie strictly"),
    "float_updates": ("softrankpo", {"updates": 2.5}, r"updates must be an integer >= 1, got 2\.5"),
    "sft_epochs": ("sft", {"epochs": 0}, r"SFTConfig\.epochs must be an integer >= 1"),
    "sft_episodes": ("sft", {"episodes": 0}, r"SFTConfig\.episodes must be an integer >= 1"),
    "sft_behaviour": ("sft", {"behaviour": "debat"}, r"behaviour='debat' is not a protocol.*'debate'"),
    "sb3_steps": ("sb3_ppo", {"total_timesteps": 0}, r"total_timesteps must be an integer >= 1"),
    "sb3_clip": ("sb3_ppo", {"clip_range": -0.1}, r"clip_range must be > 0"),
    "sb3_gamma": ("sb3_ppo", {"gamma": 1.5}, r"gamma and gae_lambda must lie in \[0, 1\]"),
}  # fmt: skip


@pytest.mark.parametrize(("algo", "values", "match"), BAD_TRAIN.values(), ids=BAD_TRAIN)
def test_bad_training_config_fails_at_construction(algo, values, match):
    from algorithms.registry import get_algorithm

    cls, _ = get_algorithm(algo).load()
    with pytest.raises(ValueError, match=match):
        cls(**values)


def test_groups_of_one_where_they_are_meaningful():
    from algorithms.ppo import PPOConfig
    from algorithms.sft import SFTConfig

    assert PPOConfig(group_size=1).group_size == 1  # the value head is the baseline
    # SFT does not read the RL fields: they are not checked (deliberate train refuses them).
    assert SFTConfig(group_size=1, updates=0, minibatches=99).epochs == SFTConfig.epochs


def test_training_modes_are_literals():
    from algorithms.common import TrainConfig
    from algorithms.grpo import GRPOConfig
    from algorithms.softrankpo import SoftRankPOConfig

    for cls, name in ((TrainConfig, "reward_transform"), (TrainConfig, "kl_control"),
                      (SoftRankPOConfig, "loss"), (GRPOConfig, "scale_rewards")):  # fmt: skip
        assert typing.get_origin(typing.get_type_hints(cls)[name]) is typing.Literal, name
    from algorithms.advantages import REWARD_TRANSFORMS

    hint = typing.get_type_hints(TrainConfig)["reward_transform"]
    assert set(typing.get_args(hint)) == set(REWARD_TRANSFORMS)
