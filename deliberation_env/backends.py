"""Backends by name, building the backend of an `EnvConfig`, and the adapter that lets any
text `Backend` drive the array core.

The registry maps a name to ``"module:attribute"`` and imports it only when asked, so
``deliberation_env`` never imports ``agents`` (or torch, or an HTTP client) by itself.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deliberation_env.config import FIELD_NAMES, EnvConfig
from deliberation_env.protocol import (
    UNPARSED,
    Backend,
    BatchBackend,
    BatchView,
    RefineRequest,
    Solution,
    SolutionBatch,
    SolveRequest,
)
from deliberation_env.rng import seeds
from deliberation_env.tasks import load_tasks, normalize_answer, verify
from deliberation_env.tasks.task import Task
from deliberation_env.validate import ValidatedBackend, check_solutions

BACKENDS: dict[str, str | Callable[..., Any]] = {}
"""Registered backend factories: a callable or a lazy ``"module:attribute"`` path."""


def register_backend(name: str, factory: str | Callable[..., Any]) -> None:
    """Register a backend factory under `name` (``parallel_env(backend=name, ...)``)."""
    BACKENDS[name] = factory


register_backend("simulated", "agents.simulated:SimulatedBackend")
register_backend("hf", "agents.hf:HFBackend")
register_backend("openai", "agents.openai_compat:OpenAIBackend")


def _resolve(name: str) -> Callable[..., Any]:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; registered backends: {sorted(BACKENDS)}")
    factory = BACKENDS[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except ImportError as err:
            raise ImportError(
                f"backend {name!r} needs packages that are not installed ({err}); "
                "install the extra: pip install 'deliberation-env[hf]' or '[serve]'"
            ) from err
    return factory


def make_backend(backend: Any, profile: str | None = None, **kwargs: Any) -> BatchBackend:
    """A `BatchBackend` from a name, a `BatchBackend` or a text `Backend` instance.

    `profile` reaches a named factory only if it has a ``profile`` parameter (the
    simulator); `kwargs` must fit the factory's signature, else a `ValueError` names them.
    """
    if isinstance(backend, str):
        factory = _resolve(backend)
        params = inspect.signature(factory).parameters
        if profile is not None and "profile" in params:
            kwargs.setdefault("profile", profile)
        try:
            inspect.signature(factory).bind(**kwargs)
        except TypeError as err:
            raise _signature_error(backend, params, kwargs, err) from None
        backend = factory(**kwargs)
    elif kwargs:
        raise ValueError(
            f"backend arguments {sorted(kwargs)} were given with a backend instance; "
            "configure the instance instead (env arguments are "
            f"{sorted(FIELD_NAMES - {'backend_kwargs'})})"
        )
    if hasattr(backend, "solve_batch"):
        return backend
    if isinstance(backend, Backend):
        return TextBackendAdapter(backend)
    raise TypeError(
        f"{type(backend).__name__} is not a backend: implement solve/refine "
        "(deliberation_env.protocol.Backend) or solve_batch/refine_batch (BatchBackend)"
    )


def _signature_error(name: str, params: Any, kwargs: dict[str, Any], err: TypeError) -> ValueError:
    """The error for arguments a backend factory does not take: names them, what the
    factory accepts, and the env's own arguments (where a misspelled field belongs)."""
    accepted = [p for p in params if p != "self"]
    required = [
        n for n, p in params.items()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in kwargs
    ]  # fmt: skip
    if required:
        return ValueError(
            f"backend {name!r} needs {', '.join(f'{n}=' for n in required)}: pass it "
            f"to the env, e.g. parallel_env(backend={name!r}, {required[0]}=...)"
        )
    unknown = sorted(k for k in kwargs if k not in params) or sorted(kwargs)
    return ValueError(
        f"backend {name!r} does not take {unknown} ({err}); it accepts "
        f"{accepted}; env arguments are {sorted(FIELD_NAMES)}"
    )


@functools.lru_cache(maxsize=32)
def _load_spec(spec: str) -> tuple[Task, ...]:
    return tuple(load_tasks(spec))


def make_backend_for(config: EnvConfig) -> tuple[BatchBackend, list[Task]]:
    """Build the backend of `config` (bound to its tasks) and its task list.

    The backend comes wrapped in a `ValidatedBackend`: every solution it returns is checked
    once, here at the env's edge (`deliberation_env.validate`).
    """
    tasks = list(_load_spec(config.tasks) if isinstance(config.tasks, str) else config.tasks)
    if not tasks:
        raise ValueError(f"tasks={config.tasks!r} gave no tasks; pass a non-empty task source")
    inner = make_backend(config.backend, profile=config.profile, **config.backend_kwargs)
    backend = ValidatedBackend(inner, _source(config.backend, unwrap(inner)))
    backend.bind(tasks, config.num_agents)
    return backend, tasks


def _source(spec: Any, backend: Any) -> str:
    """How errors name a backend: ``"backend 'hf' (HFBackend)"`` or ``"backend MyBackend"``."""
    kind = type(backend).__name__
    return f"backend {spec!r} ({kind})" if isinstance(spec, str) else f"backend {kind}"


