"""Plurality voting on answer ids, for the whole team and for every leave-one-out subset.

Two agents agree when they hold the same parsed answer (an unparseable answer agrees with
nobody and receives no vote). Ties between answers with equally many holders are broken by
`tie_break`: ``"confidence"`` (highest summed verbalised confidence of the holders),
``"first"`` (the answer of the lowest-indexed holder) or ``"random"``.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, get_args

import numpy as np

TieBreak = Literal["confidence", "first", "random"]
"""How `plurality` breaks ties between answers with equally many holders."""
TIE_BREAKS: tuple[TieBreak, ...] = get_args(TieBreak)
Vote = Literal["plurality", "weighted"]
"""How the team answer is chosen: most holders, or highest summed confidence."""
VOTES: tuple[Vote, ...] = get_args(Vote)
_BIG = 1e6  # vote counts dominate; the tie-break term stays below 1e3
_SMALL_SUM = 64  # `sum_small` reduces arrays up to this size in one call


@functools.lru_cache(maxsize=16)
def _rows(B: int) -> np.ndarray:
    """``arange(B)``, built once per batch size (read-only: shared by every caller)."""
    rows = np.arange(B)
    rows.flags.writeable = False
    return rows


def sum_small(x: np.ndarray, axis: int = -1, dtype: type = np.int32) -> np.ndarray:
    """Sum over a short axis (agents) by slab-wise adds: numpy's reductions over axes of
    size 2-8 cost far more per element than a few whole-array additions. A small integer
    array (one env) takes one reduction instead: fewer calls, the same exact sum."""
    if x.size <= _SMALL_SUM and x.dtype.kind in "biu":
        return np.add.reduce(x, axis=axis, dtype=dtype)
    ax = axis % x.ndim
    lead: tuple[Any, ...] = (slice(None),) * ax  # indexing: far cheaper than np.moveaxis
    out = x[lead + (0,)].astype(dtype)
    for k in range(1, x.shape[ax]):
        out += x[lead + (k,)]
    return out


def max_small(x: np.ndarray) -> np.ndarray:
    """``x.max(-1)`` over a short last axis (agents) by slab-wise `np.maximum` (the same
    values: a maximum is exact); a reduction's per-row cost dominates there."""
    if x.size <= _SMALL_SUM:
        return np.maximum.reduce(x, axis=-1)
    out = x[..., 0].copy()  # a new array, as max's
    for j in range(1, x.shape[-1]):
        out = np.maximum(out, x[..., j])
    return out


def argmax_small(x: np.ndarray) -> np.ndarray:
    """``np.argmax(x, -1)`` over a short last axis by slab-wise comparisons: the first
    index of the maximum, as argmax (which picks the first NaN: such input takes it)."""
    if x.size <= _SMALL_SUM or (x.dtype.kind == "f" and np.isnan(x).any()):
        return np.argmax(x, axis=-1)
    best = x[..., 0]
    index = np.zeros(best.shape, np.intp)
    for j in range(1, x.shape[-1]):
        value = x[..., j]
        better = value > best
        index[better] = j
        best = np.where(better, value, best)
    return index


def holder_sums(same: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """``[B, N]``: summed `confidence` of the holders of each agent's answer,
    ``einsum("bij,bj->bi", same, confidence)``. Up to 3 agents by slab-wise adds (einsum
    costs far more on a bool operand), which sum in einsum's order; from 4 on einsum's
    vectorised loop sums in another order, so it runs itself (bit-identical either way)."""
    if same.shape[-1] > 3:
        return np.einsum("bij,bj->bi", same, confidence)
    out = same[..., 0] * confidence[:, None, 0]
    for j in range(1, same.shape[-1]):
        out += same[..., j] * confidence[:, None, j]
    return out


def agreement(answer: np.ndarray) -> np.ndarray:
    """``[B, N, N]`` bool: agents i and j hold the same parsed answer."""
    parsed = answer >= 0  # UNPARSED is -1
    return (answer[:, :, None] == answer[:, None, :]) & parsed[:, :, None]


def _tie_term(same: np.ndarray, confidence: np.ndarray, tie_break: str, noise: np.ndarray | None):
    """Secondary score of each holder ``[B, N]`` (larger wins), before leave-one-out."""
    if tie_break == "confidence":
        return holder_sums(same, confidence)
    N = same.shape[-1]
    if tie_break == "first":
        # The answer whose first holder has the lowest index wins: score each holder by the
        # index of its answer group's first member.
        first = np.argmax(same, axis=-1)
        return (N - first).astype(np.float64)
    if tie_break == "random":
        if noise is None:
            raise ValueError("tie_break='random' needs noise")
        return noise
    raise ValueError(f"tie_break {tie_break!r} is not one of {TIE_BREAKS}")


def plurality(
    same: np.ndarray,
    confidence: np.ndarray,
    tie_break: str,
    noise: np.ndarray | None = None,
    vote: str = "plurality",
) -> np.ndarray:
    """Index ``[B]`` of an agent holding the team answer; -1 when no answer parsed.

    ``vote="weighted"`` ranks answers by the summed confidence of their holders instead
    of their number (RECONCILE's confidence-weighted vote); the number breaks ties.
    """
    count = sum_small(same)
    if vote == "weighted":
        score = holder_sums(same, confidence.astype(np.float64)) * _BIG + count
    else:
        score = count * _BIG + _tie_term(same, confidence, tie_break, noise)
    score = np.where(count > 0, score, -np.inf)
    winner = argmax_small(score)
    return np.where(max_small(count) > 0, winner, -1)


def leave_one_out(
    same: np.ndarray,
    confidence: np.ndarray,
    tie_break: str,
    noise: np.ndarray | None = None,
    vote: str = "plurality",
) -> np.ndarray:
    """``[B, N]``: for each agent i, an agent holding the plurality answer of the team
    without i (-1 when none of the others parsed an answer)."""
    B, N, _ = same.shape
    eye = np.eye(N, dtype=bool)
    # count[b, i, j]: holders of j's answer once i is removed.
    count = holders = sum_small(same)[:, None, :] - same.transpose(0, 2, 1)
    if tie_break == "confidence" or vote == "weighted":
        tie = holder_sums(same, confidence)[:, None, :] - (
            same.transpose(0, 2, 1) * confidence[:, :, None]
        )
        if vote == "weighted":
            count, tie = tie, count  # the confidence sum decides, the number breaks ties
    elif tie_break == "first":
        # First holder of j's answer among agents other than i.
        idx = np.where(same[:, None, :, :] & ~eye[None, :, None, :], np.arange(N), N)
        tie = (N - idx.min(-1)).astype(np.float64)
    else:
        tie = np.broadcast_to(_tie_term(same, confidence, tie_break, noise)[:, None, :], (B, N, N))
    score = np.where((holders > 0) & ~eye, count * _BIG + tie, -np.inf)
    winner = argmax_small(score)
    return np.where(np.isfinite(max_small(score)), winner, -1)


def holds(same: np.ndarray, winner: np.ndarray) -> np.ndarray:
    """``[B, N]`` bool: agent holds the answer of `winner` ([B])."""
    rows = same[_rows(same.shape[0]), np.maximum(winner, 0)]
    return rows & (winner >= 0)[:, None]


def winner_correct(correct: np.ndarray, winner: np.ndarray) -> np.ndarray:
    """Correctness of the answer held by `winner` (any shape of leading axes over [B, N])."""
    B = correct.shape[0]
    index = np.maximum(winner, 0).reshape(B, -1)
    return correct[_rows(B)[:, None], index].reshape(winner.shape) & (winner >= 0)
