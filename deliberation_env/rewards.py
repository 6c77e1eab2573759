"""Reward functions, as plain typed functions on ``[B, N]`` arrays.

The default is the paper's consensus-driven shaping (MPDF, arXiv 2509.03817; the exact form
is our reading, see docs/design_decisions.md#rewards):

    r_i = w_local * (c_i_after - c_i_before) + w_global * (C(all) - C(all \\ i))

where ``c_i`` is "agent i's answer is correct" and ``C(S)`` is "the plurality answer of the
agent set S is correct", both after the round. ``terminal`` gives every agent the team's
correctness at the end and 0 before. A ``token_cost`` per 1k tokens is subtracted in both.
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args

import numpy as np

RewardMode = Literal["consensus", "terminal"]
"""The reward of `EnvConfig.reward`: per-round consensus shaping or terminal team correctness."""
REWARDS: tuple[RewardMode, ...] = get_args(RewardMode)


class RewardTerms(Protocol):
    """What a reward function returns: named ``[B, N]`` float arrays; the reward is their sum."""

    def __getitem__(self, name: str) -> np.ndarray: ...


def consensus_terms(
    correct_before: np.ndarray,
    correct_after: np.ndarray,
    team_correct: np.ndarray,
    loo_correct: np.ndarray,
    w_local: float = 1.0,
    w_global: float = 1.0,
) -> dict[str, np.ndarray]:
    """Local and global terms of the consensus reward.

    Args:
        correct_before, correct_after: ``[B, N]`` agent correctness around the round.
        team_correct: ``[B]`` plurality of all agents is correct, after the round.
        loo_correct: ``[B, N]`` plurality of all agents but i is correct, after the round.
    """
    local = w_local * (correct_after.astype(np.float64) - correct_before)
    global_ = w_global * (team_correct[:, None].astype(np.float64) - loo_correct)
    return {"local": local, "global": global_}


def terminal_terms(
    team_correct: np.ndarray, done: np.ndarray, num_agents: int
) -> dict[str, np.ndarray]:
    """Team correctness for every agent of an env that just ended, else 0."""
    value = (team_correct & done).astype(np.float64)
    return {"terminal": np.repeat(value[:, None], num_agents, axis=1)}


def token_cost_term(tokens: np.ndarray, token_cost: float) -> np.ndarray:
    """``-token_cost`` per 1k tokens an agent used this round."""
    return -token_cost * tokens / 1000.0
