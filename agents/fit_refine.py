"""The REFINE part of `agents.fit.fit_profile`, for the base profile's `refine_model`.

v1 (`fit_refine_v1`): conformity to a strict peer majority, fix and break rates by share of
right peers net of it, the no-peer rates, the redraw and broken-answer rates. v0: fix and
break rates by peer situation, then the redraw and conformity rates.

Each estimate inverts the simulator's story (`SimulatedBackend.refine_batch`), so fitting
records of a simulated profile recovers that profile. A wrong answer drawn afresh can equal
the old one or the peers' modal one by chance: `pi` is that chance, the fitted popularity
weight of the answer's rank among the question's wrong initial answers; an output is
unparseable with probability ``unparsed_wrong``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # agents.fit imports this module; its accumulator is a type-only dependency
    from agents.fit import Estimates

Chance = Callable[[str, Any], float]
"""``pi(task_id, answer)``: the chance that a fresh wrong draw lands on `answer`."""


@dataclass(frozen=True)
class Refines:
    """Refine records with the arrays every estimate reads, one entry per record."""

    records: list[dict]
    share: np.ndarray
    """Share of the refiner's peers that were right."""
    prev: np.ndarray
    """The refiner's answer before the call was right."""
    now: np.ndarray
    """Its answer after the call is right."""

    @classmethod
    def of(cls, records: list[dict]) -> Refines:
        return cls(
            records,
            np.array([np.mean(r["peers_correct"]) if r["peers_correct"] else 0.0 for r in records]),
            np.array([r["prev_correct"] for r in records], bool),
            np.array([r["correct"] for r in records], bool),
        )

    def rows(self) -> Iterator[tuple[dict, bool, bool]]:
        """``(record, right before, right after)`` for every record."""
        return zip(self.records, self.prev, self.now)


def fit_refine(est: Estimates, records: list[dict], counts: dict[str, Counter]) -> None:
    """Fit every REFINE rate from `records` (refines with a known ``prev_correct``).

    `counts` are the wrong initial answers per question (`agents.fit._wrong_counts`); the
    distractor weights fitted so far give the chance terms.
    """
    if est.base.refine_model == "v1":
        fit_refine_v1(est, records, counts)
        return
    fitted = est.profile()
    refines = Refines.of(records)
    _fit_fix_rates(est, refines)
    _fit_break_rates(est, refines)
    if any("prev_answer" in r for r in records):
        weights = fitted.distractor_decay ** np.arange(fitted.distractors)
        weights = weights / weights.sum()
        # A refiner's own wrong answer was itself drawn from the distractors, so a fresh
        # draw equals it with the pair agreement (ranking it by counts that include it
        # would not).
        _fit_redraw(est, refines, agreement=float((weights**2).sum()))
        pi, parsed = _chance(weights, counts), 1.0 - fitted.unparsed_wrong
        _fit_conform_wrong(est, refines, pi, parsed)
        _fit_conform_break(est, refines, pi, parsed)


# ---------------------------------------------------------------------- fix and break
def _hat(share: np.ndarray) -> np.ndarray:
    """Weights ``[M, 3]`` of the knots 0, 0.5, 1 for linear interpolation at `share`."""
    s = np.clip(share, 0.0, 1.0)
    return np.stack(
        [np.maximum(0, 1 - 2 * s), 1 - np.abs(2 * s - 1), np.maximum(0, 2 * s - 1)], axis=1
    )


def _fit_fix_rates(est: Estimates, refines: Refines) -> None:
    """Fix rates at 0, 1/2, all peers right: soft counts on the interpolation knots."""
    share, prev, now = refines.share, refines.prev, refines.now
    w = _hat(share[~prev])
    hits, n = (w * now[~prev, None]).sum(0), w.sum(0)
    est.set(
        "fix_rate",
        tuple(est.shrunk(hits[j], n[j], est.base.fix_rate[j]) for j in range(3)),
        f"fit: {int((~prev).sum())} refines of wrong answers, by share of right peers "
        f"(soft counts {np.round(n, 1).tolist()})",
    )


