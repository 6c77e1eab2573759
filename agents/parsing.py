"""LLM text -> answer, reasoning profile and verbalised confidence.

Only ever call these on the model's own completion, never on the prompt: the prompt holds
peers' solutions, which are untrusted. As a second guard, any quoted block the model echoes
back (``<solution ...> ... </solution>``, see `agents.prompts`) is dropped before parsing,
and so are the self-report lines (``CONFIDENCE: 90`` is not an answer).

An answer that cannot be read is None: the env counts it as wrong, never as right.
"""

from __future__ import annotations

import re
import threading
from typing import NamedTuple

from agents.prompts import QUOTE_TAGS
from deliberation_env.protocol import Solution
from deliberation_env.tasks.task import TASK_KINDS
from deliberation_env.tasks.verify import last_boxed, normalize_answer, parse_number

__all__ = [
    "DEFAULT_CONFIDENCE",
    "MAX_OPERATORS",
    "MAX_STEPS",
    "SelfReport",
    "extract_code",
    "own_text",
    "parse_answer",
    "parse_answer_span",
    "parse_confidence",
    "parse_judge",
    "parse_self_report",
    "solution_from_text",
]

DEFAULT_CONFIDENCE = 0.5
"""Confidence when a completion reports none: the uninformative midpoint, so a missing
report neither looks sure nor looks doubtful to the meta-policy."""
MAX_STEPS = 100
MAX_OPERATORS = 1000
"""Self-reported counts are clamped to ``[0, MAX_*]``: a model may write anything there."""
MATH_VERIFY_TIMEOUT_S = 2
# Longer inputs are cut (keeping the end, where the answer is) before regex and sympy work.
_MAX_PARSE_CHARS = 20_000

_TAGS = "|".join(QUOTE_TAGS)
# An echoed quote block, closed or running to the end of the text.
_QUOTE_BLOCK_RE = re.compile(
    rf"<\s*({_TAGS})\b[^>]*>.*?(?:<\s*/\s*\1\s*>|\Z)", re.IGNORECASE | re.DOTALL
)
_STRAY_TAG_RE = re.compile(rf"<\s*/?\s*(?:{_TAGS})\b[^>]*>", re.IGNORECASE)
_REPORT_LINE_RE = re.compile(
    r"^[\s*#>_-]*(STEPS|OPERATORS|CONFIDENCE|P\(CORRECT\))\s*[*_]*\s*[:=]\s*[*_]*\s*(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K's "<<2*3=6>>" annotations

# A number: optional sign (ASCII or unicode minus), digits with optional thousands commas,
# decimals, exponent. Bounded repetitions keep the regex linear on adversarial input.
_NUM = r"[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d{1,4})?"
_NUM_RE = re.compile(rf"(?<![\w.]){_NUM}(?:\s*/\s*\d+(?![\d.]))?")
_HASHES_RE = re.compile(r"^[ \t]*####[ \t]*(.*)$", re.MULTILINE)
_PHRASE_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*[:\s]*(.+)$",
    re.IGNORECASE | re.MULTILINE,
)
# A choice letter: any case inside brackets or ending the line, else upper case only ("the
# answer is a bit..." is not option A).
_LETTER = (
    r"(?:\(\s*([A-Ja-j])\s*\)|\[\s*([A-Ja-j])\s*\]|([A-J])(?![A-Za-z0-9])"
    r"|([a-j])(?=[ \t]*[.)]?[ \t*_]*(?:\n|$)))"
)
_CHOICE_PHRASE_RE = re.compile(
    rf"(?i:answer|option|choice)(?:\s+(?i:is))?\s*(?:[:=]|(?i:is))?\s*[*_]*\s*"
    rf"(?:(?i:option|choice)\s+)?{_LETTER}"
)
# A line that is only an option: "(B)", "B.", "**B**", "B) 42".
_CHOICE_LINE_RE = re.compile(
    r"^[ \t*_>]*(?:\(\s*([A-Ja-j])\s*\)|([A-J])[ \t]*[.):]|([A-J])[ \t*_]*$)",
    re.MULTILINE,
)
_CODE_BLOCK_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_OPERATOR_RE = re.compile(
    r"(?<=[\d)\]}a-zA-Z])\s*(?:[+*/\u00d7\u00f7\u22c5\u00b7^=-]|\u2212)\s*(?=[\d(\[{$.a-zA-Z])"
    r"|\\(?:times|cdot|div|frac|sqrt|pm)\b"
    r"|\b(?:and|or|not|implies)\b",
)
_SENTENCE_RE = re.compile(r"[.!?](?:\s+|$)")


class SelfReport(NamedTuple):
    """The reasoning profile and verbalised confidence of one completion."""

    steps: int
    """STEPS line, else the number of reasoning lines (sentences for a one-line text)."""
    operators: int
    """OPERATORS line, else the arithmetic/logical operators counted in the text."""
    confidence: float
    """CONFIDENCE line in [0, 1], else `DEFAULT_CONFIDENCE`."""


Span = tuple[int, int]
"""``(start, end)`` character offsets into a completion."""


