"""`State`: the arrays of B envs x N agents that the core advances, one field per
quantity (solution fields mirror `deliberation_env.protocol.SolutionBatch`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deliberation_env.actions import NUM_ACTIONS
from deliberation_env.protocol import UNPARSED


@dataclass
class State:
    """Arrays of B envs x N agents. Solution fields mirror `SolutionBatch`."""

    answer: np.ndarray  # int32 [B, N]
    correct: np.ndarray  # bool
    self_confidence: np.ndarray  # float32
    judge_confidence: np.ndarray
    logprob_confidence: np.ndarray  # NaN where unavailable
    verifier_score: np.ndarray  # float32, NaN where no verifier scored the solution
    steps: np.ndarray
    operators: np.ndarray
    length: np.ndarray  # int64, completion tokens of the current solution
    records: np.ndarray  # object, `Solution` records of text backends (None for simulated)
    changed: np.ndarray  # bool, answer changed last round
    last_action: np.ndarray  # int8, -1 before the first round
    task_index: np.ndarray  # int64 [B]
    round: np.ndarray  # int32 [B], rounds played
    key: np.ndarray  # uint64 [B], the episode's dynamics key
    tokens: np.ndarray  # int64 [B], tokens spent this episode (initial answers included)
    action_counts: np.ndarray  # int64 [B, 3]
    graph: np.ndarray  # bool [B, T, N, N]: agent i reads agent j in round r (`topology`)

    @classmethod
    def empty(cls, B: int, N: int, T: int = 1) -> State:
        f32 = np.zeros((B, N), np.float32)
        return cls(
            answer=np.full((B, N), UNPARSED, np.int32),
            correct=np.zeros((B, N), bool),
            self_confidence=f32.copy(),
            judge_confidence=f32.copy(),
            logprob_confidence=f32.copy(),
            verifier_score=np.full((B, N), np.nan, np.float32),
            steps=f32.copy(),
            operators=f32.copy(),
            length=np.zeros((B, N), np.int64),
            records=np.full((B, N), None, object),
            changed=np.zeros((B, N), bool),
            last_action=np.full((B, N), -1, np.int8),
            task_index=np.zeros(B, np.int64),
            round=np.zeros(B, np.int32),
            key=np.zeros(B, np.uint64),
            tokens=np.zeros(B, np.int64),
            action_counts=np.zeros((B, NUM_ACTIONS), np.int64),
            graph=np.ones((B, T, N, N), bool),
        )


SOLUTION_FIELDS = (
    "answer",
    "correct",
    "self_confidence",
    "judge_confidence",
    "logprob_confidence",
    "verifier_score",
    "steps",
    "operators",
    "length",
    "records",
)
