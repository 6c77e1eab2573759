"""Calibrate the simulated backend from recorded real runs: records -> `SimProfile`.

Record once with a real LLM (on a GPU), then train meta-policies cheaply on a simulator
whose numbers came from that run: ``SimulatedBackend.fit(records)``.

Record schema
-------------
One record per LLM call (a SOLVE at round 0 or a REFINE), a plain ``dict``:

=====================  =================  ==================================================
key                    type               meaning
=====================  =================  ==================================================
``task_id``            str                `Task.id`
``kind``               str                `Task.kind` (numeric | math | choice | code)
``round``              int                0 for solve; the round the REFINE was played in (1..T)
``agent``              int                agent index
``action``             str                ``"solve"`` or ``"refine"``
``answer``             str | None         normalised answer after the call; None = unparseable
``correct``            bool | None        the answer is right (None: cannot be checked; skipped)
``self_confidence``    float              verbalised confidence in [0, 1]
``judge_confidence``   float              judge confidence in [0, 1]
``logprob_confidence`` float | None       answer log-prob confidence, where available
``steps``              int                reasoning profile
``operators``          int                reasoning profile
``prompt_tokens``      int
``completion_tokens``  int
``prev_answer``        str | None         refine: the agent's answer before the call (else None)
``prev_correct``       bool | None        refine: that answer was right (solve: None)
``peer_answers``       list | None        refine: peers' answers (None entries = unparseable),
                                          in the request's order (agent+1, agent+2, ... mod N)
``peers_correct``      list[bool] | None  refine: peers' correctness, same order
=====================  =================  ==================================================

Extra keys are ignored. ``prev_answer`` may be missing (older records): conformity and
redraw rates are then left at the base profile's values. Sources of records:
`RecordingBackend` (wraps any backend inside an env), `record_from_call` (one text-backend
request and its `Solution`, what the response cache stores), a list of dicts, a JSONL file,
or any object with a ``records()`` method (``agents.cache.ResponseCache``).

What is estimated (each entry of the fitted profile's ``sources`` says from how many
records): accuracy and per-question concentration (beta-binomial method of moments, when
questions were answered more than once), the share of wrong answers that are unparseable,
the popularity of wrong answers (from how often two wrong answers to one question agree),
REFINE fix rates by the share of right peers and break rates by peer situation,
conformity, confidence AUROCs and means, token and reasoning-profile means. Each rate is
shrunk toward the base profile with `prior_strength` pseudo-records, so a situation never
seen keeps the base value. CONCEDE costs no LLM call and is not estimated.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, logit, ndtri
from scipy.stats import rankdata

from agents.profiles import SimProfile, get_profile
from deliberation_env.protocol import (
    BatchBackend,
    BatchView,
    RefineRequest,
    Solution,
    SolutionBatch,
    SolveRequest,
)
from deliberation_env.tasks.task import Task

__all__ = [
    "RECORD_KEYS",
    "RecordingBackend",
    "fit_profile",
    "load_records",
    "record_from_call",
]

RECORD_KEYS = (
    "task_id", "kind", "round", "agent", "action", "answer", "correct", "self_confidence",
    "judge_confidence", "logprob_confidence", "steps", "operators", "prompt_tokens",
    "completion_tokens", "prev_answer", "prev_correct", "peer_answers", "peers_correct",
)  # fmt: skip
_REQUIRED = ("task_id", "action", "answer", "correct")
_MIN_TASKS_FOR_CONCENTRATION = 5


# ---------------------------------------------------------------------- making records
def _check(task: Task, answer: str | None) -> bool | None:
    from deliberation_env.tasks import verify

    try:
        return bool(verify(task, answer))
    except NotImplementedError:  # code tasks until the sandbox exists
        return None


def record_from_call(
    request: SolveRequest | RefineRequest, solution: Solution, round: int | None = None
) -> dict[str, Any]:
    """The record of one text-backend call (what a response cache can store and replay).

    Correctness is checked with `deliberation_env.tasks.verify`; the request carries
    everything else (for a REFINE: the agent's own previous solution and its peers').
    `round` is unknown to a backend; it defaults to 0 for solve and None for refine.
    """
    task = request.task
    record: dict[str, Any] = {
        "task_id": task.id,
        "kind": task.kind,
        "round": round if round is not None else (0 if isinstance(request, SolveRequest) else None),
        "agent": request.agent,
        "action": "solve" if isinstance(request, SolveRequest) else "refine",
        "answer": solution.answer,
        "correct": _check(task, solution.answer),
        "self_confidence": solution.self_confidence,
        "judge_confidence": solution.judge_confidence,
        "logprob_confidence": solution.logprob_confidence,
        "steps": solution.steps,
        "operators": solution.operators,
        "prompt_tokens": solution.prompt_tokens,
        "completion_tokens": solution.completion_tokens,
        "prev_answer": None,
        "prev_correct": None,
        "peer_answers": None,
        "peers_correct": None,
    }
    if isinstance(request, RefineRequest):
        record["prev_answer"] = request.own.answer
        record["prev_correct"] = _check(task, request.own.answer)
        record["peer_answers"] = [p.answer for p in request.peers]
        record["peers_correct"] = [_check(task, p.answer) for p in request.peers]
    return record


class RecordingBackend:
    """Wraps any backend inside an env and keeps one record per LLM call in `records`.

    Works for every backend the env accepts (a name plus its arguments, a text `Backend`,
    a `BatchBackend`), because it sits at the array level, where the core's state before
    the call shows the refiner's previous answer and its peers'::

        rec = RecordingBackend("hf", model="path/to/model")
        env = deliberation_env.parallel_env(backend=rec)
        ...  # play episodes
        sim = SimulatedBackend.fit(rec.records)
    """

    def __init__(self, backend: Any, **kwargs: Any) -> None:
        from deliberation_env.backends import make_backend

        self.inner: BatchBackend = make_backend(backend, **kwargs)
        self.records: list[dict[str, Any]] = []
        self.tasks: list[Task] = []

    @property
    def concede_tokens(self) -> int:
        return self.inner.concede_tokens

    def bind(self, tasks: Sequence[Task], num_agents: int) -> None:
        self.tasks = list(tasks)
        self.inner.bind(tasks, num_agents)

    def solve_batch(self, view: BatchView) -> SolutionBatch:
        batch = self.inner.solve_batch(view)
        self._record(view, batch, refine=False)
        return batch

    def refine_batch(self, view: BatchView) -> SolutionBatch:
        batch = self.inner.refine_batch(view)  # state is still the pre-round state
        self._record(view, batch, refine=True)
        return batch

    def answer_text(self, task_index: int, answer_id: int) -> str | None:
        return self.inner.answer_text(task_index, answer_id)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    def _record(self, view: BatchView, batch: SolutionBatch, refine: bool) -> None:
        state = view.state
        N = state.answer.shape[1]
        text = self.inner.answer_text
        for m, (b, a, t) in enumerate(zip(view.env, view.agent, view.task_index)):
            b, a, t = int(b), int(a), int(t)
            task = self.tasks[t]
            lp = float(batch.logprob_confidence[m])
            record = {
                "task_id": task.id,
                "kind": task.kind,
                "round": int(state.round[b]) + 1 if refine else 0,
                "agent": a,
                "action": "refine" if refine else "solve",
                "answer": text(t, int(batch.answer[m])),
                "correct": bool(batch.correct[m]),
                "self_confidence": float(batch.self_confidence[m]),
                "judge_confidence": float(batch.judge_confidence[m]),
                "logprob_confidence": None if np.isnan(lp) else lp,
                "steps": int(batch.steps[m]),
                "operators": int(batch.operators[m]),
                "prompt_tokens": int(batch.prompt_tokens[m]),
                "completion_tokens": int(batch.completion_tokens[m]),
                "prev_answer": None,
                "prev_correct": None,
                "peer_answers": None,
                "peers_correct": None,
            }
            if refine:
                peers = [(a + k) % N for k in range(1, N)]
                record["prev_answer"] = text(t, int(state.answer[b, a]))
                record["prev_correct"] = bool(state.correct[b, a])
                record["peer_answers"] = [text(t, int(state.answer[b, p])) for p in peers]
                record["peers_correct"] = [bool(state.correct[b, p]) for p in peers]
            self.records.append(record)


def load_records(source: Any) -> list[dict[str, Any]]:
    """Records from a list of dicts, a JSONL path, or an object with ``records()``."""
    if hasattr(source, "records") and callable(source.records):
        items = list(source.records())
    elif isinstance(source, (str, Path)):
        with Path(source).open() as f:
            items = [json.loads(line) for line in f if line.strip()]
    elif isinstance(source, Iterable):
        items = list(source)
    else:
        raise TypeError(
            f"records must be a list of dicts, a JSONL path or have records(); got "
            f"{type(source).__name__}"
        )
    for i, r in enumerate(items):
        if not isinstance(r, Mapping):
            raise TypeError(f"record {i} is a {type(r).__name__}, not a dict")
        missing = [k for k in _REQUIRED if k not in r]
        if missing:
            raise ValueError(
                f"record {i} lacks {missing}; see the schema in agents.fit's docstring"
            )
        if r["action"] not in ("solve", "refine"):
            raise ValueError(f"record {i}: action {r['action']!r} is not 'solve' or 'refine'")
    return [dict(r) for r in items]


# ---------------------------------------------------------------------- estimators
def _auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _shrunk(successes: float, n: float, prior: float, strength: float) -> float:
    return float((successes + strength * prior) / (n + strength))


def _hat(share: np.ndarray) -> np.ndarray:
    """Weights ``[M, 3]`` of the knots 0, 0.5, 1 for linear interpolation at `share`."""
    s = np.clip(share, 0.0, 1.0)
    return np.stack(
        [np.maximum(0, 1 - 2 * s), 1 - np.abs(2 * s - 1), np.maximum(0, 2 * s - 1)], axis=1
    )


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


def _agree_level(share: float, n_peers: int) -> float:
    """As `SimulatedBackend.refine_batch`: how strongly the wrong peers agree, in [0, 1]."""
    if n_peers <= 1:
        return share
    return float(np.clip((share - 1 / n_peers) / (1 - 1 / n_peers), 0, 1))


def _pair_agreement(decay: float, distractors: int) -> float:
    w = decay ** np.arange(distractors)
    return float((w**2).sum() / w.sum() ** 2)


def _concentration(solves: list[dict], accuracy: float) -> tuple[float | None, int]:
    by_task: dict[str, list[bool]] = defaultdict(list)
    for r in solves:
        by_task[r["task_id"]].append(bool(r["correct"]))
    groups = [np.array(v, float) for v in by_task.values() if len(v) >= 2]
    if len(groups) < _MIN_TASKS_FOR_CONCENTRATION or not 0 < accuracy < 1:
        return None, len(groups)
    var = accuracy * (1 - accuracy)
    spread = np.mean([(g.mean() - accuracy) ** 2 for g in groups])
    inv_n = np.mean([1 / len(g) for g in groups])
    rho = (spread - var * inv_n) / (var * (1 - inv_n))
    rho = float(np.clip(rho, 1e-3, 0.999))
    return float(np.clip(1 / rho - 1, 0.05, 1000.0)), len(groups)


def fit_profile(
    records: Any,
    base: str | SimProfile = "llama3.1-8b/gsm8k",
    name: str = "fitted",
    prior_strength: float = 2.0,
    tasks: Sequence[Task] | None = None,
) -> SimProfile:
    """A `SimProfile` estimated from `records` (see the module docstring), `base` elsewhere.

    `tasks` (optional) gives question lengths, so the instruction part of the prompt
    tokens can be told from the question part; without it the base's question length is
    assumed.
    """
    base = get_profile(base)
    rows = [r for r in load_records(records) if r["correct"] is not None]
    if not rows:
        raise ValueError("no usable records (none has a known 'correct'); nothing to fit")
    k = prior_strength
    changes: dict[str, Any] = {}
    sources: dict[str, str] = {}
    solves = [r for r in rows if r["action"] == "solve"]
    refines = [r for r in rows if r["action"] == "refine" and r.get("prev_correct") is not None]

    # -- initial answers --------------------------------------------------------------
    if solves:
        correct = np.array([r["correct"] for r in solves], bool)
        changes["accuracy"] = _shrunk(correct.sum(), len(correct), base.accuracy, k)
        sources["accuracy"] = f"fit: mean correctness of {len(solves)} solve records"
        kappa, n_tasks = _concentration(solves, changes["accuracy"])
        if kappa is not None:
            changes["concentration"] = kappa
            sources["concentration"] = (
                f"fit: beta-binomial method of moments over {n_tasks} questions"
            )
    wrong = [r for r in rows if not r["correct"]]
    if wrong:
        unparsed = sum(r["answer"] is None for r in wrong)
        changes["unparsed_wrong"] = _shrunk(unparsed, len(wrong), base.unparsed_wrong, k)
        sources["unparsed_wrong"] = f"fit: share of None among {len(wrong)} wrong answers"
    counts = _wrong_counts(solves)
    decay = _fit_decay(counts, base)
    if decay is not None:
        changes["distractors"], changes["distractor_decay"], pairs = decay
        sources["distractors"] = "fit: most distinct wrong answers given to one question"
        sources["distractor_decay"] = (
            f"fit: agreement of {pairs} pairs of wrong answers to the same question"
        )

    # -- REFINE transitions -----------------------------------------------------------
    if refines:
        unparsed = changes.get("unparsed_wrong", base.unparsed_wrong)
        profile = base.with_(**changes)  # distractor weights for the chance terms
        changes.update(_fit_refine(refines, counts, profile, base, k, unparsed, sources))

    # -- confidences ------------------------------------------------------------------
    correct = np.array([r["correct"] for r in rows], bool)
    for field in ("self", "judge", "logprob"):
        have = [(r[f"{field}_confidence"], c) for r, c in zip(rows, correct)
                if r.get(f"{field}_confidence") is not None]  # fmt: skip
        if not have:
            continue
        score, pos = np.array([h[0] for h in have], float), np.array([h[1] for h in have])
        auc = _auroc(score, pos)
        if auc is not None:
            changes[f"{field}_auroc"] = float(np.clip(auc, 0.5, 0.999))
            sources[f"{field}_auroc"] = f"fit: AUROC over {len(have)} records"
        if field == "self":
            # The simulator draws logit(conf) = logit(self_mean) + 0.6 (z + d (c - 0.5)).
            d = float(np.sqrt(2.0) * ndtri(changes.get("self_auroc", base.self_auroc)))
            centre = np.mean(logit(np.clip(score, 0.01, 0.99))) - 0.6 * d * (pos.mean() - 0.5)
            changes["self_mean"] = float(expit(centre))
            sources["self_mean"] = f"fit: mean logit of {len(have)} verbalised confidences"

    # -- tokens and reasoning profile -----------------------------------------------------
    changes.update(_fit_lengths(rows, solves, base, tasks, sources))
    sources["base"] = (
        f"every parameter not listed here is profile {base.name!r}'s (see its sources); "
        "CONCEDE makes no LLM call, so concede_tokens is never fitted"
    )
    return base.with_(name=name, sources=sources, **changes)


def _wrong_counts(solves: list[dict]) -> dict[str, Counter]:
    """Per question, how often each parsed wrong initial answer was given."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in solves:
        if not r["correct"] and r["answer"] is not None:
            counts[r["task_id"]][r["answer"]] += 1
    return counts


