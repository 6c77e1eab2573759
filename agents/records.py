"""Records of real LLM calls, the input of `agents.fit.fit_profile`: their schema, how to
make them (`RecordingBackend`, `record_from_call`) and how to read them (`load_records`).

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
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deliberation_env.protocol import (
    BatchBackendWrapper,
    BatchView,
    RefineRequest,
    Solution,
    SolutionBatch,
    SolveRequest,
)
from deliberation_env.tasks.task import Task

__all__ = ["RECORD_KEYS", "RecordingBackend", "load_records", "record_from_call"]

RECORD_KEYS = (
    "task_id", "kind", "round", "agent", "action", "answer", "correct", "self_confidence",
    "judge_confidence", "logprob_confidence", "steps", "operators", "prompt_tokens",
    "completion_tokens", "prev_answer", "prev_correct", "peer_answers", "peers_correct",
)  # fmt: skip
_REQUIRED = ("task_id", "action", "answer", "correct")
_MEASURES = RECORD_KEYS[7:14]
"""The keys a solution measures: confidences, reasoning profile, tokens."""

Context = tuple[Any, Any, list[Any], list[Any]]
"""A refine's ``(prev_answer, prev_correct, peer_answers, peers_correct)``."""


def _record(
    task: Task,
    round: int | None,
    agent: int,
    action: str,
    answer: str | None,
    correct: bool | None,
    measures: Mapping[str, Any],
    context: Context | None = None,
) -> dict[str, Any]:
    """One record, keys in `RECORD_KEYS` order; `context` only for a refine."""
    prev_answer, prev_correct, peer_answers, peers_correct = context or (None, None, None, None)
    return {
        "task_id": task.id,
        "kind": task.kind,
        "round": round,
        "agent": agent,
        "action": action,
        "answer": answer,
        "correct": correct,
        **{key: measures[key] for key in _MEASURES},
        "prev_answer": prev_answer,
        "prev_correct": prev_correct,
        "peer_answers": peer_answers,
        "peers_correct": peers_correct,
    }


# ---------------------------------------------------------------------- text backends
def _check(task: Task, answer: str | None) -> bool | None:
    from deliberation_env.tasks import verify

    try:
        return bool(verify(task, answer))
    except NotImplementedError:  # code tasks without unit tests cannot be checked
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
    context: Context | None = None
    if isinstance(request, RefineRequest):
        own, peers = request.own.answer, [p.answer for p in request.peers]
        context = (own, _check(task, own), peers, [_check(task, a) for a in peers])
    solve = isinstance(request, SolveRequest)
    return _record(
        task,
        round if round is not None else (0 if solve else None),
        request.agent,
        "solve" if solve else "refine",
        solution.answer,
        _check(task, solution.answer),
        {key: getattr(solution, key) for key in _MEASURES},
        context,
    )


# ---------------------------------------------------------------------- any backend in an env
class RecordingBackend(BatchBackendWrapper):
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

        super().__init__(make_backend(backend, **kwargs))
        self.records: list[dict[str, Any]] = []

    @property
    def concede_tokens(self) -> int:
        return self.inner.concede_tokens

    def solve_batch(self, view: BatchView) -> SolutionBatch:
        batch = self.inner.solve_batch(view)
        self._record(view, batch, refine=False)
        return batch

    def refine_batch(self, view: BatchView) -> SolutionBatch:
        batch = self.inner.refine_batch(view)  # state is still the pre-round state
        self._record(view, batch, refine=True)
        return batch

    def _record(self, view: BatchView, batch: SolutionBatch, refine: bool) -> None:
        state = view.state
        N = state.answer.shape[1]
        text = self.inner.answer_text
        visible = view.peer_mask() if refine else None
        for m, (b, a, t) in enumerate(zip(view.env, view.agent, view.task_index)):
            b, a, t = int(b), int(a), int(t)
            context: Context | None = None
            if visible is not None:  # the peers this refiner read (its in-neighbours)
                peers = [(a + k) % N for k in range(1, N) if visible[m, (a + k) % N]]
                context = (
                    text(t, int(state.answer[b, a])),
                    bool(state.correct[b, a]),
                    [text(t, int(state.answer[b, p])) for p in peers],
                    [bool(state.correct[b, p]) for p in peers],
                )
            record = _record(
                self.tasks[t],
                int(state.round[b]) + 1 if refine else 0,
                a,
                "refine" if refine else "solve",
                text(t, int(batch.answer[m])),
                bool(batch.correct[m]),
                _measures(batch, m),
                context,
            )
            self.records.append(record)


def _measures(batch: SolutionBatch, m: int) -> dict[str, Any]:
    """Row `m` of `batch` as plain JSON numbers (NaN log-prob confidence: None)."""
    lp = float(batch.logprob_confidence[m])
    return {
        "self_confidence": float(batch.self_confidence[m]),
        "judge_confidence": float(batch.judge_confidence[m]),
        "logprob_confidence": None if np.isnan(lp) else lp,
        "steps": int(batch.steps[m]),
        "operators": int(batch.operators[m]),
        "prompt_tokens": int(batch.prompt_tokens[m]),
        "completion_tokens": int(batch.completion_tokens[m]),
    }


# ---------------------------------------------------------------------- reading records
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
                f"record {i} lacks {missing}; see the schema in agents.records' docstring"
            )
        if r["action"] not in ("solve", "refine"):
            raise ValueError(f"record {i}: action {r['action']!r} is not 'solve' or 'refine'")
    return [dict(r) for r in items]
