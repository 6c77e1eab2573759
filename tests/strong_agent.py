"""A `BatchBackend` with one much stronger agent, for the topology baselines' tests.

Agent 0 is always right (answer id 0) and confident; every other agent starts right with
probability `weak_accuracy`, else on the shared wrong answer 1, with a low judge
confidence. A REFINE of a weak agent copies the answer of one peer it reads, drawn
uniformly (it keeps its own with no peer); agent 0 keeps its answer. So reading agent 0
helps and reading a weak peer hurts: a learned graph should keep the edges into agent 0.
Prompt tokens grow with the peers read (100 + 200 per peer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deliberation_env import rng
from deliberation_env.backends import register_backend
from deliberation_env.protocol import BatchView, SolutionBatch
from deliberation_env.tasks import Task

NAME = "strong_agent_test"


class StrongAgentBackend:
    concede_tokens = 30

    def __init__(self, weak_accuracy: float = 0.2) -> None:
        self.weak_accuracy = weak_accuracy

    def bind(self, tasks: Sequence[Task], num_agents: int) -> None:
        self.num_agents = num_agents

    def solve_batch(self, view: BatchView) -> SolutionBatch:
        u = rng.uniform(view.keys, 1)[:, 0]
        strong = view.agent == 0
        answer = np.where(strong | (u < self.weak_accuracy), 0, 1)
        return self._batch(answer, strong, np.zeros(len(answer), int))

    def refine_batch(self, view: BatchView) -> SolutionBatch:
        peers = view.peer_mask()
        answers = view.state.answer[view.env]  # [M, N]
        u = rng.uniform(view.keys, 1)[:, 0]
        count = peers.sum(1)
        # The k-th visible peer, k uniform in 0..count-1.
        k = np.minimum((u * np.maximum(count, 1)).astype(int), np.maximum(count - 1, 0))
        rank = np.cumsum(peers, axis=1) - 1
        pick = np.argmax(peers & (rank == k[:, None]), axis=1)
        own = answers[np.arange(len(pick)), view.agent]
        copied = answers[np.arange(len(pick)), pick]
        strong = view.agent == 0
        answer = np.where(strong | (count == 0), own, copied)
        return self._batch(answer, strong, count)

    def answer_text(self, task_index: int, answer_id: int) -> str | None:
        return None if answer_id < 0 else str(answer_id)

    @staticmethod
    def _batch(answer: np.ndarray, strong: np.ndarray, peers: np.ndarray) -> SolutionBatch:
        M = len(answer)
        judge = np.where(strong, 0.9, 0.3).astype(np.float32)
        return SolutionBatch(
            answer=answer.astype(np.int32),
            correct=answer == 0,
            self_confidence=judge.copy(),
            judge_confidence=judge,
            logprob_confidence=np.full(M, np.nan, np.float32),
            steps=np.full(M, 3, np.float32),
            operators=np.full(M, 5, np.float32),
            prompt_tokens=(100 + 200 * np.asarray(peers)).astype(np.int64),
            completion_tokens=np.full(M, 200, np.int64),
        )


register_backend(NAME, StrongAgentBackend)
