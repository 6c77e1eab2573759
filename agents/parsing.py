"""LLM text -> answer, reasoning profile and verbalised confidence.

Only ever call these on the model's own completion, never on the prompt: the prompt holds
peers' solutions, which are untrusted. As a second guard, any quoted block the model echoes
back (``<solution ...> ... </solution>``, see `agents.prompts`) is dropped before parsing,
and so are the self-reports (``CONFIDENCE: 90`` is not an answer, on its own line or inline).

An answer that cannot be read is None: the env counts it as wrong, never as right. Where
the text is ambiguous the parser refuses (None) rather than guess; it never truncates.
The rules for numbers (numeric and math answers), each tested in ``tests/test_parsing.py``:

- Units are stripped: ``"18 dollars"`` -> ``18``, ``"\\boxed{18 \\text{ cm}^2}"`` -> ``18``
  (math too). Words that are mathematics (``pi``, ``i``, ``sqrt``, ``squared``, a single
  letter) are not units: ``"2 pi"`` stays an expression.
- Alternatives are refused: ``"7 or 8"`` -> None (``"12 (or 13?)"``, a parenthesised second
  thought, still reads 12). Same for choices: ``"A or B"`` -> None.
- A sign is a sign across spaces and in any minus (``-``, U+2212, U+FE63, U+FF0D):
  ``"\u2212 12"`` -> ``-12``; after an operand (``"5 - 12"``, ``"x - 12"``) it is subtraction.
- Dots grouping three digits at least twice are thousands separators: ``"1.000.000"`` ->
  ``1000000``; one group (``"1.000"``) is a decimal, the English reading.
- Scientific notation is exact: ``"2.5 × 10^3"``, ``"2.5 \\times 10^{3}"``, ``"2.5e3"`` ->
  ``2500``. Beyond 1e±300 (`deliberation_env.tasks.parse_number`'s range) a numeric answer
  is refused (None) and a math answer kept exact in LaTeX (``"1e400"`` -> ``10^{400}``).
- Powers: numeric ``"2^10"`` -> ``1024``; beyond the range, or chained (``"2^3^4"``),
  refused. A math answer keeps a power as written (``"10^400"`` stays ``10^400``).
- math-verify's extraction is the fallback, widened to the whole number it sits in (it
  reads ``"1e400"`` as 1, ``"1.000.000"`` as 1.0 and ``"\u2212 12"`` as 12).

Choices: a lone letter on the completion's last line is that option in either case
(``"b"`` -> ``B``) when no answer phrase or option line reads; elsewhere a bare lower-case
letter is only read after "answer is" or in brackets ("a bit" is not option A).

Confidences: the prompts ask for 0-100 (`agents.prompts.SELF_REPORT_INSTRUCTION`). An
integer is a percentage (``90`` -> 0.9), a decimal <= 1 a probability (``0.9``), ``90%``
and ``9/10`` and ``9 out of 10`` what they say; clamped to [0, 1]. The bare integer ``1`` is
refused (None): it is 1% to a model writing percentages and certainty to one writing
probabilities. A report is read at the start of a line or inline (``"... Confidence: 90"``);
the last one wins.
"""

from __future__ import annotations

import math
import re
import threading
from decimal import Decimal
from fractions import Fraction
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
# A confidence: 90, 0.9, 90%, 9/10, 9 out of 10.
_CONFIDENCE_VALUE = (
    r"[+\-\u2212\ufe63\uff0d]?(?:\d+(?:\.\d+)?|\.\d+)"
    r"(?:[ \t]*%|[ \t]*(?:/|out[ \t]+of)[ \t]*\d+(?:\.\d+)?)?(?!\.?\d)"
)
# An inline confidence ("... so 18. Confidence: 90"); a report line is `_REPORT_LINE_RE`.
_INLINE_REPORT_RE = re.compile(
    r"(?<!\w)(CONFIDENCE|P\(CORRECT\))(?:[ \t]+(?:level|score))?[ \t]*[*_]*[ \t]*[:=]"
    rf"[ \t]*[*_]*[ \t]*({_CONFIDENCE_VALUE})",
    re.IGNORECASE,
)
_PROBABILITY_RE = re.compile(
    r"(?P<sign>[+\-\u2212\ufe63\uff0d]?)(?P<value>\d+(?:\.\d+)?|\.\d+)"
    r"(?:[ \t]*(?P<percent>%)|[ \t]*(?:/|out[ \t]+of)[ \t]*(?P<den>\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")  # GSM8K's "<<2*3=6>>" annotations

