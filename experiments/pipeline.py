"""Training of the learned methods for experiments: one config per method at a `Budget`
(equal agent-step budgets), and SFT, RL and MPDF's two-stage pipeline (SFT, then RL
started from and KL-anchored at the SFT policy), each trained once per process."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import time
from typing import Any, cast

import numpy as np

from algorithms.common import TrainConfig, split_tasks
from algorithms.policy import MetaPolicy
from algorithms.registry import get_algorithm
from deliberation_env import EnvConfig
from deliberation_env.config import TaskSource
from deliberation_env.tasks import Task
from experiments.budgets import Budget
from experiments.paper.setup import Setup


def configure(cls: type, **values: Any) -> Any:
    """Instantiate a config dataclass with the `values` it has fields for."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def method_config(name: str, budget: Budget, env: EnvConfig, **fields: Any) -> Any:
    """The config of learned method `name` training on `env` under `budget` (equal
    agent-step budgets); `fields` are other fields of its config (``seed``, ``out``, ...)."""
    cls, _ = get_algorithm(name).load()
    batch = budget.questions_per_update * budget.group_size
    values = dict(fields, env=env, updates=budget.updates,
                  questions_per_update=budget.questions_per_update, group_size=budget.group_size)  # fmt: skip
    if name == "sft":
        values.update(episodes=budget.sft_episodes, epochs=budget.sft_epochs)
    elif name == "ppo":
        values.update(questions_per_update=batch, group_size=1)
    elif name == "sb3_ppo":
        # SB3 counts one timestep per agent and round.
        values["total_timesteps"] = budget.updates * batch * env.max_rounds * env.num_agents
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
def split(tasks: TaskSource) -> tuple[list[Task], list[Task]]:
    """(train, held-out) questions of `tasks` (a `load_tasks` spec or a tuple of tasks), as
    the trainers split them (`algorithms.common.split_tasks`, default ``eval_fraction``)."""
    return split_tasks(TrainConfig(env=EnvConfig(tasks=tasks)))


# --------------------------------------------------------------------------- cached training
_CACHE: dict[str, Any] = {}
"""Trained policies by configuration, so experiments run in one process (the benchmark)
share them; every trainer seeds itself, so a cached policy equals a fresh one."""


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=repr)


def _env_key(env: EnvConfig) -> dict[str, Any]:
    """The fields of a training env that decide what is learned: all but the backend
    (training runs on the simulator, `Setup.env`)."""
    return {
        k: v for k, v in dataclasses.asdict(env).items() if k not in ("backend", "backend_kwargs")
    }


def _where(env: EnvConfig, seed: int, extra: str = "") -> str:
    return f"{env.profile} (N={env.num_agents}, T={env.max_rounds}, seed {seed}{extra})"


def train_sft(setup: Setup, env: EnvConfig, seed: int = 0) -> MetaPolicy:
    """Stage 1 (behaviour cloning on hindsight labels) on the training env `env`; cached."""
    key = _key("sft", _env_key(env), seed, dataclasses.asdict(setup.budget))
    if key not in _CACHE:
        _, train = get_algorithm("sft").load()
        start = time.perf_counter()
        trained, _ = train(method_config("sft", setup.budget, env, seed=seed), progress=False)
        _CACHE[key] = trained
        setup.log(f"  trained sft on {_where(env, seed)} in {time.perf_counter() - start:.0f} s")
    return cast(MetaPolicy, _CACHE[key])


def train_rl(
    setup: Setup,
    method: str,
    env: EnvConfig,
    seed: int = 0,
    from_sft: bool = True,
    **overrides: Any,
) -> tuple[MetaPolicy, list[dict[str, Any]]]:
    """`method` (softrankpo, grpo, ppo, ...) on the training env `env`, started from and
    KL-anchored at the SFT policy when `from_sft` (MPDF's two-stage pipeline); cached.
    `overrides` are config fields (``tau=0.6``, ``reward_transform="exp"``, ...)."""
    key = _key(method, _env_key(env), seed, dataclasses.asdict(setup.budget), from_sft, overrides)
    if key in _CACHE:
        return cast(tuple[MetaPolicy, list[dict[str, Any]]], _CACHE[key])
    cfg = method_config(method, setup.budget, env, seed=seed)
    if method == "ppo":
        cfg = dataclasses.replace(cfg, beta=TrainConfig.beta)  # the pipeline's KL anchor
    cfg = dataclasses.replace(cfg, **overrides)
    start_policy = ref = None
    if from_sft:
        ref = train_sft(setup, env, seed)
        start_policy = copy.deepcopy(ref)
    start = time.perf_counter()
    _, train = get_algorithm(method).load()
    policy, history = train(cfg, policy=start_policy, ref=ref, progress=False)
    extra = "".join(f", {k}={v}" for k, v in overrides.items())
    setup.log(
        f"  trained {'sft+' if from_sft else ''}{method} on {_where(env, seed, extra)} "
        f"in {time.perf_counter() - start:.0f} s"
    )
    _CACHE[key] = (policy, history)
    return cast(MetaPolicy, policy), history


def learned(setup: Setup, name: str, env: EnvConfig, **overrides: Any) -> list[MetaPolicy]:
    """One policy per training seed of the budget for a learned row name, trained on `env`:
    ``sft``, ``sft+METHOD`` (the two-stage pipeline) or ``METHOD`` (RL from a fresh
    policy)."""
    policies = []
    for seed in setup.budget.train_seeds:
        if name == "sft":
            policies.append(train_sft(setup, env, seed))
        else:
            method = name.removeprefix("sft+")
            policy, _ = train_rl(
                setup, method, env, seed, from_sft=name.startswith("sft+"), **overrides
            )
            policies.append(policy)
    return policies
