"""What the two text backends (`agents.hf`, `agents.openai_compat`) share: the chat messages
of a request, the judge pass's effect on a solution, and the checks of their arguments."""

from __future__ import annotations

import dataclasses

from agents.parsing import parse_judge
from agents.prompts import Message, refine_messages, solve_messages
from deliberation_env.protocol import RefineRequest, Solution, SolveRequest

__all__ = ["check_int", "check_sampling", "request_messages", "with_judge"]


def request_messages(
    request: SolveRequest | RefineRequest, max_solution_chars: int
) -> list[Message]:
    """The chat messages of a solve or refine request (`agents.prompts`)."""
    if isinstance(request, RefineRequest):
        return refine_messages(
            request.task, request.agent, request.own, request.peers, max_solution_chars
        )
    return solve_messages(request.task)


def with_judge(
    solution: Solution, judge_text: str, prompt_tokens: int, completion_tokens: int
) -> Solution:
    """`solution` graded by a judge reply: its ``P(CORRECT)`` becomes the judge confidence
    (the verbalised confidence when the reply has none), and its tokens count towards the
    solution's."""
    p = parse_judge(judge_text)
    return dataclasses.replace(
        solution,
        judge_confidence=solution.self_confidence if p is None else p,
        prompt_tokens=solution.prompt_tokens + prompt_tokens,
        completion_tokens=solution.completion_tokens + completion_tokens,
    )


def check_int(name: str, value: object, low: int) -> None:
    """Raise a `ValueError` naming `name` unless `value` is an integer >= `low`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_sampling(temperature: float, top_p: float) -> None:
    """Raise a `ValueError` for a negative temperature or a `top_p` outside (0, 1]."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
