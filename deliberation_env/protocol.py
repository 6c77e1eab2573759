"""The port LLM agents plug into: the `Backend` protocol, its request/solution records, and
the array form (`BatchBackend`) the env core speaks.

A text backend (a Hugging Face model, an OpenAI-compatible server) implements `Backend`:
it turns batches of `SolveRequest` / `RefineRequest` into `Solution` records. The core
works on arrays, so `TextBackendAdapter` wraps any `Backend` into a `BatchBackend`:
it keeps the records, maps answers to integer ids (equal id <=> equal normalised answer)
and checks correctness with `tasks.verify`. The simulated backend implements `BatchBackend`
directly and never builds a string on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from deliberation_env.tasks.task import Task

if TYPE_CHECKING:  # `state` imports this module; State is a type-only dependency here
    from deliberation_env.state import State

UNPARSED = -1
"""Answer id of an unparseable answer: it agrees with nobody and is never correct."""


@dataclass(frozen=True)
class Solution:
    """One agent's current solution, as a backend produced it."""

    text: str
    """The reasoning, as generated (empty for the simulated backend)."""
    answer: str | None
    """Normalised final answer; None when unparseable."""
    self_confidence: float
    """Verbalised confidence in [0, 1]."""
    judge_confidence: float
    """A critic's estimate of correctness in [0, 1]."""
    logprob_confidence: float | None
    """Confidence from token log-probs, where the backend has them."""
    steps: int
    """Reasoning profile: number of steps."""
    operators: int
    """Reasoning profile: number of operations / logical operators."""
    prompt_tokens: int
    completion_tokens: int
    verifier_score: float | None = None
    """A verifier's (reward model's, judge model's) estimate in [0, 1] that the answer is
    correct; None without a verifier (`agents.verifier`)."""


@dataclass(frozen=True)
class SolveRequest:
    """Round 0: produce an initial solution to `task`."""

    task: Task
    agent: int
    seed: int
    """Per-request sampling seed, drawn from the env's seeded stream."""


@dataclass(frozen=True)
class RefineRequest:
    """A REFINE action: revise `own` having seen `peers` (untrusted content)."""

    task: Task
    agent: int
    own: Solution
    peers: tuple[Solution, ...]
    seed: int
    round: int = 1
    """The deliberation round this revision is for (1 = the first after the initial answers)."""


@runtime_checkable
class Backend(Protocol):
    """What an LLM backend implements. One call per round covers every agent of every env."""

    def solve(self, requests: Sequence[SolveRequest]) -> list[Solution]: ...

    def refine(self, requests: Sequence[RefineRequest]) -> list[Solution]: ...


@dataclass
class SolutionBatch:
    """`M` solutions as arrays, the form the core stores. Field meanings as in `Solution`."""

    answer: np.ndarray  # int32 [M], UNPARSED when None
    correct: np.ndarray  # bool [M]
    self_confidence: np.ndarray  # float32 [M]
    judge_confidence: np.ndarray  # float32 [M]
    logprob_confidence: np.ndarray  # float32 [M], NaN where unavailable
    steps: np.ndarray  # float32 [M]
    operators: np.ndarray  # float32 [M]
    prompt_tokens: np.ndarray  # int64 [M]
    completion_tokens: np.ndarray  # int64 [M]
    records: np.ndarray | None = field(default=None)  # object [M] of Solution, text backends only
    verifier_score: np.ndarray | None = field(default=None)  # float32 [M]; None: no verifier


@dataclass
class BatchView:
    """What a `BatchBackend` sees of the env state for one call.

    `env` and `agent` ([M]) name the requests; `state` is the core's state ([B, N] arrays,
    read-only by convention) so the backend can look at the requesting agent's peers;
    `keys` ([M], uint64) are per-request random keys. `peers` ([M, N] bool, REFINE only)
    marks the peers request m's agent reads under the env's communication graph
    (`deliberation_env.topology`; its own column False); None means every other agent of
    the env (the complete graph), the only value the core sends without a topology.
    """

    env: np.ndarray
    agent: np.ndarray
    task_index: np.ndarray  # [M] index into the bound task list
    keys: np.ndarray
    state: State
    peers: np.ndarray | None = None

    def peer_mask(self) -> np.ndarray:
        """``[M, N]`` bool: the peers each request's agent reads (`peers`, or all others)."""
        if self.peers is not None:
            return self.peers
        mask = np.ones((len(self.env), self.state.answer.shape[1]), bool)
        mask[np.arange(len(self.env)), self.agent] = False
        return mask


class BatchBackend(Protocol):
    """The array form of a backend, spoken by `deliberation_env.core`."""

    @property
    def concede_tokens(self) -> int:
        """Tokens a CONCEDE costs (a copy of a peer's solution; 0 for text backends)."""
        ...

    def bind(self, tasks: Sequence[Task], num_agents: int) -> None:
        """Called once with the env's task list before any request."""
        ...

    def solve_batch(self, view: BatchView) -> SolutionBatch: ...

    def refine_batch(self, view: BatchView) -> SolutionBatch: ...

    def answer_text(self, task_index: int, answer_id: int) -> str | None:
        """The answer string behind an id (for infos and transcripts)."""
        ...


class BatchBackendWrapper:
    """Base of a `BatchBackend` that wraps another (`inner`) and looks at or checks its
    batches: `bind` keeps the env's tasks and passes them on, `answer_text` and `close`
    go to `inner`. Subclasses define `solve_batch`, `refine_batch` and `concede_tokens`."""

    def __init__(self, inner: BatchBackend) -> None:
        self.inner = inner
        self.tasks: list[Task] = []

    def bind(self, tasks: Sequence[Task], num_agents: int) -> None:
        self.tasks = list(tasks)
        self.inner.bind(tasks, num_agents)

    def answer_text(self, task_index: int, answer_id: int) -> str | None:
        return self.inner.answer_text(task_index, answer_id)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()