# A number token (module docstring for the rules): a sign (any minus, spaces allowed after
# it), digits with thousands commas or dots, decimals, then one of an exponent (`e400`),
# scientific notation (`× 10^3`), a power (`^10`) or a fraction (`/4`). Repetitions are
# single-level and the start may not follow a digit or dot, so scanning stays linear.
_MINUS_CHARS = "-\u2212\ufe63\uff0d"
_MINUS = re.escape(_MINUS_CHARS)  # for a [...] class
_SIGN = rf"(?P<sign>[+{_MINUS}])(?P<gap>[ \t]{{0,3}})"
_MANTISSA = (
    r"(?P<mant>\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d{1,3}(?:\.\d{3}){2,}(?!\d)|\d+(?:\.\d+)?)"
    r"(?!\.?\d|,\d{3})"
)
_EXP = rf"[+{_MINUS}]?\d+"
_TIMES = r"(?:[\u00d7xX*\u00b7\u22c5]|\\times|\\cdot)"


def _power(name: str) -> str:
    """``^3``, ``^{-3}``, ``**3``: the exponent in group `name` (braced) or `name`_b."""
    return rf"(?:\^|\*\*)[ \t]*(?:\{{[ \t]*(?P<{name}>{_EXP})[ \t]*\}}|(?P<{name}_b>{_EXP}))"


