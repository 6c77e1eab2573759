"""The statistics of `experiments.fidelity`: one pure function from a debate's answers to
its counts (`deliberation_stats`, used alike for a real transcript and for the simulator),
Wilson intervals, and the cells that put real beside simulated.

Conventions. ``answers[q, r, i]`` is agent i's answer id at round r (0 = initial answers)
on question q: equal ids on one question are the same answer, -1 is unparseable (it agrees
with nobody, as in `deliberation_env.voting`). ``correct`` has the same shape. Round r >= 1
is one REFINE by every agent, who saw every peer's round r-1 answer. The vote is the
plurality of parsed answers, ties to the answer of the lowest-indexed holder (``"first"``,
as Du et al.'s ``most_frequent``). A count is ``{"k": successes, "n": trials}``.
"""

from __future__ import annotations

import copy
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import binomtest

from deliberation_env.voting import agreement, plurality, winner_correct

__all__ = [
    "CONFIDENCE",
    "annotate",
    "cell_counts",
    "cells",
    "delta_cell",
    "deliberation_stats",
    "paired_delta_ci",
    "phi_coefficient",
    "proportion_cell",
    "split_label",
    "wilson",
]

CONFIDENCE = 0.95
_TOL = 1e-12
_LATER_ROUND = re.compile(r"_r\d+$")


def _count(k: Any, n: Any) -> dict[str, int]:
    return {"k": int(k), "n": int(n)}