def _fit_break_rates(est: Estimates, refines: Refines) -> None:
    """Break rates by peer situation; with all peers wrong, by how much they agree."""
    base, records = est.base, refines.records
    share, prev, now = refines.share, refines.prev, refines.now
    broke = prev & ~now
    for key, mask in (("break_all_right", share >= 1), ("break_mixed", (share > 0) & (share < 1))):
        m = prev & mask
        est.set(
            key,
            est.shrunk(broke[m].sum(), m.sum(), getattr(base, key)),
            f"fit: {int(m.sum())} refines of right answers ({key[6:]} peers)",
        )
    idx = np.nonzero(prev & (share <= 0))[0]
    level = np.array([_agree_level(_modal(records[i])[1], len(records[i]["peers_correct"]))
                      for i in idx])  # fmt: skip
    wl = np.stack([1 - level, level], 1) if len(idx) else np.zeros((0, 2))
    hits, n = (wl * broke[idx, None]).sum(0), wl.sum(0)
    source = f"fit: {len(idx)} refines of right answers with all peers wrong, by their agreement"
    est.set("break_wrong_split", est.shrunk(hits[0], n[0], base.break_wrong_split), source)
    est.set("break_wrong_agree", est.shrunk(hits[1], n[1], base.break_wrong_agree), source)


def _modal_wrong(
    answers: Sequence[Any], correct: Sequence[bool], agent: int = 0
) -> tuple[Any, float]:
    """The peers' most common parsed wrong answer and the share of peers holding it.

    Peers are listed from ``agent + 1`` (mod N); ties go to the lowest agent index, as in
    `SimulatedBackend.refine_batch`.
    """
    n = len(answers) + 1
    wrong = sorted(
        ((agent + k) % n, a)
        for k, (a, c) in enumerate(zip(answers, correct), start=1)
        if a is not None and not c
    )
    if not wrong:
        return None, 0.0
    counts = Counter(a for _, a in wrong)
    top = max(counts.values())
    answer = next(a for _, a in wrong if counts[a] == top)
    return answer, top / max(len(answers), 1)


def _modal(record: Mapping[str, Any]) -> tuple[Any, float]:
    return _modal_wrong(
        record.get("peer_answers") or [], record.get("peers_correct") or [], record.get("agent", 0)
    )


def _agree_level(share: float, n_peers: int) -> float:
    """As `SimulatedBackend.refine_batch`: how strongly the wrong peers agree, in [0, 1]."""
    if n_peers <= 1:
        return share
    return float(np.clip((share - 1 / n_peers) / (1 - 1 / n_peers), 0, 1))


# ---------------------------------------------------------------------- redraw and conformity
def _chance(weights: np.ndarray, counts: dict[str, Counter]) -> Chance:
    """`pi`: the weight of an answer's popularity rank among its question's wrong answers."""
    ranks = {
        task: {a: i for i, (a, _) in enumerate(sorted(c.items(), key=lambda x: -x[1]))}
        for task, c in counts.items()
    }

    def pi(task_id: str, answer: Any) -> float:
        rank = ranks.get(task_id, {}).get(answer, len(weights) - 1)
        return float(weights[min(rank, len(weights) - 1)])

    return pi


def _fit_redraw(
    est: Estimates, refines: Refines, agreement: float, keep: np.ndarray | None = None
) -> None:
    """Stayed wrong, answer parsed, and no other wrong answer pulling (v0: no modal wrong
    answer among the peers, or it is mine; v1: the records in `keep`): the answer is the old
    one unless redrawn, and a redraw lands on it again with chance `agreement`.
    P(same) = 1 - redraw * (1 - agreement)."""
    same = draws = chance = 0.0
    for i, (r, p, c) in enumerate(refines.rows()):
        own = r.get("prev_answer")
        if keep is None:
            modal, _ = _modal(r)
            if modal not in (None, own):
                continue
        elif not keep[i]:
            continue
        if p or c or own is None or r["answer"] is None:
            continue
        same += r["answer"] == own
        chance += agreement
        draws += 1
    if draws:
        raw = (1 - same / draws) / max(1 - chance / draws, 1e-6)
        est.set(
            "redraw_wrong",
            float(np.clip(est.shrunk(raw * draws, draws, est.base.redraw_wrong), 0, 1)),
            f"fit: {int(draws)} wrong refiners with no other wrong pull",
        )


