"""Running a suite: one cell per (task, method, seed), each a pure function of its
description (`run_cell`), so a serial loop, a local process pool and Ray tasks give the
same JSON; cells are written as they finish and a rerun with ``resume`` skips them.

A learned cell trains the method's default config under the task's budget
(`experiments.pipeline.method_config`) and evaluates it on the held-out questions with
the cell's evaluation seed; a baseline cell (every heuristic protocol and the oracle)
only evaluates. Training runs on `CountingSimulatedBackend`, the simulator that also
counts the LLM calls it serves, so each cell reports its budget in agent-steps and in
simulated LLM calls.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agents.simulated import SimulatedBackend
from algorithms.evaluate import evaluate
from algorithms.heuristics import PROTOCOLS, applicable_protocols, make_protocol
from algorithms.registry import ALGORITHMS, get_algorithm
from algorithms.tracking import make_tracker, tracked_train
from deliberation_env.backends import register_backend
from deliberation_env.protocol import BatchView, SolutionBatch
from experiments.bench.suite import BenchProtocol, BenchTask
from experiments.pipeline import method_config, split
from experiments.report import jsonable

Kind = Literal["learned", "baseline"]

COUNTING_BACKEND = "bench-simulated"
"""The backend name training runs on: the simulator, counting its calls."""


# --------------------------------------------------------------------------- LLM calls
class CountingSimulatedBackend(SimulatedBackend):
    """`SimulatedBackend` that counts the requests it serves in `CALLS` (per process):
    what a real LLM would have been asked during training. Same answers as the simulator."""

    def solve_batch(self, view: BatchView) -> SolutionBatch:
        CALLS["solve"] += len(view.keys)
        return super().solve_batch(view)

    def refine_batch(self, view: BatchView) -> SolutionBatch:
        CALLS["refine"] += len(view.keys)
        return super().refine_batch(view)


CALLS = {"solve": 0, "refine": 0}
"""Requests served by `CountingSimulatedBackend` in this process (a cell resets them)."""

register_backend(COUNTING_BACKEND, CountingSimulatedBackend)


# --------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """A method in a bench run: a registered learned algorithm or a protocol (a
    heuristic, or the oracle); `imports` are the user modules that register it."""

    name: str
    kind: Kind
    imports: tuple[str, ...] = ()


def resolve_methods(specs: Sequence[str]) -> list[Method]:
    """``--algo`` values -> methods: a registered learned method, a protocol's name, or a
    module path (``my_pkg.my_algo``; ``my_pkg.my_algo:NAME`` picks one) whose import
    registers algorithms (`algorithms.registry.register_algorithm`) or protocols."""
    out: list[Method] = []
    for spec in specs:
        if spec in ALGORITHMS:
            out.append(Method(spec, "learned"))
        elif spec in PROTOCOLS:
            out.append(Method(spec, "baseline"))
        else:
            out.extend(_from_module(spec))
    unique: dict[str, Method] = {}
    for m in out:
        unique.setdefault(m.name, m)
    return list(unique.values())


def _from_module(spec: str) -> list[Method]:
    module, _, name = spec.partition(":")
    before = set(PROTOCOLS)
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ValueError(
            f"--algo {spec!r} is neither a registered algorithm ({', '.join(ALGORITHMS)}), "
            f"a protocol ({', '.join(PROTOCOLS)}) nor an importable module ({err})"
        ) from None
    learned = [a.name for a in ALGORITHMS.values() if a.module == module]
    protocols = [p for p in PROTOCOLS if p not in before]
    methods = [Method(n, "learned", (module,)) for n in learned]
    methods += [Method(p, "baseline", (module,)) for p in protocols]
    if name:
        methods = [m for m in methods if m.name == name]
    if not methods:
        raise ValueError(
            f"module {module!r} registered no method{f' named {name!r}' if name else ''}: "
            "call algorithms.registry.register_algorithm(NAME, __name__, CONFIG) at its "
            "bottom (docs/new_algorithm.md)"
        )
    return methods


def baselines() -> list[Method]:
    """Every registered heuristic protocol and the oracle: in every report."""
    return [Method(p, "baseline") for p in PROTOCOLS]


# --------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One unit of work: train (learned methods) and evaluate `method` on `task`."""

    suite: str
    task: BenchTask
    protocol: BenchProtocol
    method: Method
    seed: int
    track: tuple[str, str] | None = None
    """``(tracker kind, log folder)`` of a learned cell under ``--track``; not part of
    `describe`, so tracking changes neither the cell's JSON nor what resume matches."""

    @property
    def path(self) -> str:
        """Where the cell's JSON lives under the run's folder."""
        return f"cells/{self.task.slug}/{self.method.name}/seed{self.seed}.json"

    def describe(self) -> dict[str, Any]:
        """What defines the cell's result (a resumed run checks it matches)."""
        return jsonable({
            "suite": self.suite, "task": dataclasses.asdict(self.task),
            "protocol": dataclasses.asdict(self.protocol), "method": self.method.name,
            "kind": self.method.kind, "seed": self.seed,
        })  # fmt: skip