# ---------------------------------------------------------------------- the one statistic
def deliberation_stats(answers: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Counts of a debate ``[Q, R+1, N]``: accuracy, vote and unanimity per round; per
    round r >= 1 the fix / break counts by the number of right peers at r-1, adoption and
    keeping; the initial splits and the vote after the last round by split."""
    answers, correct = np.asarray(answers, np.int64), np.asarray(correct, bool)
    if answers.ndim != 3 or answers.shape != correct.shape:
        raise ValueError(
            f"answers {answers.shape} and correct {correct.shape} must both be [Q, R+1, N]"
        )
    Q, R1, N = answers.shape
    flat = answers.reshape(Q * R1, N)
    same = agreement(flat)
    winner = plurality(same, np.zeros(flat.shape, np.float64), "first")
    vote = winner_correct(correct.reshape(Q * R1, N), winner).reshape(Q, R1)
    unanimous = (same.all(axis=(1, 2)) & (flat >= 0).all(1)).reshape(Q, R1)
    return {
        "questions": Q,
        "agents": N,
        "rounds": R1 - 1,
        "agent_accuracy": [_count(correct[:, r].sum(), Q * N) for r in range(R1)],
        "vote_accuracy": [_count(vote[:, r].sum(), Q) for r in range(R1)],
        "unanimous": [_count(unanimous[:, r].sum(), Q) for r in range(R1)],
        "transitions": [_transitions(answers, correct, r) for r in range(1, R1)],
        "splits": _splits(answers[:, 0], correct[:, 0], vote),
        "vote_change": {
            "both": int((vote[:, 0] & vote[:, -1]).sum()),
            "gained": int((~vote[:, 0] & vote[:, -1]).sum()),
            "lost": int((vote[:, 0] & ~vote[:, -1]).sum()),
            "neither": int((~vote[:, 0] & ~vote[:, -1]).sum()),
        },
    }


def _transitions(answers: np.ndarray, correct: np.ndarray, r: int) -> dict[str, Any]:
    """Round r's REFINE outcomes, from the state after round r-1."""
    a0, a1, c0, c1 = answers[:, r - 1], answers[:, r], correct[:, r - 1], correct[:, r]
    N = a0.shape[1]
    peers_right = c0.sum(1, keepdims=True) - c0
    fix = [
        _count((~c0 & (peers_right == j) & c1).sum(), (~c0 & (peers_right == j)).sum())
        for j in range(N)
    ]
    brk = [
        _count((c0 & (peers_right == j) & ~c1).sum(), (c0 & (peers_right == j)).sum())
        for j in range(N)
    ]
    dissent = np.zeros_like(c0)
    adopted = np.zeros_like(c0)
    if N >= 3:
        for i in range(N):
            peers = [p for p in range(N) if p != i]
            ref = a0[:, peers[0]]
            agree = (ref >= 0) & (a0[:, peers] == ref[:, None]).all(1)
            dissent[:, i] = agree & (a0[:, i] != ref)
            adopted[:, i] = dissent[:, i] & (a1[:, i] == ref)
    unanimous = ((a0 == a0[:, :1]).all(1) & (a0[:, 0] >= 0))[:, None] & np.ones_like(c0)
    kept = a1 == a0
    return {
        "fix": fix,
        "break": brk,
        "adopt_agreeing_peers": _count(adopted.sum(), dissent.sum()),
        "keep_agreeing": _count((unanimous & kept).sum(), unanimous.sum()),
        "unchanged": _count(kept.sum(), kept.size),
    }


def split_label(row: np.ndarray) -> str:
    """The answer groups of one question's answers, largest first: ``"3"`` (unanimous),
    ``"2-1"``, ``"1-1-1"``; each unparseable answer is a group of its own."""
    sizes = Counter(int(a) for a in row if a >= 0)
    groups = sorted([*sizes.values(), *([1] * int((row < 0).sum()))], reverse=True)
    return "-".join(str(g) for g in groups)


def _splits(first: np.ndarray, right: np.ndarray, vote: np.ndarray) -> dict[str, Any]:
    """Per initial split: questions, vote right at round 0 and after the last round, and
    the same by how many agents were right initially (``"1"`` of a 2-1: the minority)."""
    out: dict[str, Any] = {}
    for q in range(first.shape[0]):
        label = split_label(first[q])
        s = out.setdefault(
            label, {"questions": 0, "vote_initial": 0, "vote_final": 0, "by_right": {}}
        )
        s["questions"] += 1
        s["vote_initial"] += int(vote[q, 0])
        s["vote_final"] += int(vote[q, -1])
        b = s["by_right"].setdefault(str(int(right[q].sum())), {"questions": 0, "vote_final": 0})
        b["questions"] += 1
        b["vote_final"] += int(vote[q, -1])
    for s in out.values():
        s["by_right"] = dict(sorted(s["by_right"].items()))
    return dict(sorted(out.items(), key=lambda kv: [-int(g) for g in kv[0].split("-")]))


# ---------------------------------------------------------------------- intervals
def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of ``k / n`` (scipy's `binomtest(...).proportion_ci`);
    (nan, nan) for n = 0."""
    if n <= 0:
        return math.nan, math.nan
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def phi_coefficient(both: int, gained: int, lost: int, neither: int) -> float:
    """The phi correlation of before/after correctness in a paired 2x2 table, with
    Newcombe's continuity correction (the numerator ``ad - bc`` less n/2 when above n/2,
    0 in between, kept when negative); 0 when a margin is empty."""
    n = both + gained + lost + neither
    margins = (both + lost) * (gained + neither) * (both + gained) * (lost + neither)
    cross = both * neither - gained * lost
    corrected = cross - n / 2 if cross > n / 2 else min(cross, 0)
    return 0.0 if margins == 0 else float(corrected / math.sqrt(margins))


def paired_delta_ci(
    after: int, before: int, n: int, phi: float = 0.0, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Interval of ``(after - before) / n`` for two proportions on the same n items:
    Newcombe's (1998) method 10, the hybrid score interval built from the two Wilson
    intervals and the pairs' `phi_coefficient` (phi = 0 when only the margins are known:
    wider when the pairs are positively correlated, as they are here)."""
    p1, p0 = after / n, before / n
    l1, u1 = wilson(after, n, confidence)
    l0, u0 = wilson(before, n, confidence)
    low = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u0 - p0) + (u0 - p0) ** 2
    high = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p0 - l0) + (p0 - l0) ** 2
    delta = p1 - p0
    return delta - math.sqrt(max(low, 0.0)), delta + math.sqrt(max(high, 0.0))