def _fit_decay(counts: dict[str, Counter], base: SimProfile) -> tuple[int, float, int] | None:
    """(distractors, decay, pairs): the most distinct wrong answers any question got, and the
    geometric decay of their popularity that matches how often two wrong answers to one
    question agree (sum w^2 / (sum w)^2). None with under 20 pairs."""
    pairs = sum(n * (n - 1) // 2 for n in (sum(c.values()) for c in counts.values()))
    same = sum(m * (m - 1) // 2 for c in counts.values() for m in c.values())
    if pairs < 20:
        return None
    distractors = max(2, max(len(c) for c in counts.values()))
    target = same / pairs
    lo, hi = 1e-3, 1.0  # agreement falls from ~1 to 1/distractors as decay grows to 1
    if target <= _pair_agreement(hi, distractors):
        return distractors, hi, pairs
    for _ in range(60):
        mid = (lo + hi) / 2
        if _pair_agreement(mid, distractors) > target:
            lo = mid
        else:
            hi = mid
    return distractors, float((lo + hi) / 2), pairs


def _fit_refine(
    refines: list[dict],
    counts: dict[str, Counter],
    fitted: SimProfile,
    base: SimProfile,
    k: float,
    unparsed: float,
    sources: dict[str, str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    share = np.array([np.mean(r["peers_correct"]) if r["peers_correct"] else 0.0 for r in refines])
    prev = np.array([r["prev_correct"] for r in refines], bool)
    now = np.array([r["correct"] for r in refines], bool)

    # Fix rates at 0, 1/2, all peers right: soft counts on the interpolation knots.
    w = _hat(share[~prev])
    hits, n = (w * now[~prev, None]).sum(0), w.sum(0)
    out["fix_rate"] = tuple(_shrunk(hits[j], n[j], base.fix_rate[j], k) for j in range(3))
    sources["fix_rate"] = (
        f"fit: {int((~prev).sum())} refines of wrong answers, by share of right peers "
        f"(soft counts {np.round(n, 1).tolist()})"
    )

    # Break rates by peer situation; with all peers wrong, by how much they agree.
    broke = prev & ~now
    for key, mask in (("break_all_right", share >= 1), ("break_mixed", (share > 0) & (share < 1))):
        m = prev & mask
        out[key] = _shrunk(broke[m].sum(), m.sum(), getattr(base, key), k)
        sources[key] = f"fit: {int(m.sum())} refines of right answers ({key[6:]} peers)"
    idx = np.nonzero(prev & (share <= 0))[0]
    level = np.array([_agree_level(_modal(refines[i])[1], len(refines[i]["peers_correct"]))
                      for i in idx])  # fmt: skip
    wl = np.stack([1 - level, level], 1) if len(idx) else np.zeros((0, 2))
    hits2, n2 = (wl * broke[idx, None]).sum(0), wl.sum(0)
    out["break_wrong_split"] = _shrunk(hits2[0], n2[0], base.break_wrong_split, k)
    out["break_wrong_agree"] = _shrunk(hits2[1], n2[1], base.break_wrong_agree, k)
    sources["break_wrong_split"] = sources["break_wrong_agree"] = (
        f"fit: {len(idx)} refines of right answers with all peers wrong, by their agreement"
    )
    if any("prev_answer" in r for r in refines):
        out.update(_fit_conformity(refines, prev, now, counts, fitted, base, k, unparsed, sources))
    return out


def _modal(record: Mapping[str, Any]) -> tuple[Any, float]:
    return _modal_wrong(
        record.get("peer_answers") or [], record.get("peers_correct") or [], record.get("agent", 0)
    )


def _fit_conformity(
    refines: list[dict],
    prev: np.ndarray,
    now: np.ndarray,
    counts: dict[str, Counter],
    fitted: SimProfile,
    base: SimProfile,
    k: float,
    unparsed: float,
    sources: dict[str, str],
) -> dict[str, Any]:
    """Redraw, conformity and broken-answer conformity rates.

    Each inverts the simulator's story (`SimulatedBackend.refine_batch`), so it recovers a
    simulated profile. A wrong answer drawn afresh can equal the old one or the peers'
    modal one by chance: `pi` is that chance, the fitted popularity weight of the answer's
    rank among the question's wrong initial answers; an output is unparseable with
    probability `unparsed`.
    """
    weights = fitted.distractor_decay ** np.arange(fitted.distractors)
    weights = weights / weights.sum()
    ranks = {
        task: {a: i for i, (a, _) in enumerate(sorted(c.items(), key=lambda x: -x[1]))}
        for task, c in counts.items()
    }

    def pi(task_id: str, answer: Any) -> float:
        rank = ranks.get(task_id, {}).get(answer, len(weights) - 1)
        return float(weights[min(rank, len(weights) - 1)])

    out: dict[str, Any] = {}
    parsed = 1.0 - unparsed
    # A refiner's own wrong answer was itself drawn from the distractors, so a fresh draw
    # equals it with the pair agreement (ranking it by counts that include it would not).
    agreement = float((weights**2).sum())
    # Stayed wrong, answer parsed, and no other wrong answer pulling (no modal wrong answer
    # among the peers, or it is mine): the answer is the old one unless redrawn, and a
    # redraw lands on it again with chance pi.  P(same) = 1 - redraw * (1 - pi).
    same = draws = chance = 0.0
    for r, p, c in zip(refines, prev, now):
        modal, _ = _modal(r)
        own = r.get("prev_answer")
        if p or c or own is None or modal not in (None, own) or r["answer"] is None:
            continue
        same += r["answer"] == own
        chance += agreement
        draws += 1
    if draws:
        raw = (1 - same / draws) / max(1 - chance / draws, 1e-6)
        out["redraw_wrong"] = float(
            np.clip(_shrunk(raw * draws, draws, base.redraw_wrong, k), 0, 1)
        )
        sources["redraw_wrong"] = f"fit: {int(draws)} wrong refiners with no other wrong pull"
    redraw = out.get("redraw_wrong", base.redraw_wrong)

    # Stayed wrong, facing a modal wrong answer that is not mine: adopted with probability
    # conform_wrong * share; otherwise a redraw (always, when mine was unparseable) reaches
    # it by chance q.  E[hit] = parsed * (c s + redraw * q), or parsed * (c s + (1 - c s) q).
    # A broken right answer: modal with conform_break, else a fresh draw.
    #   E[hit] = parsed * (cb + (1 - cb) q).
    num = den = 0.0
    n_conform = 0
    follow = follow_chance = 0.0
    n_follow = 0
    for r, p, c in zip(refines, prev, now):
        modal, s = _modal(r)
        if modal is None or c:
            continue
        q = pi(r["task_id"], modal)
        hit = float(r["answer"] == modal)
        own = r.get("prev_answer")
        if p:
            follow += hit
            follow_chance += q
            n_follow += 1
        elif own is None:
            num += hit / parsed - q
            den += s * (1 - q)
            n_conform += 1
        elif own != modal:
            num += hit / parsed - redraw * q
            den += s
            n_conform += 1
    if den > 0:
        out["conform_wrong"] = float(np.clip(_shrunk(num, den, base.conform_wrong, k), 0, 1))
        sources["conform_wrong"] = f"fit: {n_conform} wrong refiners facing a wrong majority"
    if n_follow:
        # E[hit] = parsed * (cb + (1 - cb) * q)
        q = follow_chance / n_follow
        raw = (follow / n_follow / parsed - q) / max(1 - q, 1e-6)
        out["conform_break"] = float(
            np.clip(_shrunk(raw * n_follow, n_follow, base.conform_break, k), 0, 1)
        )
        sources["conform_break"] = f"fit: {n_follow} broken answers facing wrong peers"
    return out


def _fit_lengths(
    rows: list[dict],
    solves: list[dict],
    base: SimProfile,
    tasks: Sequence[Task] | None,
    sources: dict[str, str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    correct = np.array([r["correct"] for r in rows], bool)
    completion = np.array([max(1, r["completion_tokens"]) for r in rows], float)
    steps = np.array([r.get("steps", 0) for r in rows], float)
    operators = np.array([r.get("operators", 0) for r in rows], float)
    right = completion[correct] if correct.any() else completion
    out["completion_tokens"] = float(right.mean())
    if correct.any() and (~correct).any():
        out["wrong_length_factor"] = float(completion[~correct].mean() / right.mean())
    logs = np.log(right)
    if len(right) > 1:
        out["token_sigma"] = float(np.clip(logs.std(), 0.01, 3.0))
    if steps.any():
        out["steps"] = float(max(1.0, steps[correct].mean() if correct.any() else steps.mean()))
        out["operators_per_step"] = float(operators.sum() / max(steps.sum(), 1.0))
    for key in ("completion_tokens", "wrong_length_factor", "token_sigma"):
        if key in out:
            sources[key] = f"fit: completion tokens of {len(rows)} records (right vs wrong)"
    for key in ("steps", "operators_per_step"):
        if key in out:
            sources[key] = f"fit: reasoning profile of {len(rows)} records"

    question = base.question_tokens
    if tasks:
        lengths = [len(t.question) / 4.0 for t in tasks if t.question]
        if lengths:
            question = float(np.mean(lengths))
            out["question_tokens"] = question
    if solves:
        prompt = np.mean([r["prompt_tokens"] for r in solves])
        out["solve_instruction_tokens"] = float(max(0.0, prompt - question))
    refines = [r for r in rows if r["action"] == "refine"]
    if refines:
        # The refine prompt quotes every agent's current solution.
        n_agents = np.mean([1 + len(r.get("peers_correct") or []) for r in refines])
        prompt = np.mean([r["prompt_tokens"] for r in refines])
        context = n_agents * completion.mean()
        out["refine_instruction_tokens"] = float(max(0.0, prompt - question - context))
    for key in ("question_tokens", "solve_instruction_tokens", "refine_instruction_tokens"):
        if key in out:
            sources[key] = (
                "fit: mean prompt tokens minus the question (len/4, "
                f"{'from tasks' if tasks else 'base profile'}) and the quoted solutions"
            )
    return out
