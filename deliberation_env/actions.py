"""The action set (`Action`, ``Discrete(3)``) and the validation of actions at the API edge:
an actions dict of the parallel env, an action array of the vector env."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

import numpy as np


class Action(IntEnum):
    """The meta-cognitive actions (MPDF)."""

    PERSIST = 0
    """Keep my answer; no LLM call."""
    REFINE = 1
    """The LLM revises my solution, seeing my peers' solutions."""
    CONCEDE = 2
    """Adopt a peer's solution (chosen by `concede_rule`)."""


NUM_ACTIONS = len(Action)
ACTION_HELP = ", ".join(f"{a.value}={a.name}" for a in Action)


def validate_actions(
    actions: Mapping[Any, Any], agents: Sequence[str], fix: str = "pass one action per agent"
) -> np.ndarray:
    """Check an actions dict against the live agents and return ``int64 [N]``.

    Raises a `ValueError` naming the culprit and the valid range.
    """
    if type(actions) is dict and len(actions) == len(agents):
        # The common case, checked in one pass: every agent's action a plain int in range.
        values = [actions.get(a) for a in agents]
        if all(type(v) is int and 0 <= v < NUM_ACTIONS for v in values):
            return np.array(values, np.int64)
    if not isinstance(actions, Mapping):
        raise ValueError(
            f"actions must be a dict {{agent: action}} for agents {list(agents)}, "
            f"got {type(actions).__name__}"
        )
    missing = [a for a in agents if a not in actions]
    extra = [a for a in actions if a not in agents]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unknown or finished agents {extra}")
        raise ValueError(f"actions dict: {'; '.join(parts)}; live agents are {list(agents)}: {fix}")
    out = np.empty(len(agents), np.int64)
    for i, agent in enumerate(agents):
        out[i] = _as_action(agent, actions[agent])
    return out


def _as_action(agent: str, value: Any) -> int:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"{agent}: action {value!r} ({type(value).__name__}) is not an integer in "
            f"Discrete({NUM_ACTIONS}) ({ACTION_HELP})"
        )
    if not 0 <= value < NUM_ACTIONS:
        raise ValueError(
            f"{agent}: action {value} is not in Discrete({NUM_ACTIONS}) ({ACTION_HELP})"
        )
    return int(value)


def check_action_array(actions: Any, shape: tuple[int, int]) -> np.ndarray:
    """Validate a vector env's action array ``[B, N]`` of ints in 0..2."""
    arr = np.asarray(actions)
    if arr.shape != shape:
        raise ValueError(f"actions must have shape {shape} (num_envs, num_agents), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if (
            np.issubdtype(arr.dtype, np.floating)
            and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr))
        ):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(
                f"actions must be integers in Discrete({NUM_ACTIONS}) ({ACTION_HELP}), "
                f"got dtype {arr.dtype}"
            )
    bad = (arr < 0) | (arr >= NUM_ACTIONS)
    if bad.any():
        e, a = np.argwhere(bad)[0]
        raise ValueError(
            f"env {e}, agent_{a}: action {arr[e, a]} is not in Discrete({NUM_ACTIONS}) "
            f"({ACTION_HELP})"
        )
    return arr
