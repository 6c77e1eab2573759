"""`deliberate reproduce EXPERIMENT`: the MPDF paper's experiments by name (`EXPERIMENTS`),
each run into a folder as ``results.json``, ``results.md`` and PNG figures; every number
is a mean over seeds with a Student-t 95% interval (docs/reproduction.md).

``reproduce(name, setup, out)`` runs one experiment; ``render_experiment(name, out)``
rebuilds its Markdown and figures from ``out/results.json`` without training
(``--render-only``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from experiments.budgets import DEFAULT_BUDGET, Budget, get_budget
from experiments.paper import (
    action_shift,
    backbones,
    main_table,
    reward_scale,
    rounds_agents,
    tau_sweep,
    tokens,
)
from experiments.paper.setup import Setup
from experiments.report import jsonable, read_json, write_json


class Experiment(Protocol):
    """A paper experiment module: ``run`` trains and evaluates, ``render`` writes
    ``results.md`` and figures from the results alone (it may be given them back from
    ``results.json``)."""

    NAME: str

    def run(self, setup: Setup, /, **options: Any) -> dict[str, Any]: ...

    def render(self, results: Mapping[str, Any], out: Path, /) -> list[Path]: ...


EXPERIMENTS: dict[str, Experiment] = {
    m.NAME: m
    for m in (main_table, backbones, reward_scale, tau_sweep, rounds_agents, action_shift, tokens)
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def reproduce(name: str, setup: Setup, out: str | Path, **options: Any) -> dict[str, Any]:
    """Run experiment `name` with `setup` (and its own `options`, e.g. ``benchmarks=``)
    and write ``out/results.json``, ``results.md`` and figures; returns the results as
    saved. The Markdown and figures are drawn from the saved JSON, so ``--render-only``
    redraws them identically."""
    experiment = get_experiment(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads(json.dumps(jsonable(experiment.run(setup, **options))))
    written = experiment.render(results, out)
    results["files"] = ["results.json", *(p.name for p in written)]
    write_json(out / "results.json", results)
    check = getattr(experiment, "check", None)
    if callable(check):
        check(results)
    return dict(results)


def render_experiment(name: str, out: str | Path) -> list[Path]:
    """Rebuild ``results.md`` and the figures of experiment `name` from
    ``out/results.json``, without training."""
    experiment = get_experiment(name)
    out = Path(out)
    results = read_json(out / "results.json")
    if results.get("experiment") != name:
        raise ValueError(
            f"{out / 'results.json'} holds experiment {results.get('experiment')!r}, not "
            f"{name!r}: pass that experiment's folder as --out"
        )
    return experiment.render(results, out)


def run_experiment(
    name: str, out: str | Path | None = None, budget: str | Budget = DEFAULT_BUDGET, **setup: Any
) -> dict[str, Any]:
    """Run experiment `name` into `out` (default ``runs/reproduce/NAME``) with `budget`
    (a `BUDGETS` name or a `Budget`); `setup` holds `Setup` fields."""
    get_experiment(name)
    torch.set_num_threads(1)  # the meta-policy is tiny: threads only add synchronisation
    return reproduce(
        name, Setup(budget=get_budget(budget), **setup), out or f"runs/reproduce/{name}"
    )
