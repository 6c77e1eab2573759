"""Calibrate the simulated backend from recorded real runs: records -> `SimProfile`.

Record once with a real LLM (on a GPU), then train meta-policies cheaply on a simulator
whose numbers came from that run: ``SimulatedBackend.fit(records)``. The record schema and
the ways to make records (`RecordingBackend`, `record_from_call`, `load_records`, also
importable from here) are in `agents.records`.

What is estimated (each entry of the fitted profile's ``sources`` says from how many
records): accuracy and per-question concentration (beta-binomial method of moments, when
questions were answered more than once), the share of wrong answers that are unparseable,
the popularity of wrong answers (from how often two wrong answers to one question agree),
the REFINE model of the base profile (`agents.fit_refine`: for v1, conformity to a peer
majority, fix and break rates by the share of right peers, the no-peer rates; for v0, fix
rates by the share of right peers, break rates by peer situation and conformity),
confidence AUROCs and means, token and reasoning-profile means. Each rate is shrunk
toward the base profile with `prior_strength` pseudo-records, so a situation never seen
keeps the base value. CONCEDE costs no LLM call and is not estimated.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit, logit, ndtri
from scipy.stats import rankdata

from agents.fit_refine import fit_refine
from agents.profiles import SimProfile, get_profile
from agents.records import RECORD_KEYS, RecordingBackend, load_records, record_from_call
from deliberation_env.tasks.task import Task

__all__ = [
    "RECORD_KEYS",
    "RecordingBackend",
    "fit_profile",
    "load_records",
    "record_from_call",
]

_MIN_TASKS_FOR_CONCENTRATION = 5


@dataclass
class Estimates:
    """A profile being fitted: `base`'s values, the fitted `changes`, and each one's source."""

    base: SimProfile
    strength: float
    """Pseudo-records of the base value that every rate is shrunk with (`prior_strength`)."""
    changes: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: Any, source: str) -> None:
        self.changes[key] = value
        self.sources[key] = source

    def value(self, key: str) -> Any:
        """The fitted value of `key` so far, else the base's."""
        return self.changes.get(key, getattr(self.base, key))

    def shrunk(self, successes: float, n: float, prior: float) -> float:
        """The rate ``successes / n`` shrunk toward `prior` with `strength` pseudo-records."""
        return float((successes + self.strength * prior) / (n + self.strength))

    def profile(self) -> SimProfile:
        """The base with what is fitted so far."""
        return self.base.with_(**self.changes)


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
    est = Estimates(base, prior_strength)
    solves = [r for r in rows if r["action"] == "solve"]
    refines = [r for r in rows if r["action"] == "refine" and r.get("prev_correct") is not None]
    counts = _fit_initial_answers(est, rows, solves)
    if refines:
        fit_refine(est, refines, counts)
    _fit_confidences(est, rows)
    _fit_completions(est, rows)
    _fit_prompts(est, rows, solves, tasks)
    est.sources["base"] = (
        f"every parameter not listed here is profile {base.name!r}'s (see its sources); "
        "CONCEDE makes no LLM call, so concede_tokens is never fitted"
    )
    return base.with_(name=name, sources=est.sources, **est.changes)


# ---------------------------------------------------------------------- initial answers
def _fit_initial_answers(
    est: Estimates, rows: list[dict], solves: list[dict]
) -> dict[str, Counter]:
    """Accuracy, concentration, unparseable and distractor rates; returns `_wrong_counts`."""
    base = est.base
    if solves:
        correct = np.array([r["correct"] for r in solves], bool)
        accuracy = est.shrunk(correct.sum(), len(correct), base.accuracy)
        est.set("accuracy", accuracy, f"fit: mean correctness of {len(solves)} solve records")
        kappa, n_tasks = _concentration(solves, accuracy)
        if kappa is not None:
            est.set(
                "concentration",
                kappa,
                f"fit: beta-binomial method of moments over {n_tasks} questions",
            )
    wrong = [r for r in rows if not r["correct"]]
    if wrong:
        unparsed = sum(r["answer"] is None for r in wrong)
        est.set(
            "unparsed_wrong",
            est.shrunk(unparsed, len(wrong), base.unparsed_wrong),
            f"fit: share of None among {len(wrong)} wrong answers",
        )
    counts = _wrong_counts(solves)
    decay = _fit_decay(counts)
    if decay is not None:
        distractors, rate, pairs = decay
        est.set(
            "distractors", distractors, "fit: most distinct wrong answers given to one question"
        )
        est.set(
            "distractor_decay",
            rate,
            f"fit: agreement of {pairs} pairs of wrong answers to the same question",
        )
    return counts


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


