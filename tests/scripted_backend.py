"""A deterministic `BatchBackend` that returns scripted solutions, for hand-worked tests.

It is a real implementation of `deliberation_env.protocol.BatchBackend`: the env core
drives it exactly as it drives the simulated backend. Answer ids follow the simulator's
convention: 0 is the gold answer, k > 0 the k-th wrong answer, -1 unparseable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from deliberation_env.protocol import UNPARSED, BatchView, SolutionBatch
from deliberation_env.tasks import Task

R = 0
"""The gold answer id."""
W1, W2, W3 = 1, 2, 3
"""Wrong answer ids."""
X = UNPARSED
"""An unparseable answer."""

TASKS = (Task(id="scripted/0", question="What is 6 * 7?", answer="42", kind="numeric"),)
"""One question, so the env's task draw cannot matter."""


@dataclass(frozen=True)
class Say:
    """One scripted solution. Confidences are dyadic so float32 stores them exactly."""

    answer: int
    conf: float = 0.5
    judge: float = 0.5
    logprob: float | None = None
    steps: int = 3
    operators: int = 5
    prompt: int = 100
    completion: int = 200

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion


def answer_text(answer: int) -> str | None:
    """What `ScriptedBackend.answer_text` shows for an id (gold is ``TASKS[0].answer``)."""
    if answer == UNPARSED:
        return None
    return TASKS[0].answer if answer == R else f"wrong{answer}"


class ScriptedBackend:
    """Initial solutions per agent, then per-agent queues of REFINE results.

    Every env of a batch gets the same script; each env keeps its own position in the
    REFINE queues, which restart when the env is reset. `calls` records every batched call:
    ``(kind, [(env, agent), ...], answers [B, N] as the backend saw them)``.
    """

    def __init__(
        self,
        initial: Sequence[Say],
        refines: Mapping[int, Sequence[Say]] | None = None,
        concede_tokens: int = 30,
    ) -> None:
        self.initial = list(initial)
        self.refines = {a: list(q) for a, q in (refines or {}).items()}
        self.concede_tokens = concede_tokens
        self.calls: list[tuple[str, list[tuple[int, int]], np.ndarray]] = []
        self._position: dict[tuple[int, int], int] = {}
        self.tasks: list[Task] = []

    # -- BatchBackend ---------------------------------------------------------------
    def bind(self, tasks: Sequence[Task], num_agents: int) -> None:
        assert num_agents == len(self.initial), "script one initial solution per agent"
        self.tasks = list(tasks)

    def solve_batch(self, view: BatchView) -> SolutionBatch:
        pairs = self._record("solve", view)
        for env, agent in pairs:
            self._position[env, agent] = 0
        return _batch([self.initial[agent] for _, agent in pairs])

    def refine_batch(self, view: BatchView) -> SolutionBatch:
        pairs = self._record("refine", view)
        says = []
        for env, agent in pairs:
            queue = self.refines.get(agent, [])
            k = self._position[env, agent]
            if k >= len(queue):
                raise AssertionError(f"agent_{agent} of env {env} refined more often than scripted")
            says.append(queue[k])
            self._position[env, agent] = k + 1
        return _batch(says)

    def answer_text(self, task_index: int, answer_id: int) -> str | None:
        return answer_text(answer_id)

    # -- helpers --------------------------------------------------------------------
    def _record(self, kind: str, view: BatchView) -> list[tuple[int, int]]:
        pairs = [(int(b), int(a)) for b, a in zip(view.env, view.agent, strict=True)]
        self.calls.append((kind, pairs, np.array(view.state.answer, copy=True)))
        return pairs

    def refine_calls(self) -> list[tuple[str, list[tuple[int, int]], np.ndarray]]:
        return [c for c in self.calls if c[0] == "refine"]


def _batch(says: Sequence[Say]) -> SolutionBatch:
    return SolutionBatch(
        answer=np.array([s.answer for s in says], np.int32),
        correct=np.array([s.answer == R for s in says], bool),
        self_confidence=np.array([s.conf for s in says], np.float32),
        judge_confidence=np.array([s.judge for s in says], np.float32),
        logprob_confidence=np.array(
            [np.nan if s.logprob is None else s.logprob for s in says], np.float32
        ),
        steps=np.array([s.steps for s in says], np.float32),
        operators=np.array([s.operators for s in says], np.float32),
        prompt_tokens=np.array([s.prompt for s in says], np.int64),
        completion_tokens=np.array([s.completion for s in says], np.int64),
    )