def unwrap(backend: BatchBackend) -> Any:
    """The backend object a user configured: the text `Backend` behind the adapter, or
    the `BatchBackend` itself (without the env's `ValidatedBackend`)."""
    if isinstance(backend, ValidatedBackend):
        backend = backend.inner
    return backend.backend if isinstance(backend, TextBackendAdapter) else backend


class TextBackendAdapter:
    """Drives a text `Backend` from the array core.

    Keeps every `Solution` record, maps normalised answers to integer ids shared by all
    envs (equal id <=> equal normalised answer), and checks correctness once per
    (task, answer) with `tasks.verify`.
    """

    concede_tokens = 0
    """CONCEDE copies a peer's record without an LLM call."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.tasks: list[Task] = []
        self._ids: dict[str, int] = {}
        self._answers: list[str] = []
        self._correct: dict[tuple[int, int], bool] = {}

    def bind(self, tasks: Sequence[Task], num_agents: int) -> None:
        self.tasks = list(tasks)
        bind = getattr(self.backend, "bind", None)
        if callable(bind):
            bind(self.tasks, num_agents)

    def solve_batch(self, view: BatchView) -> SolutionBatch:
        requests = [
            SolveRequest(self.tasks[t], int(a), int(s))
            for t, a, s in zip(view.task_index, view.agent, seeds(view.keys))
        ]
        return self._to_batch(self.backend.solve(requests), requests, view.task_index)

    def refine_batch(self, view: BatchView) -> SolutionBatch:
        records = view.state.records
        N = records.shape[1]
        visible = view.peer_mask()  # under a topology only the peers the agent reads
        requests = []
        for m, (b, a, t, s) in enumerate(
            zip(view.env, view.agent, view.task_index, seeds(view.keys))
        ):
            order = [(a + k) % N for k in range(1, N)]
            peers = tuple(records[b, j] for j in order if visible[m, j])
            round_ = int(view.state.round[b]) + 1
            requests.append(
                RefineRequest(self.tasks[t], int(a), records[b, a], peers, int(s), round_)
            )
        return self._to_batch(self.backend.refine(requests), requests, view.task_index)

    def answer_text(self, task_index: int, answer_id: int) -> str | None:
        return None if answer_id == UNPARSED else self._answers[answer_id]

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    def _answer_id(self, task_index: int, answer: str | None) -> tuple[int, bool]:
        task = self.tasks[task_index]
        norm = normalize_answer(task.kind, answer) if answer is not None else None
        if norm is None:
            return UNPARSED, False
        if norm not in self._ids:
            self._ids[norm] = len(self._answers)
            self._answers.append(norm)
        aid = self._ids[norm]
        key = (task_index, aid)
        if key not in self._correct:
            try:
                self._correct[key] = bool(verify(task, norm))
            except NotImplementedError:
                # A code task without unit tests: never count an unchecked answer right.
                self._correct[key] = False
        return aid, self._correct[key]

    def _to_batch(
        self,
        solutions: list[Solution],
        requests: Sequence[SolveRequest | RefineRequest],
        task_index: np.ndarray,
    ) -> SolutionBatch:
        source = f"backend {type(self.backend).__name__}"
        if not isinstance(solutions, Sequence) or len(solutions) != len(task_index):
            got = f"{len(solutions)} solutions" if isinstance(solutions, Sequence) else (
                type(solutions).__name__
            )  # fmt: skip
            raise RuntimeError(
                f"{source} returned {got} for {len(task_index)} requests; a backend must "
                "answer every request in order, with a list of Solution records"
            )
        check_solutions(solutions, requests, source)
        ids = [self._answer_id(int(t), sol.answer) for t, sol in zip(task_index, solutions)]
        records = np.empty(len(solutions), object)
        records[:] = solutions
        lp = [np.nan if s.logprob_confidence is None else s.logprob_confidence for s in solutions]
        # Confidences (and verifier scores) stay float64 until the env has clipped them: a
        # finite 1e300 would be an infinite float32. The state stores float32, rounding as
        # before.
        return SolutionBatch(
            answer=np.array([i for i, _ in ids], np.int32),
            correct=np.array([c for _, c in ids], bool),
            self_confidence=np.array([s.self_confidence for s in solutions], np.float64),
            judge_confidence=np.array([s.judge_confidence for s in solutions], np.float64),
            logprob_confidence=np.array(lp, np.float64),
            steps=np.array([s.steps for s in solutions], np.float32),
            operators=np.array([s.operators for s in solutions], np.float32),
            prompt_tokens=np.array([s.prompt_tokens for s in solutions], np.int64),
            completion_tokens=np.array([s.completion_tokens for s in solutions], np.int64),
            records=records,
            verifier_score=np.array(
                [np.nan if s.verifier_score is None else s.verifier_score for s in solutions],
                np.float64,
            ),
        )