def _wrong_counts(solves: list[dict]) -> dict[str, Counter]:
    """Per question, how often each parsed wrong initial answer was given."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in solves:
        if not r["correct"] and r["answer"] is not None:
            counts[r["task_id"]][r["answer"]] += 1
    return counts


def _pair_agreement(decay: float, distractors: int) -> float:
    w = decay ** np.arange(distractors)
    return float((w**2).sum() / w.sum() ** 2)


def _fit_decay(counts: dict[str, Counter]) -> tuple[int, float, int] | None:
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


# ---------------------------------------------------------------------- confidences
def _auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _fit_confidences(est: Estimates, rows: list[dict]) -> None:
    """The AUROC of each confidence signal (and of a verifier's ``verifier_score``, where
    records carry one: it sets `verifier_auroc`), and the verbalised confidence's centre."""
    correct = np.array([r["correct"] for r in rows], bool)
    for signal in ("self", "judge", "logprob", "verifier"):
        key = "verifier_score" if signal == "verifier" else f"{signal}_confidence"
        have = [(r[key], c) for r, c in zip(rows, correct) if r.get(key) is not None]
        if not have:
            continue
        score, pos = np.array([h[0] for h in have], float), np.array([h[1] for h in have])
        auc = _auroc(score, pos)
        if auc is not None:
            est.set(
                f"{signal}_auroc",
                float(np.clip(auc, 0.5, 0.999)),
                f"fit: AUROC over {len(have)} records",
            )
        if signal == "self":
            # The simulator draws logit(conf) = logit(self_mean) + 0.6 (z + d (c - 0.5)).
            d = float(np.sqrt(2.0) * ndtri(est.value("self_auroc")))
            centre = np.mean(logit(np.clip(score, 0.01, 0.99))) - 0.6 * d * (pos.mean() - 0.5)
            est.set(
                "self_mean",
                float(expit(centre)),
                f"fit: mean logit of {len(have)} verbalised confidences",
            )


# ---------------------------------------------------------------------- tokens
def _fit_completions(est: Estimates, rows: list[dict]) -> None:
    """Completion length (right answers; wrong ones relative to them) and reasoning profile."""
    correct = np.array([r["correct"] for r in rows], bool)
    completion = np.array([max(1, r["completion_tokens"]) for r in rows], float)
    steps = np.array([r.get("steps", 0) for r in rows], float)
    operators = np.array([r.get("operators", 0) for r in rows], float)
    lengths = f"fit: completion tokens of {len(rows)} records (right vs wrong)"
    right = completion[correct] if correct.any() else completion
    est.set("completion_tokens", float(right.mean()), lengths)
    if correct.any() and (~correct).any():
        est.set("wrong_length_factor", float(completion[~correct].mean() / right.mean()), lengths)
    if len(right) > 1:
        est.set("token_sigma", float(np.clip(np.log(right).std(), 0.01, 3.0)), lengths)
    if steps.any():
        profile = f"fit: reasoning profile of {len(rows)} records"
        mean_steps = steps[correct].mean() if correct.any() else steps.mean()
        est.set("steps", float(max(1.0, mean_steps)), profile)
        est.set("operators_per_step", float(operators.sum() / max(steps.sum(), 1.0)), profile)


def _fit_prompts(
    est: Estimates, rows: list[dict], solves: list[dict], tasks: Sequence[Task] | None
) -> None:
    """The instruction tokens of solve and refine prompts: prompt minus question (minus the
    quoted solutions, for refine)."""
    source = (
        "fit: mean prompt tokens minus the question (len/4, "
        f"{'from tasks' if tasks else 'base profile'}) and the quoted solutions"
    )
    question = est.base.question_tokens
    if tasks:
        lengths = [len(t.question) / 4.0 for t in tasks if t.question]
        if lengths:
            question = float(np.mean(lengths))
            est.set("question_tokens", question, source)
    if solves:
        prompt = np.mean([r["prompt_tokens"] for r in solves])
        est.set("solve_instruction_tokens", float(max(0.0, prompt - question)), source)
    refines = [r for r in rows if r["action"] == "refine"]
    if refines:
        # The refine prompt quotes every agent's current solution.
        completion = np.array([max(1, r["completion_tokens"]) for r in rows], float)
        n_agents = np.mean([1 + len(r.get("peers_correct") or []) for r in refines])
        prompt = np.mean([r["prompt_tokens"] for r in refines])
        context = n_agents * completion.mean()
        est.set("refine_instruction_tokens", float(max(0.0, prompt - question - context)), source)