def _blank(m: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", m.group(0))


def own_text(text: str | None) -> str:
    """The completion with echoed quote blocks, stray delimiters and self-report lines blanked.

    Blanked, not removed: they become spaces (newlines kept), so offsets into the result
    are offsets into the completion (into its last `_MAX_PARSE_CHARS` characters when it
    is longer than that).
    """
    if not text:
        return ""
    if len(text) > _MAX_PARSE_CHARS:
        text = text[-_MAX_PARSE_CHARS:]
    text = _QUOTE_BLOCK_RE.sub(_blank, text)
    text = _STRAY_TAG_RE.sub(_blank, text)
    return _REPORT_LINE_RE.sub(_blank, text)


def parse_answer(text: str | None, kind: str) -> str | None:
    """The normalised final answer of a completion, or None when there is none.

    `kind` is `Task.kind`. In order, the first that reads wins:

    - every kind but code: the last ``\\boxed{...}`` (braces balanced). A box that is
      there but unreadable for the kind gives None: the model declared that answer.
    - ``numeric``/``math``: the last GSM8K-style ``#### N`` line; then the last
      "answer is X" / "Answer: X" phrase; then math-verify's extraction; then, for
      ``numeric`` only, the last number in the text.
    - ``choice``: the last "answer is (B)" / "Answer: B" / "option C" phrase, else the last
      line that is only a letter ("(B)", "B.", "**B**").
    - ``code``: the last fenced code block, Python-labelled blocks first.

    Answers come back in `deliberation_env.tasks.normalize_answer` form.
    """
    return parse_answer_span(text, kind)[0]


def parse_answer_span(text: str | None, kind: str) -> tuple[str | None, Span | None]:
    """`parse_answer` plus where the answer was read in `text` (for answer log-probs).

    The span is None when there is no answer, or when it cannot be located (an answer
    math-verify rewrote).
    """
    if kind not in TASK_KINDS:
        raise ValueError(f"answer kind {kind!r} is not one of {TASK_KINDS}")
    offset = max(0, len(text or "") - _MAX_PARSE_CHARS)
    answer, span = _parse(own_text(text), kind)
    if answer is None or span is None:
        return answer, None
    return answer, (span[0] + offset, span[1] + offset)


def _parse(text: str, kind: str) -> tuple[str | None, Span | None]:
    if not text.strip():
        return None, None
    if kind == "code":
        found = _code_block(text)
        if found is None:
            return None, None
        return normalize_answer("code", found[0]), found[1]

    boxed = last_boxed(text)
    if boxed is not None:
        start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
        begin = text.find(boxed, start)
        return normalize_answer(kind, boxed), (begin, begin + len(boxed))
    if kind == "choice":
        return _parse_choice(text)

    hashes = [m for m in _HASHES_RE.finditer(text) if m.group(1).strip()]
    candidates = [hashes[-1]] if hashes else []
    phrases = list(_PHRASE_RE.finditer(text))
    candidates += phrases[-1:]
    for m in candidates:
        answer, span = _read(kind, m.group(1))
        if answer is not None:
            return answer, (m.start(1) + span[0], m.start(1) + span[1])
    extracted = _math_verify_extract(text, kind)
    if extracted is not None:
        return extracted
    if kind == "numeric":
        numbers = list(_NUM_RE.finditer(_CALCULATOR_RE.sub(_blank, text)))
        if numbers:
            m = numbers[-1]
            return normalize_answer("numeric", m.group(0).replace("\u2212", "-")), m.span()
    return None, None


def _read(kind: str, raw: str) -> tuple[str | None, Span]:
    """An answer from a short span: the whole span, else its first number (numeric only)."""
    stripped = raw.strip().rstrip(".").strip()
    begin = raw.find(stripped) if stripped else 0
    whole = (begin, begin + len(stripped))
    if not stripped:
        return None, whole
    answer = normalize_answer(kind, stripped)
    if answer is not None or kind != "numeric":
        return answer, whole
    m = _NUM_RE.search(raw)
    if m is None:
        return None, whole
    return normalize_answer(kind, m.group(0).replace("\u2212", "-")), m.span()


def _parse_choice(text: str) -> tuple[str | None, Span | None]:
    for pattern in (_CHOICE_PHRASE_RE, _CHOICE_LINE_RE):
        matches = list(pattern.finditer(text))
        if matches:
            m = matches[-1]
            group = next(i for i, g in enumerate(m.groups(), start=1) if g)
            return normalize_answer("choice", m.group(group).upper()), m.span(group)
    return None, None


def _code_block(text: str) -> tuple[str, Span] | None:
    blocks = list(_CODE_BLOCK_RE.finditer(text))
    python = [m for m in blocks if m.group(1).lower() in ("python", "py", "python3")]
    chosen = (python or blocks)[-1:] if blocks else []
    if not chosen:
        return None
    m = chosen[0]
    code = m.group(2).strip()
    if not code:
        return None
    begin = m.start(2) + m.group(2).find(code)
    return code, (begin, begin + len(code))


def extract_code(text: str) -> str | None:
    """The last ```python block (else the last fenced block of any language), stripped."""
    found = _code_block(text)
    return None if found is None else found[0]


def _math_verify_extract(text: str, kind: str) -> tuple[str | None, Span | None] | None:
    from math_verify import parse

    # signal.alarm, math-verify's timeout, only works in the main thread.
    in_main = threading.current_thread() is threading.main_thread()
    tail = text[-2000:]
    try:
        found = parse(tail, parsing_timeout=MATH_VERIFY_TIMEOUT_S if in_main else None)
    except Exception:  # sympy can fail in many ways on junk; junk has no answer
        return None
    if len(found) < 2 or not isinstance(found[-1], str):
        return None
    answer = normalize_answer(kind, found[-1])
    if answer is None:
        return None
    begin = text.rfind(found[-1])
    return answer, (None if begin < 0 else (begin, begin + len(found[-1])))


# ---------------------------------------------------------------------- self-report
def _report_values(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for m in _REPORT_LINE_RE.finditer(text):
        values[m.group(1).upper()] = m.group(2).strip()  # the last of each wins
    return values


def _first_number(raw: str | None) -> float | None:
    if not raw:
        return None
    m = re.search(r"[-+\u2212]?\d+(?:\.\d+)?", raw)
    if m is None:
        return None
    value = parse_number(m.group(0), allow_units=False)
    return None if value is None else float(value)


def _as_probability(raw: str | None) -> float | None:
    """``"85"``, ``"85%"``, ``"85/100"`` -> 0.85; ``"0.85"`` -> 0.85 (a decimal <= 1 is read
    as a probability, an integer as a percentage); clamped to [0, 1]."""
    value = _first_number(raw)
    if value is None:
        return None
    m = re.search(r"\d+(?:\.\d+)?", raw or "")
    is_fraction = m is not None and "." in m.group(0) and value <= 1.0 and "%" not in (raw or "")
    prob = value if is_fraction else value / 100.0
    return min(1.0, max(0.0, prob))


def parse_confidence(text: str | None) -> float | None:
    """The ``CONFIDENCE:`` line of a completion in [0, 1], or None when it has none."""
    return _as_probability(_report_values(text or "").get("CONFIDENCE"))


def parse_judge(text: str | None) -> float | None:
    """A grader's ``P(CORRECT): n`` (or ``CONFIDENCE: n``) in [0, 1], or None."""
    values = _report_values(text or "")
    raw = values.get("P(CORRECT)", values.get("CONFIDENCE"))
    return _as_probability(raw)


def _count(raw: str | None, maximum: int) -> int | None:
    value = _first_number(raw)
    if value is None:
        return None
    return int(min(maximum, max(0, round(value))))


def parse_self_report(text: str | None) -> SelfReport:
    """``STEPS:``, ``OPERATORS:`` and ``CONFIDENCE:`` lines, with fallbacks.

    Fallbacks when a line is missing or unreadable: steps = non-empty reasoning lines
    (sentences when the reasoning is one line); operators = arithmetic (``+ - * / × ÷ ^ =``,
    ``\\frac``, ``\\times`` ...) and logical (and/or/not) operators counted in the text,
    GSM8K ``<<...>>`` annotations excluded; confidence = `DEFAULT_CONFIDENCE`. Counts are
    clamped to ``[0, MAX_STEPS]`` / ``[0, MAX_OPERATORS]``, confidence to [0, 1].
    """
    text = text or ""
    values = _report_values(text)
    body = _CALCULATOR_RE.sub(" ", own_text(text))
    steps = _count(values.get("STEPS"), MAX_STEPS)
    if steps is None:
        lines = [ln for ln in body.splitlines() if ln.strip() and ln.strip() != "```"]
        if len(lines) == 1:
            steps = len([s for s in _SENTENCE_RE.split(lines[0]) if s.strip()])
        else:
            steps = len(lines)
        steps = min(MAX_STEPS, steps)
    operators = _count(values.get("OPERATORS"), MAX_OPERATORS)
    if operators is None:
        operators = min(MAX_OPERATORS, len(_OPERATOR_RE.findall(body)))
    confidence = _as_probability(values.get("CONFIDENCE"))
    return SelfReport(steps, operators, DEFAULT_CONFIDENCE if confidence is None else confidence)


def solution_from_text(
    text: str,
    kind: str,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    logprob_confidence: float | None = None,
    judge_confidence: float | None = None,
) -> Solution:
    """A `Solution` from a completion: answer, self-report and the given measurements.

    Without a judge (`judge_confidence` None) the judge confidence is the verbalised one
    (itself `DEFAULT_CONFIDENCE` when the completion reports none), so the feature stays
    defined and carries no invented signal.
    """
    report = parse_self_report(text)
    return Solution(
        text=text,
        answer=parse_answer(text, kind),
        self_confidence=report.confidence,
        judge_confidence=report.confidence if judge_confidence is None else judge_confidence,
        logprob_confidence=logprob_confidence,
        steps=report.steps,
        operators=report.operators,
        prompt_tokens=int(prompt_tokens),
        completion_tokens=int(completion_tokens),
    )