def annotate(stats: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `stats` with ``rate`` and Wilson ``ci95`` beside every count."""
    out = copy.deepcopy(dict(stats))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"k", "n"}:
                node["rate"] = node["k"] / node["n"] if node["n"] else None
                node["ci95"] = list(wilson(node["k"], node["n"])) if node["n"] else None
                return
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(out)
    return out


# ---------------------------------------------------------------------- cells
def cell_counts(stats: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """``name -> (k, n)`` of every transition cell: ``fix_JofM``, ``break_JofM`` (J of the
    M = N-1 peers right; ``fix_no_peers`` for N = 1), ``adopt_agreeing_pair``
    (``adopt_agreeing_peers`` for N > 3, none for N < 3); rounds after the first carry the
    suffix ``_rR``."""
    m = stats["agents"] - 1
    adopt = "adopt_agreeing_pair" if m == 2 else "adopt_agreeing_peers"
    out: dict[str, tuple[int, int]] = {}
    for r, t in enumerate(stats["transitions"], start=1):
        suffix = "" if r == 1 else f"_r{r}"
        for kind in ("fix", "break"):
            for j, c in enumerate(t[kind]):
                peers = f"{j}of{m}" if m else "no_peers"
                out[f"{kind}_{peers}{suffix}"] = (c["k"], c["n"])
        if m >= 2:
            out[adopt + suffix] = (t["adopt_agreeing_peers"]["k"], t["adopt_agreeing_peers"]["n"])
    return out


def proportion_cell(name: str, k: int, n: int, simulated: float | None) -> dict[str, Any]:
    """One cell: the real rate with its Wilson interval beside the simulated rate."""
    lo, hi = wilson(k, n)
    sim = math.nan if simulated is None else float(simulated)
    return {
        "name": name,
        "real": k / n,
        "real_ci": [lo, hi],
        "real_n": int(n),
        "simulated": sim,
        "inside_ci": bool(lo - _TOL <= sim <= hi + _TOL),
    }


def delta_cell(
    name: str, after: int, before: int, n: int, phi: float, simulated: float
) -> dict[str, Any]:
    """A change of a rate over the same n questions, with its `paired_delta_ci`."""
    lo, hi = paired_delta_ci(after, before, n, phi)
    return {
        "name": name,
        "real": (after - before) / n,
        "real_ci": [lo, hi],
        "real_n": int(n),
        "simulated": float(simulated),
        "inside_ci": bool(lo - _TOL <= simulated <= hi + _TOL),
    }


def vote_delta(stats: Mapping[str, Any]) -> tuple[int, int, int, float]:
    """``(right after the last round, right initially, questions, phi)`` of the vote."""
    v = stats["vote_change"]
    after, before = v["both"] + v["gained"], v["both"] + v["lost"]
    return after, before, stats["questions"], phi_coefficient(**v)


def cells(real: Mapping[str, Any], simulated: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Real beside simulated, cell by cell: the transition cells of round 1, then
    ``vote_delta_last_round`` (vote accuracy after the last round minus the initial vote's),
    then the later rounds' cells. Cells the real debate never met (n = 0) are left out."""
    real_c, sim_c = cell_counts(real), cell_counts(simulated)
    out = []
    for name, (k, n) in real_c.items():
        sk, sn = sim_c.get(name, (0, 0))
        if n > 0:
            out.append(proportion_cell(name, k, n, sk / sn if sn else None))
    after, before, q, phi = vote_delta(real)
    s_after, s_before, s_q, _ = vote_delta(simulated)
    first = sum(1 for c in out if not _LATER_ROUND.search(c["name"]))
    out.insert(
        first,
        delta_cell("vote_delta_last_round", after, before, q, phi, (s_after - s_before) / s_q),
    )
    return out
