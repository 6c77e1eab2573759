"""Statistics over evaluation seeds: the Student-t 95% interval of a mean, and `aggregate`,
which turns the per-seed runs of `algorithms.evaluate.evaluate` into means with intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

RUN_INFO = ("seed", "episodes", "num_agents", "max_rounds")
"""Keys of a run that describe it rather than measure it (not aggregated)."""

SHARES = ("action_shares", "effective_shares")
"""Share dicts of a run that `aggregate` averages over seeds, overall and per round."""


def mean_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lo, hi): the Student-t interval of the mean over seeds (lo = hi = mean for
    one value or identical values)."""
    x = np.asarray(values, np.float64)
    mean = float(x.mean())
    if len(x) < 2 or np.ptp(x) == 0:
        mean = float(x[0])  # exact, where summing could move the last bit
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def interval(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """``{"mean", "ci95": [lo, hi]}`` of `values` (a paired difference, say)."""
    mean, lo, hi = mean_ci(values)
    return {"mean": mean, "ci95": [lo, hi]}


def summary(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """``{"mean", "ci95": [lo, hi], "values"}``: one metric over seeds."""
    return {**interval(values), "values": [float(v) for v in values]}


def metric(runs: Sequence[Mapping[str, Any]], key: str = "team_accuracy") -> dict[str, Any]:
    """`summary` of metric `key` over per-seed runs."""
    return summary([float(r[key]) for r in runs])


def mean_shares(shares: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Share dicts averaged key by key."""
    return {k: float(np.mean([s[k] for s in shares])) for k in shares[0]}


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine per-seed runs of `evaluate`: every scalar metric becomes ``{"mean", "ci95":
    [lo, hi], "values"}`` (Student-t over seeds), ``action_shares`` and ``effective_shares``
    (also per round) are averaged, ``accuracy_per_round`` gets a mean and interval per
    round."""
    if not runs:
        raise ValueError("aggregate() needs at least one run (pass evaluate()'s output)")
    first = runs[0]
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    out.update({k: first[k] for k in RUN_INFO if k != "seed"})
    for key, value in first.items():
        if key in RUN_INFO:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = summary([r[key] for r in runs])
    for key in SHARES:
        if key not in first:
            continue
        out[key] = mean_shares([r[key] for r in runs])
        rounds = [r[f"{key}_per_round"] for r in runs]
        # With stop_on_consensus a run may play fewer rounds: average the runs that played.
        out[f"{key}_per_round"] = [
            mean_shares([p[t] for p in rounds if len(p) > t])
            for t in range(max(len(p) for p in rounds))
        ]
    accuracy = np.array([r["accuracy_per_round"] for r in runs], np.float64)
    cis = [mean_ci(accuracy[:, t]) for t in range(accuracy.shape[1])]
    out["accuracy_per_round"] = {
        "mean": [m for m, _, _ in cis],
        "ci95": [[lo, hi] for _, lo, hi in cis],
    }
    return out


def half_width(metric: Mapping[str, Any]) -> float:
    """Half the width of a metric's 95% interval (the ``±`` of the tables)."""
    lo, hi = metric["ci95"]
    return float(hi - lo) / 2


def by_accuracy(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The methods of a comparison, best mean team accuracy first."""
    methods = results["methods"]
    return sorted(methods.items(), key=lambda kv: -kv[1]["team_accuracy"]["mean"])


def best_heuristic(by_row: Mapping[str, Mapping[str, Any]], candidates: Sequence[str]) -> str:
    """The candidate with the highest mean team accuracy. It is picked on the evaluation
    itself, which favours the baseline: a conservative comparison for the learned rows."""
    present = [c for c in candidates if c in by_row]
    return max(present, key=lambda c: by_row[c]["team_accuracy"]["mean"])


def pareto_front(tokens: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both axes (fewer or equal tokens and
    higher or equal accuracy, one strictly), by increasing tokens."""
    order = sorted(range(len(tokens)), key=lambda i: (tokens[i], -accuracy[i]))
    front, best = [], -math.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front
