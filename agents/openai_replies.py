"""Chat completion replies of an OpenAI-compatible server, read into the parts
`agents.openai_compat.OpenAIBackend` keeps (`Completion`) and then into `Solution` s.

The answer's log-prob confidence is exp(mean log-prob) of the answer's tokens, as in
`agents.hf` (where the server returns log-probs). Token counts the server does not report
are estimated at about 4 characters per token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agents.parsing import parse_answer_span, solution_from_text
from agents.prompts import Message
from agents.text_backend import with_judge
from deliberation_env.protocol import Solution
from deliberation_env.tasks.task import Task

__all__ = [
    "Completion",
    "answer_logprob_confidence",
    "judged_solution",
    "parse_completion",
    "reply_solution",
]

Completion = dict[str, Any]
"""One completion as the cache stores it: ``text``, ``tokens`` and ``logprobs`` (lists of
equal length, or None), ``prompt_tokens``, ``completion_tokens`` (None when the server
did not report usage) and ``finish_reason``."""


def parse_completion(data: Any) -> Completion:
    """The parts of a chat completion reply the backend uses; raises on a malformed reply."""
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    if not isinstance(text, str):
        raise TypeError(f"message content is {type(text).__name__}, not a string")
    tokens = logprobs = None
    lp = choice.get("logprobs")
    if isinstance(lp, Mapping) and lp.get("content"):
        tokens = [_token_text(t) for t in lp["content"]]
        logprobs = [float(t["logprob"]) for t in lp["content"]]
    elif isinstance(lp, Mapping) and lp.get("token_logprobs"):  # legacy completions shape
        tokens = [str(t) for t in lp.get("tokens") or []]
        logprobs = [float(x) for x in lp["token_logprobs"]]
    usage = data.get("usage") or {}
    return {
        "text": text,
        "tokens": tokens,
        "logprobs": logprobs,
        "prompt_tokens": _int_or_none(usage.get("prompt_tokens")),
        "completion_tokens": _int_or_none(usage.get("completion_tokens")),
        "finish_reason": choice.get("finish_reason"),
    }


def _token_text(entry: Mapping[str, Any]) -> str:
    """A token's text from its raw ``bytes`` where the server gives them: a token that is
    part of a multi-byte character keeps its bytes (as surrogate escapes), so the tokens
    still spell the completion byte for byte."""
    raw = entry.get("bytes")
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw).decode("utf-8", "surrogateescape")
    return str(entry.get("token", ""))


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------- solutions
def _estimate_tokens(text: str) -> int:
    """About 4 characters per token, the usual rule of thumb, when the server reports none."""
    return math.ceil(len(text) / 4)


def _prompt_tokens(c: Completion, messages: Sequence[Message]) -> int:
    if c.get("prompt_tokens") is not None:
        return int(c["prompt_tokens"])
    return sum(_estimate_tokens(m["content"]) + 4 for m in messages)  # + role/format tokens


def _completion_tokens(c: Completion) -> int:
    if c.get("completion_tokens") is not None:
        return int(c["completion_tokens"])
    return len(c["tokens"]) if c.get("tokens") else _estimate_tokens(c["text"])


def reply_solution(task: Task, c: Completion, messages: Sequence[Message]) -> Solution:
    """The `Solution` of completion `c` to `messages`: parsed answer, self-report, tokens."""
    text = c["text"]
    return solution_from_text(
        text,
        task.kind,
        prompt_tokens=_prompt_tokens(c, messages),
        completion_tokens=_completion_tokens(c),
        logprob_confidence=answer_logprob_confidence(
            text, task.kind, c.get("tokens"), c.get("logprobs")
        ),
    )


def judged_solution(s: Solution, graded: Completion, messages: Sequence[Message]) -> Solution:
    """`s` graded by the judge's completion `graded` to `messages`."""
    return with_judge(
        s, graded["text"], _prompt_tokens(graded, messages), _completion_tokens(graded)
    )


def answer_logprob_confidence(
    text: str, kind: str, tokens: Sequence[str] | None, logprobs: Sequence[float] | None
) -> float | None:
    """exp(mean log-prob) of the answer's tokens, in [0, 1]; None without log-probs.

    The same measure as `agents.hf.HFBackend.answer_confidence`: the answer's span comes
    from `agents.parsing.parse_answer_span`, the tokens overlapping it are found by their
    byte offsets (a multi-byte character may be split across tokens), and their mean
    log-prob is exponentiated (the per-token geometric mean probability, Xiong et al.,
    arXiv 2306.13063). When the span cannot be located (no answer, or tokens that do not
    spell the text) the mean runs over the whole completion.
    """
    if not logprobs:
        return None
    lps = [lp if math.isfinite(lp) else -1e4 for lp in logprobs]
    picked = lps
    _, span = parse_answer_span(text, kind)
    if span is not None and tokens is not None and len(tokens) == len(lps):
        spelled = [t.encode("utf-8", "surrogateescape") for t in tokens]
        if b"".join(spelled) == text.encode("utf-8", "surrogateescape"):
            lo = len(text[: span[0]].encode("utf-8", "surrogateescape"))
            hi = lo + len(text[span[0] : span[1]].encode("utf-8", "surrogateescape"))
            pos, inside = 0, []
            for tok, lp in zip(spelled, lps):
                end = pos + len(tok)
                if end > lo and pos < hi:
                    inside.append(lp)
                pos = end
            picked = inside or lps
    return float(min(1.0, math.exp(sum(picked) / len(picked))))
