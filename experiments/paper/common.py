"""What the paper experiments share: policies for table rows (protocols and cached learned
methods), their evaluation on held-out questions, and the results' common fields."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from algorithms.heuristics import make_protocol
from algorithms.policy import Policy
from deliberation_env import EnvConfig
from experiments.compare import evaluate_runs
from experiments.paper.setup import LEARNED, PAPER, Setup
from experiments.pipeline import learned, split
from experiments.stats import metric


def start(name: str, setup: Setup) -> tuple[tuple[float, float], dict[str, Any]]:
    """The clock of experiment `name` and its results' common fields."""
    setup.log(f"[{name}] budget {dataclasses.asdict(setup.budget)}")
    results = {"experiment": name, "config": setup.describe(), "notes": setup.notes(),
               "paper": PAPER}  # fmt: skip
    return (time.perf_counter(), time.process_time()), results


def clock(start: tuple[float, float]) -> dict[str, float]:
    """Wall and CPU seconds since `start`: on a shared machine the CPU time is the
    steadier measure of an experiment's cost."""
    return {
        "wall_seconds": time.perf_counter() - start[0],
        "cpu_seconds": time.process_time() - start[1],
    }


def protocol(name: str) -> Policy:
    return make_protocol(name, seed=0) if name == "random" else make_protocol(name)


def evaluate_policies(
    setup: Setup, policies: Policy | Sequence[Policy], env: EnvConfig
) -> list[dict[str, Any]]:
    """Runs of `policies` (one per training seed) on the held-out questions of the cell
    `env` (on the evaluating backend), one per evaluation seed of the budget."""
    _, eval_tasks = split(env.tasks)
    seeds = setup.budget.eval_seeds
    return evaluate_runs(policies, setup.eval_config(env), eval_tasks, seeds, setup.eval_episodes)


def evaluate_rows(
    setup: Setup, rows: Sequence[str], env: EnvConfig
) -> dict[str, list[dict[str, Any]]]:
    """Train (cached) on the cell `env` and evaluate each row on its held-out questions:
    row -> runs. The oracle is skipped on a real backend (its look-ahead is defined for the
    simulator only)."""
    policies: dict[str, Policy | list] = {}
    for row in rows:  # train every row first, then evaluate (the log reads in that order)
        if row in LEARNED:
            policies[row] = learned(setup, row, env)
        elif row != "oracle" or setup.simulated:
            policies[row] = protocol(row)
    return {row: evaluate_policies(setup, p, env) for row, p in policies.items()}


def accuracy_and_tokens(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Team accuracy and tokens per question over seeds (`experiments.stats.metric`)."""
    return {
        "team_accuracy": metric(runs),
        "tokens_per_question": metric(runs, "tokens_per_question"),
    }


def summary_row(run: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar metrics of one evaluation run (per-round detail dropped)."""
    return {k: v for k, v in run.items() if isinstance(v, (int, float))}
