"""Scores of a bench run: per-task normalised scores, and suite aggregates with stratified
bootstrap intervals through `rliable` (Agarwal et al. 2021, "Deep Reinforcement Learning
at the Edge of the Statistical Precipice", arXiv 2108.13264): IQM, mean, median,
optimality gap, performance profiles and probabilities of improvement.

Normalised score of a method on a task, per seed s::

    (acc_s - acc_SC_s) / (mean_s acc_oracle - mean_s acc_SC)

0 is self-consistency (the plurality vote of N independent answers), 1 the oracle (the
ceiling of a meta-policy with this backend). The numerator is paired: seed s of every
method plays the same held-out episodes, so the vote's own luck on them cancels; the
denominator, the task's headroom, is the mean over seeds.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

ZERO, ONE = "self_consistency", "oracle"
"""The methods that score 0 and 1 on every task."""

METRICS = ("iqm", "mean", "median", "optimality_gap")
"""Aggregates of the report, in `aggregate_fn`'s order."""

TAUS = np.linspace(-1.0, 1.5, 51)
"""Thresholds of the performance profiles (normalised score)."""


def rliable() -> tuple[Any, Any]:
    """``(rliable.library, rliable.metrics)``; the ``[bench]`` extra installs it."""
    try:
        from rliable import library, metrics
    except ImportError as err:
        raise SystemExit(
            f"the bench report needs rliable: pip install 'deliberation-env[bench]' ({err})"
        ) from None
    return library, metrics


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """rliable 1.2 hands `arch` a RandomState, which arch deprecates: not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
        yield


def matrices(
    results: Mapping[tuple[str, str, int], Mapping[str, Any]],
    methods: Sequence[str],
    tasks: Sequence[str],
    seeds: Sequence[int],
    key: str,
) -> dict[str, np.ndarray]:
    """Eval metric `key` per method as ``[seeds, tasks]`` (rliable's runs x tasks), from
    cell results keyed by (task, method, seed); NaN where a method did not run."""
    nan = {"eval": {key: np.nan}}
    return {
        m: np.array([[float(results.get((t, m, s), nan)["eval"][key]) for t in tasks]
                     for s in seeds])
        for m in methods
    }  # fmt: skip


def headroom(accuracy: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per task, ``mean acc_oracle - mean acc_SC`` over seeds ``[tasks]``; NaN where the
    oracle does not beat self-consistency (the task cannot rank methods)."""
    gap = accuracy[ONE].mean(0) - accuracy[ZERO].mean(0)
    return np.where(gap > 0, gap, np.nan)


def normalise(accuracy: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Normalised scores ``[seeds, tasks]`` of every method (the module docstring)."""
    gap = headroom(accuracy)
    return {m: (a - accuracy[ZERO]) / gap for m, a in accuracy.items()}


def aggregate_fn(metrics: Any) -> Callable[[np.ndarray], np.ndarray]:
    """rliable's four aggregates of a ``[runs, tasks]`` score matrix, in `METRICS` order."""

    def fn(scores: np.ndarray) -> np.ndarray:
        return np.array([
            metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores),
            metrics.aggregate_median(scores), metrics.aggregate_optimality_gap(scores),
        ])  # fmt: skip

    return fn


def _interval(point: float, lo: float, hi: float) -> dict[str, Any]:
    return {"mean": float(point), "ci95": [float(lo), float(hi)]}


def aggregates(
    scores: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{method: {metric: {"mean", "ci95": [lo, hi]}}}``: rliable's stratified bootstrap
    over seeds within tasks and over tasks (``task_bootstrap=True``), percentile 95%
    intervals, `reps` resamples, reproducible through `seed`."""
    library, metrics = rliable()
    with _quiet():
        point, interval = library.get_interval_estimates(
            dict(scores), aggregate_fn(metrics), reps=reps, task_bootstrap=True,
            random_state=np.random.RandomState(seed),
        )  # fmt: skip
    return {
        m: {
            name: _interval(point[m][k], interval[m][0][k], interval[m][1][k])
            for k, name in enumerate(METRICS)
        }
        for m in scores
    }


def probability_of_improvement(
    scores: Mapping[str, np.ndarray],
    contenders: Sequence[str],
    reps: int = 200,
    seed: int = 0,
    map_fn: Callable[..., Any] = map,
) -> dict[str, dict[str, Any]]:
    """``{"A>B": {"mean", "ci95"}}`` for every ordered pair of `contenders`: rliable's
    `probability_of_improvement` (the Mann-Whitney U statistic per task, averaged over
    tasks) with its stratified independent bootstrap interval.

    Each unordered pair is bootstrapped once: ``P(B > A) = 1 - P(A > B)`` exactly (ties
    count one half), and the interval mirrors under the same resamples. rliable's metric
    costs ~1.5 ms per task and resample (scipy's mannwhitneyu), hence the modest default
    `reps` and the pairs of contenders only; `map_fn` may be a process pool's map.
    """
    names = list(dict.fromkeys(contenders))
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    jobs = [(a, b, scores[a], scores[b], reps, seed) for a, b in pairs]
    out: dict[str, dict[str, Any]] = {}
    for (a, b), (p, lo, hi) in zip(pairs, map_fn(_poi, *zip(*jobs)) if jobs else []):
        out[f"{a}>{b}"] = _interval(p, lo, hi)
        out[f"{b}>{a}"] = _interval(1 - p, 1 - hi, 1 - lo)
    return out


def _poi(
    a: str, b: str, x: np.ndarray, y: np.ndarray, reps: int, seed: int
) -> tuple[float, float, float]:
    library, metrics = rliable()
    with _quiet():
        point, interval = library.get_interval_estimates(
            {f"{a},{b}": (x, y)}, metrics.probability_of_improvement, reps=reps,
            random_state=np.random.RandomState(seed),
        )  # fmt: skip
    ci = np.asarray(interval[f"{a},{b}"]).ravel()
    return float(point[f"{a},{b}"]), float(ci[0]), float(ci[1])


def performance_profiles(
    scores: Mapping[str, np.ndarray], reps: int = 500, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Score distributions (the fraction of runs, over seeds and tasks, scoring above each
    threshold in `TAUS`) with bootstrap bands: what `rliable.library.
    create_performance_profile` computes, called through `get_interval_estimates` so that
    a `random_state` makes the bands reproducible."""
    library, _ = rliable()
    with _quiet():
        point, interval = library.get_interval_estimates(
            dict(scores), lambda s: library.score_distributions(s, TAUS), reps=reps,
            random_state=np.random.RandomState(seed),
        )  # fmt: skip
    return {
        m: {"tau": TAUS.tolist(), "fraction": np.asarray(point[m]).tolist(),
            "ci95": np.asarray(interval[m]).tolist()}
        for m in scores
    }  # fmt: skip
