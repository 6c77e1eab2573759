"""Backend output checked at the env's edge, once, where the core receives it.

A backend is user code: a NaN confidence, a log-probability where a probability belongs, a
negative token count or an ``int`` answer would otherwise flow into observations (outside
``observation_space``), rewards and token totals, and surface much later as a policy that
always PERSISTs or a crash inside torch. `ValidatedBackend` wraps every backend the env
builds (`deliberation_env.backends.make_backend_for`) and checks each `SolutionBatch` with
vectorised NumPy tests (the simulator's hot path pays a few array reductions per call);
`check_solutions` checks the `Solution` records of a text backend before they become
arrays (`deliberation_env.backends.TextBackendAdapter`).

The rules, for both forms:

| value | handling |
| --- | --- |
| not a `Solution` / `SolutionBatch`, wrong field type or array shape | `TypeError` / `ValueError` |
| NaN or infinite confidence, step count or token count | `ValueError` |
| finite confidence outside [0, 1] (1e9, -0.5, a log-prob such as -2.3) | clipped to [0, 1]; a `BackendOutputWarning` once per backend and field |
| negative (or > 2**31 - 1) steps, operators or token counts; answer id < -1 | `ValueError` |
| ``logprob_confidence``, ``verifier_score``: None (a record) or NaN (an array) | "the backend has none" |

Every error names the backend, the field, the request (agent, round, question) and the value.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from deliberation_env.protocol import (
    UNPARSED,
    BatchBackend,
    BatchBackendWrapper,
    BatchView,
    RefineRequest,
    Solution,
    SolutionBatch,
    SolveRequest,
)
from deliberation_env.tasks.task import Task

COUNT_MAX = 2**31 - 1
"""Largest step, operator or token count accepted from one solution: far above any real
generation, and small enough that episode totals never overflow int64."""

CONFIDENCE_FIELDS = ("self_confidence", "judge_confidence", "logprob_confidence", "verifier_score")
"""Probabilities in [0, 1]; finite values outside are clipped (with a warning)."""
OPTIONAL_FIELDS = frozenset({"logprob_confidence", "verifier_score"})
"""Confidences a backend may lack: None in a `Solution`, NaN (or a None array for
``verifier_score``) in a `SolutionBatch`."""
COUNT_FIELDS = ("steps", "operators", "prompt_tokens", "completion_tokens")
"""Counts in [0, `COUNT_MAX`]; anything else is an error."""

# SolutionBatch arrays: name -> accepted dtype kinds.
_BATCH_KINDS = {
    "answer": "iu",
    "correct": "b",
    "self_confidence": "fiu",
    "judge_confidence": "fiu",
    "logprob_confidence": "fiu",
    "verifier_score": "fiu",
    "steps": "fiu",
    "operators": "fiu",
    "prompt_tokens": "iu",
    "completion_tokens": "iu",
}
_QUESTION_CHARS = 60


class BackendOutputWarning(UserWarning):
    """A backend returned a finite value outside its range; the env clipped it."""


def describe_request(
    agent: int, round_: int, task: Task | None, env: int | None = None, index: int | None = None
) -> str:
    """``"request 3 (agent_1 of env 2, round 1, question 'gsm8k/7': 'Tom has...')"``."""
    where = f"agent_{agent}" + ("" if env is None else f" of env {env}")
    question = ""
    if task is not None:
        question = f", question {task.id!r}: {_clip_text(task.question, _QUESTION_CHARS)!r}"
    head = "request" if index is None else f"request {index}"
    return f"{head} ({where}, round {round_}{question})"


# ---------------------------------------------------------------------- text records
def check_solutions(
    solutions: Sequence[Any],
    requests: Sequence[SolveRequest | RefineRequest],
    source: str,
) -> None:
    """Type and finiteness of every `Solution` a text backend returned, one per request.

    Ranges (clipping confidences, rejecting negative counts) are left to `check_batch`,
    which sees the arrays built from these records; what is checked here is what could not
    become such an array faithfully (a string confidence, a NaN that would mean "none", an
    int answer, a count too large for int64).
    """
    for i, (sol, req) in enumerate(zip(solutions, requests)):
        if not isinstance(sol, Solution):
            raise TypeError(
                f"{source} returned {type(sol).__name__} {_short(sol)} for {_describe(req, i)}; "
                "solve() and refine() must return deliberation_env.protocol.Solution records"
            )
        if not isinstance(sol.text, str):
            _type_error(source, "text", "a str", sol.text, req, i)
        if sol.answer is not None and not isinstance(sol.answer, str):
            _type_error(source, "answer", "a str or None", sol.answer, req, i)
        for name in CONFIDENCE_FIELDS:
            value = getattr(sol, name, None)
            optional = name in OPTIONAL_FIELDS
            if value is None and optional:
                continue
            if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
                expected = "a float in [0, 1]" + (" or None" if optional else "")
                _type_error(source, name, expected, value, req, i)
            if not math.isfinite(value):
                hint = " (None when the backend has none)" if optional else ""
                raise ValueError(
                    f"{source} returned {name}={value!r} for {_describe(req, i)}: a confidence "
                    f"must be a finite number in [0, 1]{hint}"
                )
        for name in COUNT_FIELDS:
            value = getattr(sol, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
                _type_error(source, name, "an int", value, req, i)
            if not 0 <= int(value) <= COUNT_MAX:
                raise ValueError(
                    f"{source} returned {name}={value!r} for {_describe(req, i)}: a count must "
                    f"be an int in [0, {COUNT_MAX}]"
                )


def _describe(req: SolveRequest | RefineRequest, index: int) -> str:
    round_ = req.round if isinstance(req, RefineRequest) else 0
    return describe_request(req.agent, round_, req.task, index=index)


def _type_error(
    source: str, name: str, expected: str, value: Any, req: Any, index: int
) -> NoReturn:
    raise TypeError(
        f"{source} returned {name}={_short(value)} ({type(value).__name__}) for "
        f"{_describe(req, index)}: {name} must be {expected}"
    )


def _short(value: Any, limit: int = 80) -> str:
    return _clip_text(repr(value), limit)


def _clip_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------- arrays
def check_batch(
    batch: Any,
    view: BatchView,
    refine: bool,
    source: str,
    tasks: Sequence[Task],
    warned: set[str],
) -> SolutionBatch:
    """`batch` checked against `view` (one solution per request); confidences outside
    [0, 1] come back clipped in a new batch (the backend's arrays are never written).

    `warned` holds the fields already warned about for this backend (one warning each).
    The common case, every value in range, costs two reductions per array (`_within`).
    """
    if not isinstance(batch, SolutionBatch):
        raise TypeError(
            f"{source} returned {type(batch).__name__} from "
            f"{'refine_batch' if refine else 'solve_batch'}; a BatchBackend must return a "
            "deliberation_env.protocol.SolutionBatch"
        )
    M = len(view.env)
    for name, kinds in _BATCH_KINDS.items():
        x = getattr(batch, name, None)
        if x is None and name == "verifier_score":
            continue  # a backend without a verifier
        if not isinstance(x, np.ndarray) or x.dtype.kind not in kinds:
            got = f"{x.dtype} array" if isinstance(x, np.ndarray) else type(x).__name__
            raise TypeError(
                f"{source} returned SolutionBatch.{name} as {got}; it must be a NumPy array "
                f"of dtype kind {kinds!r} (e.g. {_EXAMPLE_DTYPES[name]}) with one entry per request"
            )
        if x.shape != (M,):
            raise ValueError(
                f"{source} returned SolutionBatch.{name} of shape {x.shape} for {M} requests; "
                f"it must have shape ({M},), one entry per request in order"
            )
    records = batch.records
    if records is not None and (not isinstance(records, np.ndarray) or records.shape != (M,)):
        raise ValueError(f"{source} returned SolutionBatch.records that is not an [{M}] array")
    if M == 0:
        return batch

    def fail(name: str, bad: np.ndarray, rule: str) -> None:
        m = int(np.flatnonzero(bad)[0])
        value = getattr(batch, name)[m].item()
        raise ValueError(
            f"{source} returned {name}={value!r} for "
            f"{_describe_view(view, m, refine, tasks)}: {rule}"
        )

    if not _within(batch.answer, UNPARSED, COUNT_MAX):
        fail("answer", batch.answer < UNPARSED, f"an answer id is >= 0 ({UNPARSED}: unparsed)")
    for name in COUNT_FIELDS:
        x = getattr(batch, name)
        if not _within(x, 0, COUNT_MAX):
            rule = f"a count must be finite and in [0, {COUNT_MAX}]"
            fail(name, ~((x >= 0) & (x <= COUNT_MAX)), rule)
    clipped: dict[str, np.ndarray] = {}
    for name in CONFIDENCE_FIELDS:
        x = getattr(batch, name, None)
        optional = name in OPTIONAL_FIELDS
        if x is None or _within(x, 0, 1, nan_ok=optional):
            continue
        nonfinite = np.isinf(x) if optional else ~np.isfinite(x)
        if nonfinite.any():
            hint = " (NaN means none)" if optional else ""
            fail(name, nonfinite, f"a confidence must be a finite number in [0, 1]{hint}")
        out = (x < 0) | (x > 1)
        if not out.any():  # all NaN logprobs, or in-range integers
            continue
        if name not in warned:
            warned.add(name)
            m = int(np.flatnonzero(out)[0])
            hint = (
                "; it looks like a log-probability: return math.exp(logprob)"
                if name == "logprob_confidence" and x[m] < 0
                else ""
            )
            warnings.warn(
                f"{source} returned {name}={float(x[m])!r} for "
                f"{_describe_view(view, m, refine, tasks)}, outside [0, 1]; clipped to [0, 1] "
                f"(warned once per backend and field){hint}",
                BackendOutputWarning,
                stacklevel=4,
            )
        clipped[name] = np.clip(x, 0, 1).astype(np.float32)
    return dataclasses.replace(batch, **clipped) if clipped else batch


_SMALL = 32
"""Up to this many requests (a single env) `_within` compares Python floats: a NumPy
reduction costs more than the whole comparison there."""


def _within(x: np.ndarray, lo: float, hi: float, nan_ok: bool = False) -> bool:
    """Every entry of `x` is in [lo, hi] (NaN is not, unless `nan_ok`): the fast path of
    `check_batch`, two reductions for a batch."""
    if x.shape[0] <= _SMALL:
        if nan_ok:
            return all(v != v or lo <= v <= hi for v in x.tolist())
        return all(lo <= v <= hi for v in x.tolist())  # NaN fails every comparison
    if nan_ok:
        # fmin/fmax skip NaN; an all-NaN array gives NaN and takes the exact test.
        low, high = np.fmin.reduce(x), np.fmax.reduce(x)
        return bool(lo <= low and high <= hi) or bool(((x >= lo) & (x <= hi) | (x != x)).all())
    return bool(lo <= np.minimum.reduce(x) and np.maximum.reduce(x) <= hi)


_EXAMPLE_DTYPES = {
    "answer": "int32",
    "correct": "bool",
    "self_confidence": "float32",
    "judge_confidence": "float32",
    "logprob_confidence": "float32, NaN where none",
    "verifier_score": "float32, NaN where none",
    "steps": "float32",
    "operators": "float32",
    "prompt_tokens": "int64",
    "completion_tokens": "int64",
}


def _describe_view(view: BatchView, m: int, refine: bool, tasks: Sequence[Task]) -> str:
    b, t = int(view.env[m]), int(view.task_index[m])
    round_ = int(view.state.round[b]) + 1 if refine else 0
    env = b if view.state.answer.shape[0] > 1 else None
    task = tasks[t] if 0 <= t < len(tasks) else None
    return describe_request(int(view.agent[m]), round_, task, env=env, index=m)


# ---------------------------------------------------------------------- the wrapper
class ValidatedBackend(BatchBackendWrapper):
    """A `BatchBackend` whose every output is checked by `check_batch` (see the module).

    `source` names the backend in errors and warnings; `inner` is the wrapped backend.
    """

    def __init__(self, inner: BatchBackend, source: str) -> None:
        super().__init__(inner)
        self.source = source
        self._warned: set[str] = set()
        concede = inner.concede_tokens
        if (
            not isinstance(concede, numbers.Integral)
            or isinstance(concede, (bool, np.bool_))
            or not 0 <= concede <= COUNT_MAX
        ):
            raise ValueError(
                f"{source} has concede_tokens={concede!r}; it must be an int in [0, {COUNT_MAX}]"
            )
        self.concede_tokens = int(concede)

    def solve_batch(self, view: BatchView) -> SolutionBatch:
        batch = self.inner.solve_batch(view)
        return check_batch(batch, view, False, self.source, self.tasks, self._warned)

    def refine_batch(self, view: BatchView) -> SolutionBatch:
        batch = self.inner.refine_batch(view)
        return check_batch(batch, view, True, self.source, self.tasks, self._warned)