_NUM_RE = re.compile(
    rf"(?<![\w.])(?:{_SIGN})?{_MANTISSA}"
    rf"(?:[eE](?P<e>{_EXP})"
    rf"|[ \t]*{_TIMES}[ \t]*10[ \t]*{_power('sci')}"
    rf"|[ \t]*{_power('pow')}"
    r"|[ \t]*/[ \t]*(?P<den>\d+)(?![\d.]))?"
    r"(?P<more>[ \t]*(?:\^|\*\*))?"
)
# "7 or 8": two standalone numbers joined by "or" (refused: the model did not choose). Not
# "5A/5 or 20 = A" nor "0.60 or 60%": there "or" means "that is", and an operator touches
# the pair (`_is_alternative`).
_NUMBER_WORD = rf"\\?\$?[+{_MINUS}]?\d[\d.,]*"
_ALTERNATIVE_BEFORE_RE = re.compile(
    rf"(?<![\w.]){_NUMBER_WORD}[ \t]*,?[ \t]+or[ \t]+$", re.IGNORECASE
)
# Runs of spaces are bounded where quantifiers meet (here and below), so a long run costs
# constant, not polynomial, backtracking (a fuzzed reply of spaces hung on the unbounded form).
_ALTERNATIVE_AFTER_RE = re.compile(
    rf"[ \t]{{0,16}},?[ \t]{{1,16}}or[ \t]+{_NUMBER_WORD}(?![\w.])", re.IGNORECASE
)
_ARITHMETIC = "+-*/^\u00d7\u00f7\u00b7\u22c5\u2212"
_LATEX_WORD_RE = re.compile(r"\\(?:text|textrm|textbf|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
# Unit words after a number: letters (2+ to a word: "5 m" may be a variable), "/", "^2".
_UNIT_WORDS = r"[A-Za-z]{2,}(?:[ \t'./-]+[A-Za-z]+)*(?:[ \t]*\^[ \t]*\{?[23]\}?)?"
_SPAN_NUMBER_RE = re.compile(
    rf"[ \t*_]*(?:\\?\$[ \t]*)?(?P<token>{_NUM_RE.pattern})[ \t]*\$?"
    rf"(?P<units>[ \t]*{_UNIT_WORDS})?[ \t*_]*[.!]?[ \t*_]*"
)
_MATH_WORDS = frozenset({
    "pi", "e", "i", "x", "y", "z", "n", "k", "sqrt", "root", "inf", "infty", "infinity",
    "or", "and", "to", "squared", "cubed", "times", "plus", "minus", "over", "divided", "mod",
})  # fmt: skip
"""Words after a number that are mathematics, not units ("2 pi", "5 squared", "3 or 4")."""
# Powers whose value has more digits than this are refused (as `parse_number` does).
_MAX_DIGITS = 300
_HASHES_RE = re.compile(r"^[ \t]*####[ \t]*(.*)$", re.MULTILINE)
_PHRASE_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*[:\s]*(.+)$",
    re.IGNORECASE | re.MULTILINE,
)
# A choice letter: any case inside brackets or ending the line, else upper case only ("the
# answer is a bit..." is not option A).
_LETTER = (
    r"(?:\(\s*([A-Ja-j])\s*\)|\[\s*([A-Ja-j])\s*\]|([A-J])(?![A-Za-z0-9])"
    r"|([a-j])(?=[ \t]*(?:[.)*_][ \t*_]*)?(?:\n|$)))"
)
# Every whitespace run is read by one quantifier only (each optional part starts with its
# own `\s*` and must end on a non-space), so a long run of spaces after "answer" costs
# linear time, not the polynomial backtracking of adjacent `\s*`s.
_CHOICE_PHRASE_RE = re.compile(
    rf"(?i:answer|option|choice)(?:\s+(?i:is))?(?:\s*(?:[:=]|(?i:is)))?(?:\s*[*_]+)?\s*"
    rf"(?:(?i:option|choice)\s+)?{_LETTER}"
)
# A line that is only an option: "(B)", "B.", "**B**", "B) 42".
_CHOICE_LINE_RE = re.compile(
    r"^[ \t*_>]*(?:\(\s*([A-Ja-j])\s*\)|([A-J])[ \t]*[.):]|([A-J])[ \t*_]*$)",
    re.MULTILINE,
)
# The completion's last line as a lone letter of either case: "b", "(b)", "b.", "**b**"
# (the last resort: a lower-case letter is read nowhere else outside a phrase or brackets).
_LAST_LINE_LETTER_RE = re.compile(
    r"^[ \t*_>]*\(?([A-Ja-j])[.)]?[ \t*_]*(?:[^\S \t]\s*)?\Z", re.MULTILINE
)
# "A or B" after a choice letter: the model did not choose.
_CHOICE_ALTERNATIVE_RE = re.compile(
    r"[ \t*_]{0,16}[).\]]?[ \t*_]{0,16},?[ \t]{1,16}or[ \t]+"
    r"(?:[(\[][ \t]*[A-Ja-j][ \t]*[)\]]|[A-J]\b)"
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


def _unquoted(text: str) -> str:
    if len(text) > _MAX_PARSE_CHARS:
        text = text[-_MAX_PARSE_CHARS:]
    text = _QUOTE_BLOCK_RE.sub(_blank, text)
    return _STRAY_TAG_RE.sub(_blank, text)


def own_text(text: str | None) -> str:
    """The completion with echoed quote blocks, stray delimiters and self-reports blanked.

    Blanked, not removed: they become spaces (newlines kept), so offsets into the result
    are offsets into the completion (into its last `_MAX_PARSE_CHARS` characters when it
    is longer than that). Self-reports are report lines and inline confidences.
    """
    if not text:
        return ""
    text = _REPORT_LINE_RE.sub(_blank, _unquoted(text))
    return _INLINE_REPORT_RE.sub(_blank, text)


def parse_answer(text: str | None, kind: str) -> str | None:
    """The normalised final answer of a completion, or None when there is none.

    `kind` is `Task.kind`. In order, the first that reads wins:

    - every kind but code: the last ``\\boxed{...}`` (braces balanced). A box that is
      there but unreadable for the kind gives None: the model declared that answer.
    - ``numeric``/``math``: the last GSM8K-style ``#### N`` line; then the last
      "answer is X" / "Answer: X" phrase; then math-verify's extraction; then, for
      ``numeric`` only, the last number in the text. A line or phrase that holds a
      number the rules refuse ("7 or 8", ``1e400`` for numeric) gives None, not a guess
      from elsewhere in the text.
    - ``choice``: the last "answer is (B)" / "Answer: B" / "option C" phrase, else the last
      line that is only a letter ("(B)", "B.", "**B**"), else a lone letter of either case
      ending the completion ("b").
    - ``code``: the last fenced code block, Python-labelled blocks first.

    Numbers follow the rules in the module docstring (units, alternatives, signs,
    separators, scientific notation, powers). Answers come back in
    `deliberation_env.tasks.normalize_answer` form.
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
        return _normalize("code", found[0]), found[1]

    boxed = last_boxed(text)
    if boxed is not None:
        start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
        begin = text.find(boxed, start)
        return _read_box(kind, boxed), (begin, begin + len(boxed))
    if kind == "choice":
        return _parse_choice(text)

    hashes = [m for m in _HASHES_RE.finditer(text) if m.group(1).strip()]
    candidates = [hashes[-1]] if hashes else []
    phrases = list(_PHRASE_RE.finditer(text))
    candidates += phrases[-1:]
    for m in candidates:
        answer, span, declared = _read(kind, m.group(1))
        if answer is not None or declared:
            where = (m.start(1) + span[0], m.start(1) + span[1])
            return answer, where if answer is not None else None
    extracted = _math_verify_extract(text, kind)
    if extracted is not None:
        return extracted
    if kind == "numeric":
        blanked = _CALCULATOR_RE.sub(_blank, text)
        numbers = list(_NUM_RE.finditer(blanked))
        if numbers:
            answer, span = _read_token(blanked, numbers[-1], kind)
            return answer, span if answer is not None else None
    return None, None


def _normalize(kind: str, text: str) -> str | None:
    """`normalize_answer`, with its crash on junk read as "unreadable" (None).

    Known (notes/plan.md, H2): a number whose exact value has over 4,300 digits
    (``"0." + "1" * 5000``) raises ValueError at Python's int -> str limit.
    """
    try:
        return normalize_answer(kind, text)
    except ValueError:
        return None


# ------------------------------------------------------------------- number tokens
def _signed(raw: str) -> str:
    return "-" + raw[1:] if raw[:1] in _MINUS_CHARS else raw.lstrip("+")


def _token_start(text: str, m: re.Match[str]) -> int:
    """Where the number of token `m` starts: a spaced sign after an operand is subtraction."""
    if not m["gap"]:
        return m.start()
    before = text[max(0, m.start() - 40) : m.start()].rstrip()
    operand = before[-1:].isalnum() or before.endswith((")", "]", "}", "_", "%", "!"))
    if operand and not re.search(r"[A-Za-z]{2}$", before):  # a word ("is", "to") is not
        return m.start("mant")
    return m.start()


def _token_value(m: re.Match[str], kind: str, *, signed: bool) -> str | None:
    """The answer a number token stands for, or None when it is refused.

    None for a chained power or a value out of range (numeric); for math, an out-of-range
    value is kept exact in LaTeX and a power is kept as written.
    """
    if m["more"]:
        return None
    sign = "-" if signed and m["sign"] and m["sign"] in _MINUS_CHARS else ""
    mant = m["mant"]
    if re.fullmatch(r"\d{1,3}(?:\.\d{3}){2,}", mant):
        mant = mant.replace(".", "")  # dot thousands separators
    mant = mant.replace(",", "")
    exponent = m["e"] or m["sci"] or m["sci_b"]
    power = m["pow"] or m["pow_b"]
    if exponent is not None:
        exp = _signed(exponent)
        scientific = f"{sign}{mant}e{exp}"
        if kind == "math" and parse_number(scientific, allow_units=False) is None:
            # Out of range: exact LaTeX, which math-verify reads right (it reads 1e400 as 1).
            times = "" if Decimal(mant) == 1 else f"{mant}\\times"
            return _normalize("math", f"{sign}{times}10^{{{exp}}}")
        return _normalize(kind, scientific)
    if power is not None:
        if kind == "math":
            return _normalize("math", sign + m.group(0)[m.start("mant") - m.start() :])
        return _power_value(sign, mant, _signed(power))
    if m["den"] is not None:
        return _normalize(kind, f"{sign}{mant}/{m['den']}")
    return _normalize(kind, sign + mant)


def _power_value(sign: str, mant: str, exp: str) -> str | None:
    base = Fraction(Decimal(mant))
    if len(exp.lstrip("-")) > 6:
        return None
    e = int(exp)
    if base == 0 and e < 0:
        return None
    if base not in (0, 1):
        digits = abs(e) * max(abs(math.log10(base.numerator)), abs(math.log10(base.denominator)))
        if digits > _MAX_DIGITS:
            return None
    value = base**e
    num, den = value.numerator, value.denominator
    return _normalize("numeric", sign + (str(num) if den == 1 else f"{num}/{den}"))


def _is_alternative(text: str, start: int, end: int) -> bool:
    """Whether the number at ``text[start:end]`` is one of "7 or 8"."""
    before, after = text[max(0, start - 60) : start], text[end : end + 60]
    left = _ALTERNATIVE_BEFORE_RE.search(before)
    if left is not None:
        pair = (before[: left.start()], after)
    else:
        right = _ALTERNATIVE_AFTER_RE.match(after)
        if right is None:
            return False
        pair = (before, after[right.end() :])
    # An operator before the pair, or "=" / "%" / an operator after it: an equation.
    return not (
        pair[0].rstrip()[-1:] in tuple(_ARITHMETIC)
        or pair[1].lstrip()[:1] in (*_ARITHMETIC, "=", "%")
    )


def _read_token(text: str, m: re.Match[str], kind: str) -> tuple[str | None, Span]:
    """The answer of number token `m` found in `text`, refusing alternatives and exponents."""
    start = _token_start(text, m)
    span = (start, m.end())
    exponent = text[max(0, start - 40) : start].rstrip().endswith(("^", "**"))  # "2^3^4"
    if exponent or _is_alternative(text, *span):
        return None, span
    return _token_value(m, kind, signed=start == m.start()), span


def _span_number(kind: str, raw: str) -> tuple[str | None, Span] | None:
    """`raw` as one number plus optional unit words, or None when it is not that shape."""
    m = _SPAN_NUMBER_RE.fullmatch(raw)
    if m is None:
        return None
    units = (m["units"] or "").strip()
    if units and any(w.lower() in _MATH_WORDS for w in re.findall(r"[A-Za-z]+", units)):
        return None
    token = _NUM_RE.match(raw, m.start("token"))
    assert token is not None  # the same pattern matched there
    if kind == "math" and (token["pow"] or token["pow_b"]):
        return None  # a power is a math expression: `normalize_answer` keeps it as written
    return _read_token(raw, token, kind)


def _has_alternatives(raw: str) -> bool:
    return any(_is_alternative(raw, *m.span("mant")) for m in _NUM_RE.finditer(raw))


def _read_box(kind: str, boxed: str) -> str | None:
    """A boxed answer: one number (units stripped), else `normalize_answer`; no guessing."""
    if kind in ("numeric", "math"):
        plain = _LATEX_WORD_RE.sub(lambda m: f" {m.group(1)} ", boxed)
        if _has_alternatives(plain):
            return None
        number = _span_number(kind, plain)
        if number is not None:
            return number[0]
    return _normalize(kind, boxed)


def _read(kind: str, raw: str) -> tuple[str | None, Span, bool]:
    """An answer from a short span: the whole span, else its first number (numeric only).

    The flag says the span declared a number: when it is refused (None: out of range,
    alternatives), the caller stops there rather than guess elsewhere.
    """
    stripped = raw.strip().rstrip(".").strip()
    begin = raw.find(stripped) if stripped else 0
    whole = (begin, begin + len(stripped))
    if not stripped:
        return None, whole, False
    if _has_alternatives(_LATEX_WORD_RE.sub(lambda m: f" {m.group(1)} ", raw)):
        return None, whole, True
    number = _span_number(kind, raw)
    if number is not None:
        return number[0], whole, True
    answer = _normalize(kind, stripped)
    if answer is not None or kind != "numeric":
        return answer, whole, False
    m = _NUM_RE.search(raw)
    if m is None:
        return None, whole, False
    answer, span = _read_token(raw, m, kind)
    return answer, span, True


def _parse_choice(text: str) -> tuple[str | None, Span | None]:
    for pattern in (_CHOICE_PHRASE_RE, _CHOICE_LINE_RE):
        matches = list(pattern.finditer(text))
        if matches:
            m = matches[-1]
            group = next(i for i, g in enumerate(m.groups(), start=1) if g)
            if _CHOICE_ALTERNATIVE_RE.match(text, m.end(group)):
                return None, None
            return _normalize("choice", m.group(group).upper()), m.span(group)
    last = _LAST_LINE_LETTER_RE.search(text)
    if last is not None:
        return _normalize("choice", last.group(1).upper()), last.span(1)
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


_MAX_BRACE_DEPTH = 64


def _brace_depth(text: str) -> int:
    depth = deepest = 0
    for c in text:
        if c == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif c == "}":
            depth = max(0, depth - 1)
    return deepest


def _math_verify_extract(text: str, kind: str) -> tuple[str | None, Span | None] | None:
    """math-verify's last extracted expression, widened to the whole number it was cut from.

    None when it finds nothing; ``(None, None)`` when what it found is refused.
    """
    from math_verify import parse

    # signal.alarm, math-verify's timeout, only works in the main thread; elsewhere (env
    # workers, thread pools) it runs without one: `_MAX_PARSE_CHARS` and the 2,000-character
    # tail below bound its work instead.
    in_main = threading.current_thread() is threading.main_thread()
    tail = text[-2000:]
    if _brace_depth(tail) > _MAX_BRACE_DEPTH:
        return None  # sympy's LaTeX parser takes seconds on it; no real answer nests so deep
    try:
        found = parse(tail, parsing_timeout=MATH_VERIFY_TIMEOUT_S if in_main else None)
    except Exception:  # sympy can fail in many ways on junk; junk has no answer
        return None
    if len(found) < 2 or not isinstance(found[-1], str):
        return None
    begin = text.rfind(found[-1])
    if begin >= 0:
        end = begin + len(found[-1])
        for m in _NUM_RE.finditer(text):
            start = _token_start(text, m)
            if start <= begin and end <= m.end():
                return _read_token(text, m, kind)  # one number, perhaps cut short: all of it
            if start < end and begin < m.end() and not begin <= start < m.end() <= end:
                return None, None  # it cut across a number: do not trust it
    answer = _normalize(kind, found[-1])
    if answer is None:
        return None
    return answer, (None if begin < 0 else (begin, begin + len(found[-1])))


# ---------------------------------------------------------------------- self-report
def _report_values(text: str) -> dict[str, str]:
    """The last value of each report label, from lines and inline confidences (quotes dropped)."""
    text = _unquoted(text)
    found = [(m.start(), m.group(1), m.group(2).strip()) for m in _REPORT_LINE_RE.finditer(text)]
    inline = _INLINE_REPORT_RE.finditer(_REPORT_LINE_RE.sub(_blank, text))
    found += [(m.start(), m.group(1), m.group(2)) for m in inline]
    return {label.upper(): value for _, label, value in sorted(found)}


def _first_number(raw: str | None) -> float | None:
    if not raw:
        return None
    m = re.search(r"[-+\u2212]?\d+(?:\.\d+)?", raw)
    if m is None:
        return None
    value = parse_number(m.group(0), allow_units=False)
    return None if value is None else float(value)


def _as_probability(raw: str | None) -> float | None:
    """A reported confidence in [0, 1] (module docstring: the 0-100 convention), or None.

    ``"85"``, ``"85%"``, ``"85/100"`` -> 0.85; ``"0.85"`` -> 0.85; ``"9/10"``, ``"9 out of
    10"`` -> 0.9; clamped to [0, 1]. A bare ``"1"`` is ambiguous (1% or certain): None.
    """
    m = _PROBABILITY_RE.search(raw or "")
    if m is None:
        return None
    value = parse_number(m["value"], allow_units=False)
    if value is None:
        return None
    if m["sign"] and m["sign"] in _MINUS_CHARS:
        value = -value
    if m["den"] is not None:
        den = parse_number(m["den"], allow_units=False)
        if not den:
            return None
        prob = value / den
    elif m["percent"] or "." not in m["value"] or value > 1:
        if not m["percent"] and m["value"] == "1":
            return None
        prob = value / 100
    else:
        prob = value
    return float(min(Fraction(1), max(Fraction(0), prob)))


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