def _fit_conform_wrong(est: Estimates, refines: Refines, pi: Chance, parsed: float) -> None:
    """Stayed wrong, facing a modal wrong answer that is not mine: adopted with probability
    conform_wrong * share; otherwise a redraw (always, when mine was unparseable) reaches
    it by chance q.  E[hit] = parsed * (c s + redraw * q), or parsed * (c s + (1 - c s) q)."""
    redraw = est.value("redraw_wrong")
    num = den = 0.0
    n_conform = 0
    for r, p, c in refines.rows():
        modal, s = _modal(r)
        if modal is None or c or p:
            continue
        q = pi(r["task_id"], modal)
        hit = float(r["answer"] == modal)
        own = r.get("prev_answer")
        if own is None:
            num += hit / parsed - q
            den += s * (1 - q)
            n_conform += 1
        elif own != modal:
            num += hit / parsed - redraw * q
            den += s
            n_conform += 1
    if den > 0:
        est.set(
            "conform_wrong",
            float(np.clip(est.shrunk(num, den, est.base.conform_wrong), 0, 1)),
            f"fit: {n_conform} wrong refiners facing a wrong majority",
        )


def _fit_conform_break(
    est: Estimates, refines: Refines, pi: Chance, parsed: float, keep: np.ndarray | None = None
) -> None:
    """A broken right answer facing a modal wrong answer (v1: in `keep`, no majority pulling):
    that one with probability conform_break, else a fresh draw.
    E[hit] = parsed * (cb + (1 - cb) q)."""
    follow = follow_chance = 0.0
    n_follow = 0
    for i, (r, p, c) in enumerate(refines.rows()):
        modal, _ = _modal(r)
        if modal is None or c or not p or (keep is not None and not keep[i]):
            continue
        follow += float(r["answer"] == modal)
        follow_chance += pi(r["task_id"], modal)
        n_follow += 1
    if n_follow:
        q = follow_chance / n_follow
        raw = (follow / n_follow / parsed - q) / max(1 - q, 1e-6)
        est.set(
            "conform_break",
            float(np.clip(est.shrunk(raw * n_follow, n_follow, est.base.conform_break), 0, 1)),
            f"fit: {n_follow} broken answers facing wrong peers",
        )


# ---------------------------------------------------------------------- v1: conformity
@dataclass(frozen=True)
class Pulls:
    """Per refine record: the strict peer majority on another answer X, where there is one."""

    has: np.ndarray
    """A strict majority of the peers holds one parsed answer X, not the refiner's."""
    right: np.ndarray
    """... and X is right."""
    known: np.ndarray
    """`has` could be told (``prev_answer`` recorded, or implied by correctness)."""
    solo: np.ndarray
    """The refiner had no peers."""
    hit: np.ndarray
    """The answer after the call is X."""
    chance: np.ndarray
    """``parsed * pi(X)``: a fresh wrong answer is X and parseable (0 without X)."""

    @classmethod
    def of(cls, records: list[dict], pi: Chance, parsed: float) -> Pulls:
        rows = [_majority(r) for r in records]
        has, right, known, solo = (np.array([row[k] for row in rows], bool) for k in range(1, 5))
        pairs = [(r, row[0]) for r, row in zip(records, rows)]
        hit = np.array([x is not None and r["answer"] == x for r, x in pairs], bool)
        chance = [0.0 if x is None else parsed * pi(r["task_id"], x) for r, x in pairs]
        return cls(has, right, known, solo, hit, np.array(chance, float))


def _majority(r: Mapping[str, Any]) -> tuple[Any, bool, bool, bool, bool]:
    """``(X, has, right, known, solo)`` of one record (see `Pulls`)."""
    correct = r.get("peers_correct") or []
    answers = r.get("peer_answers")
    if not correct:
        return None, False, False, True, True
    if answers is None:
        return None, False, False, False, False
    parsed = [(a, c) for a, c in zip(answers, correct) if a is not None]
    top = Counter(a for a, _ in parsed).most_common(1)
    if not top or 2 * top[0][1] <= len(correct):
        return None, False, False, True, False
    answer = top[0][0]
    right = next(c for a, c in parsed if a == answer)
    if "prev_answer" in r:
        return answer, answer != r["prev_answer"], right, True, False
    differs = bool(right) != bool(r["prev_correct"])  # else mine may be the same answer
    return answer, differs, right, differs, False