def make_cells(
    suite: str,
    tasks: Sequence[BenchTask],
    protocol: BenchProtocol,
    methods: Sequence[Method],
    seeds: Sequence[int],
    track: str | None = None,
    out: Path | None = None,
) -> list[Cell]:
    """Every (task, method, seed), but a protocol only on the tasks it can run
    (`applicable_protocols`: ``verifier_threshold`` needs a verifier). With `track`, each
    learned cell logs its training under ``out/cells/TASK/METHOD/seedS/``."""
    cells = []
    for t in tasks:
        runnable = set(applicable_protocols(t.env(protocol)))
        for m in methods:
            if m.kind == "learned" or m.name in runnable:
                cells += [Cell(suite, t, protocol, m, int(s)) for s in seeds]
    if track is not None and out is not None:
        cells = [
            dataclasses.replace(c, track=(track, str(out / Path(c.path).with_suffix(""))))
            if c.method.kind == "learned"
            else c
            for c in cells
        ]
    return cells


def run_cell(cell: Cell) -> dict[str, Any]:
    """Train (learned) and evaluate one cell; a JSON-able dict, a pure function of `cell`
    but for ``seconds``."""
    for module in cell.method.imports:
        importlib.import_module(module)
    start = time.perf_counter()
    env = cell.task.env(cell.protocol)
    _, held_out = split(env.tasks)
    train: dict[str, Any] | None = None
    if cell.method.kind == "learned":
        budget = cell.protocol.budget([cell.seed])
        cfg = method_config(
            cell.method.name, budget, dataclasses.replace(env, backend=COUNTING_BACKEND),
            seed=cell.seed,
        )  # fmt: skip
        _, train_fn = get_algorithm(cell.method.name).load()
        CALLS.update(solve=0, refine=0)
        if cell.track is None:
            policy, history = train_fn(cfg, progress=False)
        else:
            kind, folder = cell.track
            policy, history = tracked_train(
                train_fn, cfg, kind, folder, name=cell.method.name, run_name=cell.path,
                group=str(Path(folder).parents[3]), progress=False,
            )  # fmt: skip
        logged = sum(int(h.get("agent_steps", 0)) for h in history)
        train = {
            "agent_steps": logged or cell.task.agent_steps(cell.protocol),
            "budget_agent_steps": cell.task.agent_steps(cell.protocol),
            "llm_calls": CALLS["refine"],
            "solve_calls": CALLS["solve"],
            "seconds": time.perf_counter() - start,
        }
    else:
        # The random protocol draws from the cell's seed; the others are deterministic.
        seeded = {"seed": cell.seed} if cell.method.name == "random" else {}
        policy = make_protocol(cell.method.name, **seeded)
    run = evaluate(policy, env, held_out, (cell.seed,), cell.protocol.eval_episodes)[0]
    keys = ("team_accuracy", "agent_accuracy", "consensus_rate", "tokens_per_question",
            "rounds_per_question", "action_shares")  # fmt: skip
    result = {k: run[k] for k in keys}
    # REFINE requests the policy issued: the LLM calls of an evaluation question.
    result["llm_calls_per_question"] = run["effective_counts"]["refine"] / run["episodes"]
    return jsonable({
        "cell": cell.describe(), "train": train, "eval": result,
        "seconds": time.perf_counter() - start,
    })  # fmt: skip


