"""The conformance suite, shipped in the package so anyone can check an env in one call.

    from deliberation_env.testing import check_env
    check_env(lambda **kw: deliberation_env.parallel_env(num_agents=4, **kw))

It runs PettingZoo's `parallel_api_test`, `api_test` on the AEC twin, `render_test`,
`parallel_seed_test`, `state_test`, and our own multi-step determinism test: PettingZoo
1.27's `parallel_seed_test` compares a single step only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo import ParallelEnv
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, render_test
from pettingzoo.test.state_test import state_test
from pettingzoo.utils import parallel_to_aec

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "dict_obs": {"obs_mode": "dict"},
    "terminal_reward_token_cost": {"reward": "terminal", "token_cost": 0.5},
    "stop_on_consensus": {"stop_on_consensus": True},
    "two_agents": {"num_agents": 2},
    "five_agents_five_rounds": {"num_agents": 5, "max_rounds": 5},
    "single_agent": {"num_agents": 1},
    "random_tie_break": {"tie_break": "random", "concede_rule": "most_confident"},
    "first_tie_break": {"tie_break": "first"},
    "toy": {"profile": "toy"},
    "aime": {"profile": "qwen2.5-7b/aime"},
    "ring_topology": {"topology": "ring"},
}
"""Configurations every release is checked on (`tests/test_conformance.py`)."""

EnvFn = Callable[..., ParallelEnv]


def _sample(env: ParallelEnv, rng: np.random.Generator, infos: dict) -> dict[str, int]:
    actions = {}
    for agent in env.agents:
        allowed = np.flatnonzero(infos[agent]["action_mask"])
        actions[agent] = int(rng.choice(allowed))
    return actions


def rollout_trace(env: ParallelEnv, seed: int, episodes: int, action_seed: int = 0) -> list:
    """Every output of `episodes` whole episodes, with actions from a seeded sampler."""
    rng = np.random.default_rng(action_seed)
    trace = []
    for e in range(episodes):
        obs, infos = env.reset(seed=seed if e == 0 else None)
        trace.append((obs, infos))
        while env.agents:
            out = env.step(_sample(env, rng, infos))
            infos = out[-1]
            trace.append(out)
    return trace


def check_multistep_determinism(env_fn: EnvFn, seed: int = 7, episodes: int = 3) -> None:
    """Same seed and actions -> identical obs, rewards, terminations, infos, over whole
    episodes (and later unseeded resets); a different seed -> a different trace."""
    a = rollout_trace(env_fn(), seed, episodes)
    b = rollout_trace(env_fn(), seed, episodes)
    assert len(a) == len(b), f"traces differ in length: {len(a)} vs {len(b)} steps"
    for t, (x, y) in enumerate(zip(a, b)):
        assert data_equivalence(x, y), f"step {t} differs between two runs with seed {seed}"
    c = rollout_trace(env_fn(), seed + 1, episodes)
    assert not data_equivalence(a, c), f"seeds {seed} and {seed + 1} gave identical traces"


def check_env(env_fn: EnvFn, num_cycles: int = 50) -> None:
    """Run the whole suite on a parallel-env factory that accepts ``render_mode=``."""
    parallel_api_test(env_fn(), num_cycles=num_cycles)
    api_test(parallel_to_aec(env_fn()), num_cycles=num_cycles)
    render_test(lambda render_mode=None: parallel_to_aec(env_fn(render_mode=render_mode)))
    parallel_seed_test(env_fn, num_cycles=num_cycles)
    state_test(parallel_to_aec(env_fn()), env_fn(), num_cycles=num_cycles)
    check_multistep_determinism(env_fn)