def fit_refine_v1(est: Estimates, records: list[dict], counts: dict[str, Counter]) -> None:
    """Fit the v1 REFINE parameters: the no-peer rates, the redraw and broken-answer rates
    (from records with no majority pulling), then conformity and the fix / break rates by
    share of right peers, which depend on each other, to their joint fixed point."""
    fitted = est.profile()
    weights = fitted.distractor_decay ** np.arange(fitted.distractors)
    weights = weights / weights.sum()
    pi, parsed = _chance(weights, counts), 1.0 - fitted.unparsed_wrong
    refines, pulls = Refines.of(records), Pulls.of(records, pi, parsed)
    _fit_solo(est, refines, pulls.solo)
    free = pulls.known & ~pulls.has
    if any("prev_answer" in r for r in records):
        _fit_redraw(est, refines, float((weights**2).sum()), keep=free)
        _fit_conform_break(est, refines, pi, parsed, keep=free & ~pulls.solo)
    unparsed = np.array([r.get("prev_answer") is None for r in records])
    c = est.value("conformity")
    for _ in range(200):
        _fit_fix_break_v1(est, refines, pulls, c)
        new = _fit_conformity(est, refines, pulls, unparsed, parsed)
        if new is None or abs(new - c) < 1e-10:
            break
        c = new


def _fit_solo(est: Estimates, refines: Refines, solo: np.ndarray) -> None:
    if not solo.any():
        return
    prev, now = refines.prev[solo], refines.now[solo]
    base = est.base.solo_rate
    fix = est.shrunk(now[~prev].sum(), (~prev).sum(), base[0])
    brk = est.shrunk((~now[prev]).sum(), prev.sum(), base[1])
    est.set("solo_rate", (fix, brk), f"fit: {int(solo.sum())} refines with no peers")


def _fit_fix_break_v1(est: Estimates, refines: Refines, pulls: Pulls, c: float) -> None:
    """Soft counts on the knots, net of conformity: E[right after | wrong before] =
    c [majority right] + (1 - c [majority]) fix(share), and alike for breaking."""
    use = pulls.known & ~pulls.solo
    w = _hat(refines.share)
    pull = c * pulls.has
    for key, before, outcome, adopt in (
        ("fix_rate", ~refines.prev, refines.now, pulls.has & pulls.right),
        ("break_rate", refines.prev, ~refines.now, pulls.has & ~pulls.right),
    ):
        m = use & before
        hits = (w[m] * (outcome[m] - pull[m] * adopt[m])[:, None]).sum(0)
        n = (w[m] * (1 - pull[m])[:, None]).sum(0)
        prior = getattr(est.base, key)
        est.set(
            key,
            tuple(float(np.clip(est.shrunk(hits[j], n[j], prior[j]), 0, 1)) for j in range(3)),
            f"fit: {int(m.sum())} refines ({key[:-5]}), by share of right peers, net of "
            f"conformity (soft counts {np.round(n, 1).tolist()})",
        )


def _fit_conformity(
    est: Estimates, refines: Refines, pulls: Pulls, unparsed: np.ndarray, parsed: float
) -> float | None:
    """Refiners facing a majority on X: E[answer = X] = c + (1 - c) q, q the chance that the
    path without conformity gives X: fixed (X right), broken to X (I was right), redrawn
    onto X (I was wrong). Right refiners facing another right answer are left out."""
    m = pulls.known & pulls.has & ~(refines.prev & pulls.right)
    if not m.any():
        return None
    share, prev, right, chance = refines.share[m], refines.prev[m], pulls.right[m], pulls.chance[m]
    fix = np.interp(share, (0.0, 0.5, 1.0), est.value("fix_rate"))
    brk = np.interp(share, (0.0, 0.5, 1.0), est.value("break_rate"))
    cb, redraw = est.value("conform_break"), est.value("redraw_wrong")
    rewrite = np.where(unparsed[m], 1.0, redraw)
    q = np.where(
        right,
        fix,
        np.where(prev, brk * (parsed * cb + (1 - cb) * chance), (1 - fix) * rewrite * chance),
    )
    hit = np.where(right, refines.now[m], pulls.hit[m])
    num, den = float((hit - q).sum()), float((1 - q).sum())
    if den <= 0:
        return None
    value = float(np.clip(est.shrunk(num, den, est.base.conformity), 0, 1))
    est.set("conformity", value, f"fit: {int(m.sum())} refiners facing a peer majority")
    return value
