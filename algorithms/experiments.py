"""The main job, `deliberate compare`: train every learned method on the simulated
benchmark, evaluate them with every heuristic protocol and the oracle on held-out
questions over several seeds, and write the table, the JSON and the plots."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.common import TrainConfig, split_tasks
from algorithms.evaluate import compare, markdown_table
from algorithms.heuristics import PROTOCOLS, make_protocol
from algorithms.registry import get_algorithm


@dataclass(frozen=True)
class Preset:
    """Budgets of a comparison run."""

    updates: int
    """Policy updates of each group RL method."""
    questions_per_update: int
    group_size: int
    sft_episodes: int
    sft_epochs: int
    eval_episodes: int
    seeds: tuple[int, ...]
    """Evaluation seeds (questions are the held-out split; seeds draw them and the noise)."""
    methods: tuple[str, ...] = ("softrankpo", "grpo", "ppo", "sb3_ppo", "sft")


PRESETS: dict[str, Preset] = {
    "quick": Preset(updates=40, questions_per_update=32, group_size=8, sft_episodes=2048,
                    sft_epochs=8, eval_episodes=1000, seeds=(0, 1, 2)),
    "paper": Preset(updates=300, questions_per_update=64, group_size=8, sft_episodes=8192,
                    sft_epochs=20, eval_episodes=2000, seeds=(0, 1, 2)),
}  # fmt: skip


def configure(cls: type, **values: Any) -> Any:
    """Instantiate a config dataclass with the `values` it has fields for."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def method_config(name: str, preset: Preset, base: dict[str, Any]) -> Any:
    """The config of learned method `name` under `preset` (equal agent-step budgets)."""
    cls, _ = get_algorithm(name).load()
    batch = preset.questions_per_update * preset.group_size
    values = dict(base, updates=preset.updates, questions_per_update=preset.questions_per_update,
                  group_size=preset.group_size)  # fmt: skip
    if name == "sft":
        values.update(episodes=preset.sft_episodes, epochs=preset.sft_epochs)
    elif name == "ppo":
        values.update(questions_per_update=batch, group_size=1)
    elif name == "sb3_ppo":
        # SB3 counts one timestep per agent and round.
        rounds, agents = base.get("max_rounds", 3), base.get("num_agents", 3)
        values["total_timesteps"] = preset.updates * batch * rounds * agents
    return configure(cls, **values)


def learning_curve(history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """History records -> ``[{"step": agent steps so far, "team_accuracy": ...}]``."""
    steps = np.cumsum([h.get("agent_steps", 0) for h in history])
    return [
        {"step": float(s), "team_accuracy": float(h["team_accuracy"])}
        for s, h in zip(steps, history)
        if "team_accuracy" in h
    ]


def run_compare(
    preset: str = "quick",
    out: str | Path = "runs/compare",
    profile: str = "llama3.1-8b/gsm8k",
    tasks: str = "arithmetic:2000",
    seed: int = 0,
    methods: tuple[str, ...] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and write ``out/results.{json,md}`` and plots; returns the results."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    out = Path(out)
    base = {"profile": profile, "tasks": tasks, "seed": seed}
    train_cfg = configure(TrainConfig, **base)
    _, eval_tasks = split_tasks(train_cfg)
    policies: dict[str, Any] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    timings: dict[str, float] = {}
    for name in methods or p.methods:
        cfg = method_config(name, p, {**base, "out": str(out / name)})
        _, train = get_algorithm(name).load()
        start = time.perf_counter()
        policy, history = train(cfg, progress=progress)
        timings[name] = time.perf_counter() - start
        policies[name] = policy
        if history and "agent_steps" in history[0]:
            curves[name] = learning_curve(history)
        if progress:
            print(f"trained {name} in {timings[name]:.0f} s")
    for name in PROTOCOLS:
        policies[name] = make_protocol(name, seed=seed) if name == "random" else make_protocol(name)
    config = {"preset": preset, **dataclasses.asdict(p), **base, "train_seconds": timings}
    results = compare(
        policies, train_cfg.env_config(), eval_tasks, p.seeds, p.eval_episodes, out, config, curves
    )
    (out / "learning_curves.json").write_text(json.dumps(curves))
    return results


def print_results(results: dict[str, Any]) -> None:
    print(markdown_table(results))
