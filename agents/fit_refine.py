"""The REFINE part of `agents.fit.fit_profile`: fix and break rates by peer situation, then
the redraw and conformity rates.

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


def _fit_redraw(est: Estimates, refines: Refines, agreement: float) -> None:
    """Stayed wrong, answer parsed, and no other wrong answer pulling (no modal wrong answer
    among the peers, or it is mine): the answer is the old one unless redrawn, and a redraw
    lands on it again with chance `agreement`. P(same) = 1 - redraw * (1 - agreement)."""
    same = draws = chance = 0.0
    for r, p, c in refines.rows():
        modal, _ = _modal(r)
        own = r.get("prev_answer")
        if p or c or own is None or modal not in (None, own) or r["answer"] is None:
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


def _fit_conform_break(est: Estimates, refines: Refines, pi: Chance, parsed: float) -> None:
    """A broken right answer facing a modal wrong answer: that one with probability
    conform_break, else a fresh draw.  E[hit] = parsed * (cb + (1 - cb) q)."""
    follow = follow_chance = 0.0
    n_follow = 0
    for r, p, c in refines.rows():
        modal, _ = _modal(r)
        if modal is None or c or not p:
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
