"""Bad input raises an error that names the culprit and the fix, and leaves the env usable."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

import deliberation_env
from deliberation_env import Action, VectorDeliberationEnv

AGENTS = ["agent_0", "agent_1", "agent_2"]
VALID = {"agent_0": 0, "agent_1": 1, "agent_2": 2}
RANGE = r"Discrete\(3\) \(0=PERSIST, 1=REFINE, 2=CONCEDE\)"

BAD_ACTIONS = {
    "missing_agent": ({"agent_0": 0, "agent_1": 1}, r"missing \['agent_2'\].*live agents"),
    "unknown_agent": ({**VALID, "agent_9": 0}, r"unknown or finished agents \['agent_9'\]"),
    "action_3": ({**VALID, "agent_1": 3}, rf"agent_1: action 3 is not in {RANGE}"),
    "action_minus_1": ({**VALID, "agent_1": -1}, rf"agent_1: action -1 is not in {RANGE}"),
    "action_7": ({**VALID, "agent_2": 7}, rf"agent_2: action 7 is not in {RANGE}"),
    "float": ({**VALID, "agent_1": 1.5}, rf"agent_1: action 1\.5 \(float\).*{RANGE}"),
    "nan": ({**VALID, "agent_0": math.nan}, rf"agent_0: action nan \(float\).*{RANGE}"),
    "string": ({**VALID, "agent_1": "1"}, rf"agent_1: action '1' \(str\).*{RANGE}"),
    "none": ({**VALID, "agent_2": None}, rf"agent_2: action None \(NoneType\).*{RANGE}"),
    "bool": ({**VALID, "agent_0": True}, rf"agent_0: action True \(bool\).*{RANGE}"),
    "numpy_bool": ({**VALID, "agent_0": np.bool_(True)}, r"agent_0: action .*True.* \(bool\)"),
    "array": ({**VALID, "agent_0": np.array([1])}, r"agent_0: action"),
    "not_a_dict": ([0, 1, 2], r"actions must be a dict"),
}


def fresh(**kwargs):
    env = deliberation_env.parallel_env(**kwargs)
    env.reset(seed=4)
    return env


@pytest.mark.parametrize(("actions", "match"), BAD_ACTIONS.values(), ids=BAD_ACTIONS)
def test_bad_actions_raise_and_leave_the_env_untouched(actions, match):
    env, twin = fresh(), fresh()
    with pytest.raises(ValueError, match=match):
        env.step(actions)
    assert env.agents == AGENTS
    # The failed call changed nothing: the same valid steps give the same results as in a
    # twin that never saw the bad input, up to the end of the episode and the next one.
    while twin.agents:
        assert data_equivalence(env.step(VALID), twin.step(VALID))
    assert data_equivalence(env.reset(), twin.reset())


@pytest.mark.parametrize(
    "action",
    [0, 1, 2, np.int64(2), np.int8(1), np.uint8(0), np.array(1), Action.CONCEDE],
    ids=["int0", "int1", "int2", "int64", "int8", "uint8", "0d_array", "enum"],
)
def test_integer_like_actions_are_accepted(action):
    env = fresh()
    env.step({**VALID, "agent_0": action})


def test_step_before_reset():
    env = deliberation_env.parallel_env()
    with pytest.raises(RuntimeError, match=r"before reset\(\).*call reset\(\)"):
        env.step(VALID)
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        env.state()


def test_step_after_the_episode_ended():
    env = fresh(max_rounds=1)
    env.step(VALID)
    assert env.agents == []
    with pytest.raises(RuntimeError, match=r"episode is over.*reset\(\)"):
        env.step(VALID)
    env.reset()
    env.step(VALID)


def construct_and_reset(**kwargs):
    """Errors may be raised when the env is built or when the backend is (at reset)."""
    deliberation_env.parallel_env(**kwargs).reset(seed=0)


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown simulator profile 'llama9'") as err:
        construct_and_reset(profile="llama9")
    for name in ("llama3.1-8b/gsm8k", "qwen2.5-7b/math", "toy"):
        assert f"'{name}'" in str(err.value)


def test_unknown_task_source_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown task source 'gsm9k'") as err:
        construct_and_reset(tasks="gsm9k:x.jsonl")
    for name in ("arithmetic", "gsm8k", "math", "mmlu", "humaneval"):
        assert name in str(err.value)


def test_empty_task_list():
    with pytest.raises(ValueError, match=r"gave no tasks"):
        construct_and_reset(tasks=[])


def test_unknown_backend_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown backend 'gpt5'.*'simulated'"):
        construct_and_reset(backend="gpt5")


def test_backend_arguments_with_an_instance():
    from agents.simulated import SimulatedBackend

    with pytest.raises(ValueError, match=r"backend arguments \['model'\].*instance"):
        construct_and_reset(backend=SimulatedBackend(), model="x")


def test_object_that_is_not_a_backend():
    with pytest.raises(TypeError, match=r"object is not a backend.*solve"):
        construct_and_reset(backend=object())


@pytest.mark.parametrize("typo", ["num_agent", "num_agnets", "max_peer", "toke_cost"])
def test_misspelled_argument_is_named(typo):
    # A keyword close to an env field is named with the field it misspells (difflib); it
    # never reaches the backend factory, which listed valid arguments as rejected.
    field = {"num_agent": "num_agents", "num_agnets": "num_agents", "max_peer": "max_peers",
             "toke_cost": "token_cost"}[typo]  # fmt: skip
    with pytest.raises(ValueError, match=rf"unknown argument '{typo}'; did you mean '{field}'\?"):
        construct_and_reset(**{typo: 3})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concede_rule": "loudest"}, r"concede_rule='loudest' is not one of .*'plurality'"),
        ({"tie_break": "coin"}, r"tie_break='coin' is not one of .*'confidence'"),
        ({"reward": "dense"}, r"reward='dense' is not one of .*'consensus'"),
        ({"vote": "loudest"}, r"vote='loudest' is not one of .*'weighted'"),
        ({"obs_mode": "image"}, r"obs_mode='image' is not one of .*'flat'"),
        ({"render_mode": "rgb_array"}, r"render_mode='rgb_array' is not one of .*'ansi'"),
        ({"num_agents": 6}, r"num_agents=6 needs max_peers >= 5.*pass max_peers=5"),
        ({"num_agents": 3, "max_peers": 1}, r"num_agents=3 needs max_peers >= 2"),
        ({"num_agents": 0}, r"num_agents must be an integer >= 1, got 0"),
        ({"num_agents": 2.0}, r"num_agents must be an integer >= 1, got 2\.0"),
        ({"num_agents": True}, r"num_agents must be an integer >= 1, got True"),
        ({"max_rounds": 0}, r"max_rounds must be an integer >= 1, got 0"),
        ({"max_peers": -1}, r"max_peers must be an integer >= 0, got -1"),
        ({"token_cost": -0.1}, r"token_cost must be >= 0, got -0\.1"),
        ({"w_local": math.nan}, r"w_local must be a finite number, got nan"),
        ({"w_global": math.inf}, r"w_global must be a finite number, got inf"),
        ({"token_cost": math.nan}, r"token_cost must be a finite number, got nan"),
        ({"w_local": "1"}, r"w_local must be a finite number, got '1'"),
        ({"stop_on_consensus": "no"}, r"stop_on_consensus must be True or False, got 'no'"),
        ({"num_agents": 6}, r"pass max_peers=5 \(--max-peers 5 on the command line\)"),
    ],
    ids=lambda x: "-".join(f"{k}={v}" for k, v in x.items()) if isinstance(x, dict) else "",
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        construct_and_reset(**kwargs)


@pytest.mark.parametrize("task_index", [-1, 1000])
def test_task_index_out_of_range(task_index):
    env = deliberation_env.parallel_env()
    with pytest.raises(ValueError, match=rf"task_index {task_index} is out of range.*0\.\.999"):
        env.reset(seed=0, options={"task_index": task_index})


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "7"], ids=["negative", "too_big", "float", "str"])
def test_bad_seed_is_named(seed):
    # Gymnasium's reset takes a non-negative int seed; anything else must be refused by name
    # (not silently truncated, and not with a bare NumPy overflow message).
    env = deliberation_env.parallel_env()
    with pytest.raises((ValueError, TypeError), match=r"seed"):
        env.reset(seed=seed)


# --- the vector env -------------------------------------------------------------------


@pytest.fixture
def vec():
    env = VectorDeliberationEnv(num_envs=4)
    env.reset(seed=0)
    return env


def test_vector_step_before_reset():
    with pytest.raises(RuntimeError, match=r"before reset\(\).*call reset\(\)"):
        VectorDeliberationEnv(num_envs=2).step(np.zeros((2, 3), np.int64))
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        VectorDeliberationEnv(num_envs=2).state()


@pytest.mark.parametrize(
    "shape", [(4, 2), (3, 3), (4,), (12,), (4, 3, 1)], ids=lambda s: "x".join(map(str, s))
)
def test_vector_wrong_action_shape(vec, shape):
    with pytest.raises(ValueError, match=r"shape \(4, 3\) \(num_envs, num_agents\)"):
        vec.step(np.zeros(shape, np.int64))


@pytest.mark.parametrize(("value", "shown"), [(3, "3"), (-1, "-1"), (7, "7")])
def test_vector_out_of_range_names_env_and_agent(vec, value, shown):
    actions = np.zeros((4, 3), np.int64)
    actions[2, 1] = value
    with pytest.raises(ValueError, match=rf"env 2, agent_1: action {shown} is not in {RANGE}"):
        vec.step(actions)


@pytest.mark.parametrize(
    "actions",
    [np.full((4, 3), 1.5), np.full((4, 3), np.nan), np.full((4, 3), True), np.full((4, 3), "1")],
    ids=["float", "nan", "bool", "str"],
)
def test_vector_non_integer_actions(vec, actions):
    with pytest.raises(ValueError, match=rf"integers in {RANGE}"):
        vec.step(actions)


def test_vector_failed_step_leaves_the_env_untouched(vec):
    twin = VectorDeliberationEnv(num_envs=4)
    twin.reset(seed=0)
    bad = np.ones((4, 3), np.int64)
    bad[3, 2] = 5
    with pytest.raises(ValueError):
        vec.step(bad)
    good = np.ones((4, 3), np.int64)
    for _ in range(4):  # through an automatic reset
        assert data_equivalence(vec.step(good), twin.step(good))


@pytest.mark.parametrize("group_size", [3, 0, -2, 8])
def test_vector_group_size_must_divide_num_envs(group_size):
    env = VectorDeliberationEnv(num_envs=4)
    with pytest.raises(ValueError, match=rf"group_size={group_size} must divide num_envs=4"):
        env.reset(seed=0, options={"group_size": group_size})


def test_vector_seed_list_length():
    env = VectorDeliberationEnv(num_envs=4)
    with pytest.raises(ValueError, match=r"seed must be an int or 4 ints.*\(2,\)"):
        env.reset(seed=[1, 2])


def test_vector_num_envs():
    with pytest.raises(ValueError, match=r"num_envs must be an integer >= 1, got 0"):
        VectorDeliberationEnv(num_envs=0)


def test_vector_bad_config_is_refused():
    with pytest.raises(ValueError, match=r"tie_break='coin'"):
        VectorDeliberationEnv(num_envs=2, tie_break="coin")


def test_vector_step_after_done_without_autoreset():
    env = VectorDeliberationEnv(num_envs=2, autoreset=False, max_rounds=1)
    env.reset(seed=0)
    env.step(np.zeros((2, 3), np.int64))
    with pytest.raises(RuntimeError, match=r"autoreset=False: call reset\(\)"):
        env.step(np.zeros((2, 3), np.int64))
    env.reset(seed=1)
    env.step(np.zeros((2, 3), np.int64))


# --- reset options and simulator profiles (deliberation_env.config's checks) -----------


def test_unknown_reset_option_is_named_with_the_closest_one():
    from deliberation_env.config import check_reset_options

    with pytest.raises(ValueError, match=r"unknown option 'task_idx'; did you mean 'task_index'\?"):
        check_reset_options({"task_idx": 2})
    assert check_reset_options(None) == {}
    assert check_reset_options({"task_index": 1}) == {"task_index": 1}
    assert check_reset_options({"group_size": 4}, "VectorDeliberationEnv") == {"group_size": 4}
    # Not a near miss of a valid key (PettingZoo's api_test passes {"options": 1}): ignored
    # with a warning that names it.
    with pytest.warns(UserWarning, match=r"ignoring unknown option 'group_size'.*\['task_index'"):
        assert check_reset_options({"group_size": 4}) == {}
    with pytest.warns(UserWarning, match=r"ignoring unknown option 'options'"):
        assert check_reset_options({"options": 1, "task_index": 0}) == {"task_index": 0}
    with pytest.raises(TypeError, match=r"options must be a dict or None, got list"):
        check_reset_options([("task_index", 1)])


def test_reset_refuses_an_unknown_option():
    with pytest.raises(ValueError, match=r"did you mean 'task_index'"):
        deliberation_env.parallel_env().reset(seed=0, options={"task_idx": 2})
    with pytest.raises(ValueError, match=r"did you mean 'group_size'"):
        VectorDeliberationEnv(num_envs=2).reset(seed=0, options={"group_sise": 2})


BAD_PROFILES = {
    "accuracy": ({"accuracy": 1.5}, r"profile 'toy': accuracy=1\.5 must be in \[0, 1\]"),
    "fix_rate": ({"fix_rate": (0.1, 0.5, 1.2)}, r"fix_rate=\(0\.1, 0\.5, 1\.2\) must be in"),
    "nan": ({"conformity": math.nan}, r"conformity=nan must be in \[0, 1\]"),
    "tokens": ({"completion_tokens": -1.0}, r"completion_tokens=-1\.0 must be >= 0"),
    "concentration": ({"concentration": 0.0}, r"concentration=0\.0 must be > 0"),
    "distractors": ({"distractors": 0}, r"distractors must be an integer >= 1, got 0"),
}


@pytest.mark.parametrize(("change", "match"), BAD_PROFILES.values(), ids=BAD_PROFILES)
def test_out_of_range_profile_parameters_are_named(change, match):
    from agents.profiles import get_profile
    from deliberation_env.config import check_profile

    with pytest.raises(ValueError, match=match):
        check_profile(get_profile("toy").with_(**change))


def test_every_shipped_profile_is_in_range():
    from agents.profiles import PROFILES
    from deliberation_env.config import check_profile

    for profile in PROFILES.values():
        check_profile(profile)


def test_register_profile_refuses_an_accuracy_above_one():
    from agents.profiles import PROFILES, SimProfile, register_profile

    try:
        with pytest.raises(ValueError, match=r"accuracy=1\.5 must be in \[0, 1\]"):
            register_profile(SimProfile("bad-accuracy", accuracy=1.5))
    finally:
        PROFILES.pop("bad-accuracy", None)