# --------------------------------------------------------------------------- executors
Executor = Callable[[Sequence[Cell]], Iterator[tuple[Cell, dict[str, Any]]]]


def serial(cells: Sequence[Cell]) -> Iterator[tuple[Cell, dict[str, Any]]]:
    for cell in cells:
        yield cell, run_cell(cell)


def process_pool(workers: int) -> Executor:
    """Cells on a local `concurrent.futures.ProcessPoolExecutor` (spawned workers: no
    forked torch state), yielded as they finish."""

    def run(cells: Sequence[Cell]) -> Iterator[tuple[Cell, dict[str, Any]]]:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(run_cell, c): c for c in cells}
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()

    return run


def ray_tasks(address: str | None, num_cpus: int | None = None) -> Executor:
    """Cells as Ray tasks (the ``[ray]`` extra). Joins the running Ray instance if this
    process has one, else ``ray.init(address)`` (``"local"``: a new local instance with
    `num_cpus`). The cluster's workers must import this package (install it there)."""

    def run(cells: Sequence[Cell]) -> Iterator[tuple[Cell, dict[str, Any]]]:
        try:
            import ray
        except ImportError as err:
            raise SystemExit(
                f"--ray-address needs Ray: pip install 'deliberation-env[ray]' ({err})"
            ) from None
        if not ray.is_initialized():
            local = address in (None, "local")
            ray.init(
                address=None if local else address, num_cpus=num_cpus if local else None,
                include_dashboard=False, log_to_driver=False,
            )  # fmt: skip
        remote = ray.remote(num_cpus=1)(run_cell)
        pending = {remote.remote(c): c for c in cells}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)

    return run


def make_executor(workers: int = 1, ray_address: str | None = None) -> Executor:
    if ray_address is not None:
        return ray_tasks(ray_address, workers if workers > 1 else None)
    return process_pool(workers) if workers > 1 else serial


# --------------------------------------------------------------------------- the run
def read_cell(path: Path) -> dict[str, Any] | None:
    """A finished cell's JSON, or None (missing, or cut short by a kill)."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "eval" in data else None


def write_cell(out: Path, cell: Cell, result: dict[str, Any]) -> None:
    """Atomically: a killed run leaves either no file or a whole one."""
    path = out / cell.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)


def pending_cells(out: Path, cells: Iterable[Cell], resume: bool) -> list[Cell]:
    """The cells still to run. A finished cell of another definition (another protocol
    or task definition in the same folder) is an error, not silently reused."""
    todo = []
    for cell in cells:
        done = read_cell(out / cell.path)
        if done is None:
            todo.append(cell)
            continue
        if not resume:
            raise SystemExit(
                f"{out} already holds results ({cell.path}): pass --resume to continue that "
                "run, or choose another --out"
            )
        if done["cell"] != cell.describe():
            raise SystemExit(
                f"{out / cell.path} was made with another definition of its cell (suite, "
                "task or protocol differ): use another --out"
            )
    return todo


def run_cells(
    out: Path,
    cells: Sequence[Cell],
    executor: Executor = serial,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run the cells not yet finished under `out`, writing each as it finishes, with a
    tqdm bar over all cells; returns every cell's result by path."""
    from tqdm.auto import tqdm

    todo = pending_cells(out, cells, resume)
    with tqdm(total=len(cells), initial=len(cells) - len(todo), disable=not progress,
              desc="bench cells", unit="cell") as bar:  # fmt: skip
        for cell, result in executor(todo):
            write_cell(out, cell, result)
            bar.set_postfix_str(f"{cell.task.name} {cell.method.name} s{cell.seed}", refresh=False)
            bar.update()
    results = {}
    for cell in cells:
        data = read_cell(out / cell.path)
        if data is None:
            raise RuntimeError(f"cell {cell.path} did not finish")
        results[cell.path] = data
    return results


