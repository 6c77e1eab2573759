"""Answer checking: `normalize_answer` (the canonical form agents' answers are compared in)
and `verify(task, answer)` (is an answer right?)."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from deliberation_env.tasks.programs import complete_program
from deliberation_env.tasks.sandbox import run_candidate
from deliberation_env.tasks.task import CHOICE_LETTERS, TASK_KINDS, Task, TaskKind

__all__ = ["last_boxed", "normalize_answer", "parse_number", "verify"]

REL_TOL = 1e-6
ABS_TOL = 1e-9
# Past float range an "answer" is an overflow or garbage, and exact integers that long are
# slow to print (Python caps int -> str at 4300 digits).
_MAX_DIGITS = 300
"""Significant digits beyond which a token is not read as a number (Python refuses to print
an int of more than 4300 digits)."""
_MAX_EXPONENT = 300
_LONG_DIGITS_RE = re.compile(rf"\d{{{_MAX_DIGITS + 1}}}")
# Seconds math-verify may spend parsing or comparing one expression (main thread only).
MATH_VERIFY_TIMEOUT_S = 5

_NUMBER = r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][+-]?\d+)?|[+-]?\.\d+(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(rf"(?P<num>{_NUMBER})(?:\s*/\s*(?P<den>{_NUMBER}))?")
_FRAC_RE = re.compile(r"(?P<sign>[+-]?)\\[dt]?frac\{(?P<num>[^{}]+)\}\{(?P<den>[^{}]+)\}")
# "x = 5", "Answer: 5": a leading label is not part of the number.
_LABEL_RE = re.compile(r"^(?:[A-Za-z]\w*\s*=|(?:final\s+)?answer\s*(?:is|:))\s*", re.IGNORECASE)
# Trailing unit words ("18 dollars", "5 km/h", "3 apples."); only letters, so digits
# after a number never vanish silently.
_UNIT_RE = re.compile(r"\s*[A-Za-z][A-Za-z\s'/.^-]*$")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_CHOICE_RE = re.compile(r"^(?:\(([A-J])\)|([A-J])(?=$|[.:)]))")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in `text`, braces balanced.

    ``\\boxed 5`` (no braces) is accepted too. Returns None when there is none, or when
    its braces never close.
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if text.startswith(" ", i) and not text.startswith(" {", i):
        # `\boxed 5`: the argument runs to the next space or `$`.
        return re.split(r"[\s$]", text[i + 1 :], maxsplit=1)[0] or None
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def _strip_math_wrappers(text: str) -> str:
    s = text.strip()
    boxed = last_boxed(s)
    if boxed is not None:
        s = boxed.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : -len(right)].strip()
            break
    return s.rstrip(".").strip()


def _to_fraction(token: str) -> Fraction | None:
    try:
        d = Decimal(token.replace(",", ""))
    except InvalidOperation:
        return None
    if not d.is_finite() or (d != 0 and abs(d.adjusted()) > _MAX_EXPONENT):
        return None
    if len(d.as_tuple().digits) > _MAX_DIGITS:  # no answer is written with this many digits
        return None
    return Fraction(d)


def parse_number(text: str | None, *, allow_units: bool = True) -> Fraction | None:
    """Read a final answer as an exact number, or None when it is not one.

    Accepts ``"1,000"``, ``"$3.50"``, ``"-0"``, ``"3/4"``, ``"\\frac{3}{4}"``, ``"4.5e33"``,
    ``"\\boxed{12}"``, ``"50%"`` (read as 50, as GSM8K-style gold answers write it) and,
    with `allow_units`, a label or trailing unit words (``"x = 5"``, ``"18 dollars"``).
    """
    if text is None:
        return None
    s = _strip_math_wrappers(text)
    s = s.replace("\u2212", "-").replace("\\$", "").replace("\\%", "").replace("%", "")
    s = s.replace("{,}", ",").replace("\\,", "").replace("\\!", "").replace("\\ ", " ")
    s = _TEXT_CMD_RE.sub(r" \1", s).strip()
    if allow_units:
        s = _LABEL_RE.sub("", s)
    s = s.replace("$", "").strip()
    if allow_units:
        s = _UNIT_RE.sub("", s).strip()
    m = _FRAC_RE.fullmatch(s)
    if m:
        num, den = _to_fraction(m["num"].strip()), _to_fraction(m["den"].strip())
        if num is None or den is None or den == 0:
            return None
        value = num / den
        return -value if m["sign"] == "-" else value
    m = _NUMBER_RE.fullmatch(s)
    if not m:
        return None
    whole = _to_fraction(m["num"])
    if whole is None or m["den"] is None:
        return whole
    den = _to_fraction(m["den"])
    if den is None or den == 0:
        return None
    return whole / den


def _format_number(value: Fraction) -> str:
    """Canonical text: an integer, else a terminating decimal, else ``p/q``."""
    num, den = value.numerator, value.denominator
    if den == 1:
        return str(num)
    twos = fives = 0
    rest = den
    while rest % 2 == 0:
        rest //= 2
        twos += 1
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    if rest != 1:
        return f"{num}/{den}"
    places = max(twos, fives)
    digits = str(abs(num) * (10**places // den)).rjust(places + 1, "0")
    text = f"{digits[:-places]}.{digits[-places:]}".rstrip("0").rstrip(".")
    return f"-{text}" if num < 0 else text


def _normalize_math(text: str) -> str | None:
    s = _strip_math_wrappers(text)
    number = parse_number(s, allow_units=False)
    if number is not None:
        return _format_number(number)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\left\b|\\right\b|\\!|\\,|\\;|\\:", "", s)
    s = re.sub(r"\s+", " ", s)
    # Spaces only matter between two letters ("\pi r"); elsewhere LaTeX ignores them.
    s = re.sub(r"(?<=[^A-Za-z])\s|\s(?=[^A-Za-z])", "", s).strip()
    return s or None


def _normalize_choice(text: str) -> str | None:
    s = _strip_math_wrappers(text).strip("*_ \t\n")
    s = _TEXT_CMD_RE.sub(r"\1", s).strip()
    if len(s) == 1 and s in "0123456789":  # not isdigit(): "¹" is a digit int() refuses
        return CHOICE_LETTERS[int(s)]
    m = _CHOICE_RE.match(s.upper())
    if m is None:
        return None
    return m[1] or m[2]


def normalize_answer(kind: TaskKind | str, text: str | None) -> str | None:
    """The canonical form of an answer, so that equal strings mean agreeing answers.

    - ``numeric``: a plain number (``"1,000"`` -> ``"1000"``, ``"$3.50"`` -> ``"3.5"``,
      ``"-0"`` -> ``"0"``, ``"1/2"`` -> ``"0.5"``, ``"1/3"`` stays ``"1/3"``); None when the
      text is not a number.
    - ``choice``: an upper-case letter: ``"b"``, ``"(b)"``, ``"B."``, ``"B) text"`` -> ``"B"``;
      a single digit is a 0-based option index (``"1"`` -> ``"B"``).
    - ``math``: the LaTeX with ``\\boxed{}``/``$`` wrappers and spacing removed
      (``\\dfrac`` -> ``\\frac``); plain numbers as for ``numeric``.
    - ``code``: the stripped text.

    Returns None for None or empty text, for text the kind cannot read, and (but for code)
    for text with a run of more than `_MAX_DIGITS` digits: no answer is written so.
    """
    if kind not in TASK_KINDS:
        raise ValueError(f"answer kind {kind!r} is not one of {TASK_KINDS}")
    if text is None or not text.strip():
        return None
    if kind != "code" and _LONG_DIGITS_RE.search(text):
        return None
    if kind == "numeric":
        number = parse_number(text)
        return None if number is None else _format_number(number)
    if kind == "choice":
        return _normalize_choice(text)
    if kind == "math":
        return _normalize_math(text)
    return text.strip()


def _numbers_close(a: Fraction, b: Fraction) -> bool:
    # Two integers must match exactly: the relative tolerance is for rounded decimals, and
    # would otherwise accept 1201566 for 1201565.
    if a.denominator == 1 and b.denominator == 1:
        return a == b
    return abs(a - b) <= max(ABS_TOL, REL_TOL * max(abs(a), abs(b)))


@functools.lru_cache(maxsize=1)
def _math_verify() -> tuple[Callable[..., Any], Callable[..., Any]]:
    # Imported on first use: math-verify pulls in sympy, a second of start-up that
    # numeric-only users should not pay.
    from math_verify import parse, verify

    return parse, verify


def _as_latex(normalized: str) -> str:
    number = parse_number(normalized, allow_units=False)
    if number is None:
        return normalized
    # Canonical digits also stop sympy from reading "4.5e33" as 4.5 * e * 33.
    text = _format_number(number)
    if "/" in text:
        return f"\\frac{{{number.numerator}}}{{{number.denominator}}}"
    return text


def _math_equal(gold: str, answer: str) -> bool:
    parse, mv_verify = _math_verify()
    # signal.alarm, math-verify's timeout, only works in the main thread; elsewhere
    # (env workers, thread pools) run without a timeout rather than fail.
    in_main = threading.current_thread() is threading.main_thread()
    timeout = MATH_VERIFY_TIMEOUT_S if in_main else None
    parsed_gold = parse(f"\\boxed{{{_as_latex(gold)}}}", parsing_timeout=timeout)
    parsed_answer = parse(f"\\boxed{{{_as_latex(answer)}}}", parsing_timeout=timeout)
    if not parsed_gold or not parsed_answer:
        return False
    return bool(mv_verify(parsed_gold, parsed_answer, timeout_seconds=timeout))


def verify(task: Task, answer: str | None) -> bool:
    """Whether `answer` is a correct answer to `task`; None (no answer) is never right.

    ``numeric``: equal within a relative 1e-6 / absolute 1e-9 tolerance (fractions read
    exactly; two integers must be equal). ``math``: equal canonical forms, else equal by math-verify (symbolic).
    ``choice``: the same option, by letter, 0-based index or the option's exact text.
    ``code``: the program the answer stands for (a whole function, or a completion of the
    prompt, see `deliberation_env.tasks.programs.complete_program`) passes the task's unit
    tests, run in a separate sandboxed process (`deliberation_env.tasks.sandbox`); a code
    task without tests (``meta["test"]``) raises NotImplementedError.
    """
    if task.kind == "code":
        return _verify_code(task, answer)
    if answer is None:
        return False
    got = normalize_answer(task.kind, answer)
    gold = normalize_answer(task.kind, task.answer)
    if task.kind == "choice" and got is None:
        options = [c.strip().casefold() for c in task.choices]
        if answer.strip().casefold() in options:
            got = CHOICE_LETTERS[options.index(answer.strip().casefold())]
    if got is None or gold is None:
        return False
    if got == gold:
        return True
    if task.kind == "numeric":
        a, b = parse_number(got), parse_number(gold)
        return a is not None and b is not None and _numbers_close(a, b)
    if task.kind == "math":
        a, b = parse_number(got, allow_units=False), parse_number(gold, allow_units=False)
        if a is not None and b is not None:
            return _numbers_close(a, b)
        return _math_equal(gold, got)
    return False


def _verify_code(task: Task, answer: str | None) -> bool:
    tests = task.meta.get("test")
    if not isinstance(tests, str) or not tests.strip():
        raise NotImplementedError(
            f"task {task.id!r}: code verification runs the task's unit tests, and this task "
            "has none (meta['test']); load code tasks in a format that carries them "
            "(HumanEval's 'test' and 'entry_point') to score them"
        )
    if answer is None or not answer.strip():
        return False
    entry_point = str(task.meta.get("entry_point") or task.answer)
    prompt = str(task.meta.get("prompt") or task.question)
    return _passes(complete_program(prompt, answer, entry_point), tests, entry_point)


# Agents often agree on one program: each distinct program runs once. Only verdicts that
# another run would repeat are kept (a timeout may be a loaded machine).
_CODE_VERDICTS: dict[tuple[str, str, str], bool] = {}
_MAX_CODE_VERDICTS = 4096
_REPEATABLE = frozenset({"passed", "failed", "syntax_error", "missing_entry_point"})


def _passes(program: str, tests: str, entry_point: str) -> bool:
    key = (program, tests, entry_point)
    if key in _CODE_VERDICTS:
        return _CODE_VERDICTS[key]
    result = run_candidate(program, tests, entry_point)
    if result.reason in _REPEATABLE and len(_CODE_VERDICTS) < _MAX_CODE_VERDICTS:
        _CODE_VERDICTS[key] = result.passed
    return result.passed
