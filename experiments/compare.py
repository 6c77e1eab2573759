"""The main job, `deliberate compare`: train every learned method on the simulated
benchmark, evaluate them with every heuristic protocol and the oracle on held-out
questions over several seeds, and write the table, the JSON and the plots.

`compare` is the evaluation half, usable with any policies (``{name: policy}``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from algorithms.common import TRAIN_TASKS, TrainConfig, check_env, split_tasks
from algorithms.evaluate import evaluate
from algorithms.heuristics import applicable_protocols, make_protocol
from algorithms.policy import Policy
from algorithms.registry import ALGORITHMS, Algorithm, get_algorithm
from algorithms.tracking import log_results, make_tracker, tracked_train
from deliberation_env import EnvConfig
from deliberation_env.config import DEFAULT_PROFILE
from deliberation_env.tasks import Task
from experiments.budgets import DEFAULT_BUDGET, Budget, get_budget
from experiments.pipeline import learning_curve, method_config
from experiments.report import jsonable, markdown_table, write_results
from experiments.stats import aggregate, mean_ci

__all__ = [
    "METHODS",
    "aggregate",
    "compare",
    "evaluate_runs",
    "markdown_table",
    "mean_ci",
    "print_results",
    "run_compare",
]

METHODS = ("softrankpo", "grpo", "ppo", "sb3_ppo", "sft", "agentprune", "gptswarm", "dylan")
"""The learned methods `run_compare` trains by default (the last three: the topology
baselines, `algorithms.topology_methods`)."""


def evaluate_runs(
    policies: Policy | Sequence[Policy],
    env: EnvConfig,
    tasks: Sequence[Task],
    seeds: Sequence[int],
    episodes: int,
) -> list[dict[str, Any]]:
    """One `evaluate` run of `env` on `tasks` per seed. A list of policies (one per training seed) is cycled
    over the seeds: run r uses ``policies[r % len(policies)]`` (`Budget.train_seeds`)."""
    group = list(policies) if isinstance(policies, (list, tuple)) else [cast(Policy, policies)]
    runs: list[dict[str, Any] | None] = [None] * len(seeds)
    for k, policy in enumerate(group):
        mine = [r for r in range(len(seeds)) if r % len(group) == k]
        if mine:
            out = evaluate(policy, env, tasks, [seeds[r] for r in mine], episodes)
            for r, run in zip(mine, out):
                runs[r] = run
    return [r for r in runs if r is not None]


def _tasks_digest(tasks: Sequence[Task]) -> str:
    return hashlib.sha1("\n".join(t.id for t in tasks).encode()).hexdigest()[:12]


def compare(
    methods: Mapping[str, Policy | Sequence[Policy]],
    env: EnvConfig,
    tasks: Sequence[Task],
    seeds: Sequence[int] = (0, 1, 2),
    episodes: int = 1000,
    out: Path | str | None = None,
    config: Mapping[str, Any] | None = None,
    learning_curves: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
) -> dict[str, Any]:
    """Evaluate every method on `env` with the same questions (`tasks`, in place of the
    env's) and seeds, and aggregate.

    A method is a policy, or a list of policies (one per training seed, `evaluate_runs`).
    Returns ``{"config": {...}, "methods": {NAME: aggregate(...)}}`` and, when `out` is
    given, writes there ``results.json`` (that dict), ``results.md`` (`markdown_table`),
    ``action_shares.png``, ``accuracy_vs_tokens.png`` and, when `learning_curves` (name
    -> ``[{"step", "team_accuracy"}, ...]``) is given, ``learning_curves.png``.
    """
    check_env(env, "compare")
    run_config = {
        **dict(config or {}),
        "env": {f.name: getattr(env, f.name) for f in dataclasses.fields(env) if f.name != "tasks"},
        "seeds": [int(s) for s in seeds],
        "episodes": int(episodes),
        "num_tasks": len(tasks),
        "tasks_digest": _tasks_digest(tasks),
    }
    results: dict[str, Any] = {"config": jsonable(run_config), "methods": {}}
    for name, policy in methods.items():
        summary = aggregate(evaluate_runs(policy, env, tasks, seeds, episodes))
        first = policy[0] if isinstance(policy, (list, tuple)) else policy
        summary["env_overrides"] = dict(getattr(first, "env_overrides", {}) or {})
        results["methods"][name] = jsonable(summary)
    if out is not None:
        write_results(results, out, learning_curves)
    return results


TrainResult = tuple[list[Policy], list[dict[str, Any]], float]
"""A method's policies (one per training seed), first seed's history, and seconds."""


def _train(
    algorithm: Algorithm,
    budget: Budget,
    env: EnvConfig,
    out: Path,
    seed: int,
    where: Path,
    progress: bool,
    track: str | None = None,
) -> tuple[Policy, list[dict[str, Any]], float]:
    """One training run of `algorithm` with `seed`, written to `where` under `out`:
    (policy, history, seconds); `track`: it logs to its own tracker in its folder
    (`algorithms.tracking`)."""
    _, train = algorithm.load()
    name = algorithm.name
    ALGORITHMS.setdefault(name, algorithm)  # a worker process: the caller's registry entry
    start = time.perf_counter()
    cfg = method_config(name, budget, env, seed=seed, out=str(where))
    policy, history = tracked_train(
        train, cfg, track, where, name=name, run_name=str(where.relative_to(out)),
        group=str(out), progress=progress,
    )  # fmt: skip
    return policy, history, time.perf_counter() - start


def _train_all(
    methods: Sequence[str],
    budget: Budget,
    env: EnvConfig,
    out: Path,
    seeds: Sequence[int],
    progress: bool,
    track: str | None,
    workers: int,
) -> dict[str, TrainResult]:
    """Every method once per training seed (``OUT/METHOD``, or ``OUT/METHOD/seedS`` with
    several seeds), in this process when `workers` is 1, else as one job per run on a pool
    of `workers` spawned processes (no forked torch state; no progress bars). The trainers
    seed themselves, so a run learns the same policy either way. A worker gets the
    method's registry entry, so a method the caller registered trains there too (its
    module must import in a fresh process)."""
    runs = [
        (get_algorithm(m), seed, out / m if len(seeds) == 1 else out / m / f"seed{seed}")
        for m in methods
        for seed in seeds
    ]
    done: dict[tuple[str, int], tuple[Policy, list[dict[str, Any]], float]] = {}

    def finished(name: str, seed: int, result: tuple[Policy, list[dict[str, Any]], float]) -> None:
        done[name, seed] = result
        if progress and all((name, s) in done for s in seeds):
            seconds = sum(done[name, s][2] for s in seeds)
            print(f"trained {name} in {seconds:.0f} s")

    if workers <= 1 or len(runs) <= 1:
        for a, seed, where in runs:
            finished(a.name, seed, _train(a, budget, env, out, seed, where, progress, track))
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {
                pool.submit(_train, a, budget, env, out, seed, where, False, track): (a.name, seed)
                for a, seed, where in runs
            }
            for future in concurrent.futures.as_completed(futures):
                finished(*futures[future], future.result())
    return {
        m: (
            [done[m, s][0] for s in seeds],
            done[m, seeds[0]][1],
            sum(done[m, s][2] for s in seeds),
        )
        for m in methods
    }


def run_compare(
    budget: str | Budget = DEFAULT_BUDGET,
    out: str | Path = "runs/compare",
    profile: str = DEFAULT_PROFILE,
    tasks: str = TRAIN_TASKS,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    progress: bool = True,
    track: str | None = None,
    workers: int = 1,
    *,
    preset: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate and write ``out/results.{json,md}`` and plots; returns the results.

    `budget` is a `BUDGETS` name or a `Budget` (`preset` is its older name). Every method
    trains on ``EnvConfig(profile=profile, tasks=tasks)`` and is evaluated on the held-out
    questions of those tasks. The learned methods train with seeds ``seed + s`` for each
    `s` in ``budget.train_seeds``; `seed` also seeds the `random` protocol. `track`
    (``tensorboard`` or ``wandb``, `algorithms.tracking`) logs every training run in its
    own folder and the results table (text and scalars per method) in `out`. `workers`
    runs that many training runs (method, seed) at once in spawned processes (0: one per
    CPU core); the results are the same as with 1, which trains them one after another in
    this process. Workers are spawned, so a script that calls this with `workers` > 1
    needs Python's ``if __name__ == "__main__":`` guard.
    """
    name = preset if preset is not None else budget
    b = get_budget(name)
    out = Path(out)
    env = EnvConfig(profile=profile, tasks=tasks)
    _, eval_tasks = split_tasks(TrainConfig(env=env))
    policies: dict[str, Any] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    timings: dict[str, float] = {}
    train_seeds = [seed + s for s in b.train_seeds]
    names = list(methods or METHODS)
    workers = workers or os.cpu_count() or 1
    trained_by = _train_all(names, b, env, out, train_seeds, progress, track, workers)
    for method in names:  # the caller's order, whatever order they finished in
        trained, history, timings[method] = trained_by[method]
        policies[method] = trained if len(trained) > 1 else trained[0]
        if history and "agent_steps" in history[0]:
            curves[method] = learning_curve(history)
    for p in applicable_protocols(env):  # verifier_threshold only with a verifier
        policies[p] = make_protocol(p, seed=seed) if p == "random" else make_protocol(p)
    config = {
        "budget": name if isinstance(name, str) else "custom",
        **dataclasses.asdict(b),
        "methods": names,
        "profile": profile,
        "tasks": tasks,
        "seed": seed,
        "train_seconds": timings,
    }
    results = compare(
        policies, env, eval_tasks, b.eval_seeds, b.eval_episodes, out,
        config, curves,
    )  # fmt: skip
    (out / "learning_curves.json").write_text(json.dumps(curves))
    log_results(make_tracker(track, out, name="compare", group=str(out)), results)
    return results


def print_results(results: Mapping[str, Any]) -> None:
    print(markdown_table(results))