def run_bench(
    suite: str,
    algos: Sequence[str],
    out: Path | str,
    seeds: int | Sequence[int] = 3,
    tasks: Sequence[str] = ("*",),
    workers: int = 1,
    ray_address: str | None = None,
    resume: bool = False,
    protocol: str | None = None,
    reps: int = 2000,
    poi_reps: int = 200,
    progress: bool = True,
    track: str | None = None,
) -> dict[str, Any]:
    """Run every (task, method, seed) cell of `suite` not yet under `out` and write the
    report there; returns it. `algos` are ``--algo`` values (`resolve_methods`); every
    heuristic protocol and the oracle are always run. Tasks whose profile is not
    registered are skipped and listed in the report. `track` (``tensorboard`` or
    ``wandb``, `algorithms.tracking`) logs each learned cell's training in its folder and
    the aggregate table in `out`."""
    from experiments.bench.report import build_report, write_report
    from experiments.bench.suite import ProfileNotRegistered, get_suite

    start = time.perf_counter()
    s = get_suite(suite)
    p = s.get_protocol(protocol)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(x) for x in seeds]
    if not seed_list:
        raise ValueError("--seeds must be at least 1")
    chosen, skipped = [], {}
    for task in s.select(tasks):
        try:
            task.profile()
        except ProfileNotRegistered as err:
            skipped[task.name] = str(err)
            continue
        chosen.append(task)
    if not chosen:
        raise SystemExit(f"no task of {suite} can run: {'; '.join(skipped.values())}")
    requested = resolve_methods(algos)
    learned = [m for m in requested if m.kind == "learned"]
    # After resolve_methods: a user's protocols are registered, and keep their imports.
    by_name = {m.name: m for m in requested}
    base = [by_name.get(m.name, m) for m in baselines()]
    methods = [*learned, *base]
    out = Path(out)
    cells = make_cells(s.name, chosen, p, methods, seed_list, track, out)
    executor = make_executor(workers, ray_address)
    finished = run_cells(out, cells, executor, resume, progress)
    results = {(c.task.name, c.method.name, c.seed): finished[c.path] for c in cells}
    map_fn: Callable[..., Any] = map
    pool = None
    if workers > 1 and len(learned) >= 2:  # enough pairs to repay spawning workers
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
        map_fn = pool.map
    try:
        report = build_report(
            s.name, p, chosen, [m.name for m in learned], [m.name for m in base], seed_list,
            results, reps, poi_reps, map_fn, skipped,
        )  # fmt: skip
    finally:
        if pool is not None:
            pool.shutdown()
    seconds = [r["seconds"] for r in finished.values()]
    wall = time.perf_counter() - start
    report["timing"] = {
        "wall_seconds": wall, "cell_seconds_total": float(sum(seconds)),
        "cell_seconds_mean": float(sum(seconds) / len(seconds)), "cells": len(cells),
        "workers": workers, "runner": "ray" if ray_address else "pool" if workers > 1 else "serial",
    }  # fmt: skip
    write_report(report, out, wall)
    tracker = make_tracker(track, out, name="bench", group=str(out))
    if tracker is not None:
        with tracker:
            tracker.log_config({"suite": s.name, "protocol": dataclasses.asdict(p),
                                "algos": list(algos), "seeds": seed_list})  # fmt: skip
            tracker.log_table("report", report_rows(report))
    return report


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method of the report's aggregate table (its normalised-score metrics,
    mean and interval ends), for a tracker's table."""
    rows = []
    for name, entry in report["methods"].items():
        row: dict[str, Any] = {"method": name}
        for metric, value in entry.get("aggregate", {}).items():
            if isinstance(value, dict) and "mean" in value:
                row[metric] = value["mean"]
                lo, hi = value.get("ci95", (None, None))
                row[f"{metric}_lo"], row[f"{metric}_hi"] = lo, hi
        rows.append(row)
    return rows
