"""Training of the learned methods for experiments: one config per method at a `Budget`
(equal agent-step budgets), and SFT, RL and MPDF's two-stage pipeline (SFT, then RL
started from and KL-anchored at the SFT policy), each trained once per process."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from algorithms.common import TrainConfig
from algorithms.policy import MetaPolicy
from algorithms.registry import get_algorithm
from deliberation_env import load_tasks
from deliberation_env.tasks import Task, train_eval_split
from experiments.budgets import Budget
from experiments.paper.setup import Setup


def configure(cls: type, **values: Any) -> Any:
    """Instantiate a config dataclass with the `values` it has fields for."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def method_config(name: str, budget: Budget, base: Mapping[str, Any]) -> Any:
    """The config of learned method `name` under `budget` (equal agent-step budgets);
    `base` holds the env and seed fields (``profile``, ``tasks``, ``seed``, ...)."""
    cls, _ = get_algorithm(name).load()
    batch = budget.questions_per_update * budget.group_size
    values = dict(base, updates=budget.updates, questions_per_update=budget.questions_per_update,
                  group_size=budget.group_size)  # fmt: skip
    if name == "sft":
        values.update(episodes=budget.sft_episodes, epochs=budget.sft_epochs)
    elif name == "ppo":
        values.update(questions_per_update=batch, group_size=1)
    elif name == "sb3_ppo":
        # SB3 counts one timestep per agent and round.
        rounds, agents = base.get("max_rounds", 3), base.get("num_agents", 3)
        values["total_timesteps"] = budget.updates * batch * rounds * agents
    return configure(cls, **values)


def learning_curve(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """History records -> ``[{"step": agent steps so far, "team_accuracy": ...}]``."""
    steps = np.cumsum([h.get("agent_steps", 0) for h in history])
    return [
        {"step": float(s), "team_accuracy": float(h["team_accuracy"])}
        for s, h in zip(steps, history)
        if "team_accuracy" in h
    ]


@functools.lru_cache(maxsize=32)
def split(spec: str) -> tuple[list[Task], list[Task]]:
    """(train, held-out) questions of a `load_tasks` spec, as the trainers split them
    (`algorithms.common.split_tasks` with the default ``eval_fraction``)."""
    return train_eval_split(load_tasks(spec), TrainConfig.eval_fraction, seed=0)


# --------------------------------------------------------------------------- cached training
_CACHE: dict[str, Any] = {}
"""Trained policies by configuration, so experiments run in one process (the benchmark)
share them; every trainer seeds itself, so a cached policy equals a fresh one."""


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=repr)


def _base(
    setup: Setup, profile: str, tasks: str, num_agents: int, max_rounds: int, seed: int
) -> dict[str, Any]:
    env_kwargs = {k: v for k, v in setup.env_kwargs.items() if k not in ("backend",)}
    return {
        "profile": profile,
        "tasks": tasks,
        "num_agents": num_agents,
        "max_rounds": max_rounds,
        "seed": seed,
        "env_kwargs": env_kwargs,
    }


def train_sft(
    setup: Setup, profile: str, tasks: str, num_agents: int = 3, max_rounds: int = 3, seed: int = 0
) -> MetaPolicy:
    """Stage 1 (behaviour cloning on hindsight labels) on the simulator; cached."""
    base = _base(setup, profile, tasks, num_agents, max_rounds, seed)
    key = _key("sft", base, dataclasses.asdict(setup.budget))
    if key not in _CACHE:
        _, train = get_algorithm("sft").load()
        start = time.perf_counter()
        trained, _ = train(method_config("sft", setup.budget, base), progress=False)
        _CACHE[key] = trained
        setup.log(
            f"  trained sft on {profile} (N={num_agents}, T={max_rounds}, seed {seed}) "
            f"in {time.perf_counter() - start:.0f} s"
        )
    return cast(MetaPolicy, _CACHE[key])


def train_rl(
    setup: Setup,
    method: str,
    profile: str,
    tasks: str,
    num_agents: int = 3,
    max_rounds: int = 3,
    seed: int = 0,
    from_sft: bool = True,
    **overrides: Any,
) -> tuple[MetaPolicy, list[dict[str, Any]]]:
    """`method` (softrankpo, grpo, ppo, ...) on the simulator, started from and KL-anchored
    at the SFT policy when `from_sft` (MPDF's two-stage pipeline); cached. `overrides` are
    config fields (``tau=0.6``, ``reward_transform="exp"``, ...)."""
    base = _base(setup, profile, tasks, num_agents, max_rounds, seed)
    key = _key(method, base, dataclasses.asdict(setup.budget), from_sft, overrides)
    if key in _CACHE:
        return cast(tuple[MetaPolicy, list[dict[str, Any]]], _CACHE[key])
    cfg = method_config(method, setup.budget, base)
    if method == "ppo":
        cfg = dataclasses.replace(cfg, beta=TrainConfig.beta)  # the pipeline's KL anchor
    cfg = dataclasses.replace(cfg, **overrides)
    start_policy = ref = None
    if from_sft:
        ref = train_sft(setup, profile, tasks, num_agents, max_rounds, seed)
        start_policy = copy.deepcopy(ref)
    start = time.perf_counter()
    _, train = get_algorithm(method).load()
    policy, history = train(cfg, policy=start_policy, ref=ref, progress=False)
    extra = "".join(f", {k}={v}" for k, v in overrides.items())
    setup.log(
        f"  trained {'sft+' if from_sft else ''}{method} on {profile} (N={num_agents}, "
        f"T={max_rounds}, seed {seed}{extra}) in {time.perf_counter() - start:.0f} s"
    )
    _CACHE[key] = (policy, history)
    return cast(MetaPolicy, policy), history


def learned(
    setup: Setup,
    name: str,
    profile: str,
    tasks: str,
    num_agents: int = 3,
    max_rounds: int = 3,
    **overrides: Any,
) -> list[MetaPolicy]:
    """One policy per training seed of the budget for a learned row name: ``sft``,
    ``sft+METHOD`` (the two-stage pipeline) or ``METHOD`` (RL from a fresh policy)."""
    policies = []
    for seed in setup.budget.train_seeds:
        if name == "sft":
            policies.append(train_sft(setup, profile, tasks, num_agents, max_rounds, seed))
        else:
            method = name.removeprefix("sft+")
            policy, _ = train_rl(
                setup, method, profile, tasks, num_agents, max_rounds, seed,
                from_sft=name.startswith("sft+"), **overrides,
            )  # fmt: skip
            policies.append(policy)
    return policies
