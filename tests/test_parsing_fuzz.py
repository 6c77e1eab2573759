"""Property tests for `agents.parsing`: arbitrary text never crashes it, never takes long,
and what it returns is already in normal form (parsing an answer again gives it back)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, reject, settings
from hypothesis import strategies as st

from agents.parsing import (
    MAX_OPERATORS,
    MAX_STEPS,
    parse_answer,
    parse_answer_span,
    parse_confidence,
    parse_judge,
    parse_self_report,
)
from deliberation_env.tasks import normalize_answer
from deliberation_env.tasks.task import TASK_KINDS
from deliberation_env.tasks.verify import parse_number

KINDS = sorted(TASK_KINDS)
# Pieces of real completions and of known attacks: numbers at and past float range, every
# minus and times sign, deep braces, answer markers, report lines, echoed quote tags.
FRAGMENTS = [
    "0", "1", "7", "12", "18", "-", "\u2212", "+", " ", "\n", "\t", ".", ",", "/", "%", "$",
    "^", "**", "e", "E", "\u00d7", "\\times", "\\cdot", " or ", " and ", "(", ")", "{", "}",
    "\\boxed{", "\\fbox{", "\\frac{", "\\text{", "\\sqrt{", "\\pi", "x", "a", "b", "B", "(b)",
    "1.000.000", "1,000", "2.5", "10^400", "1e400", "1e-400", "10^{", "9" * 400, "1" * 5000,
    "2^3^4", "#### ", "The answer is ", "Answer: ", "final answer: ", "option ",
    "CONFIDENCE: ", "Confidence: ", "P(CORRECT): ", "STEPS: ", "OPERATORS: ", "<<2*3=6>>",
    "<solution agent=1 untrusted>", "</solution>", "```python\n", "```", "dollars", "cm^2",
    "\u00e9", "\u4e00", "\U0001f600", "\u200b", "\x00", "\ufeff", "\\", "{" * 200, "}" * 200,
]  # fmt: skip
completions = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=5)), max_size=30).map("".join),
)
# Per example: one parse per kind plus a self-report; math-verify (sympy) is the slow part.
# Derandomized: the suite runs the same examples every time (a fresh random seed per CI run
# would make a slow input a flaky failure); `HYPOTHESIS_PROFILE`-style longer runs can raise
# max_examples by hand.
FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=5),
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(text=completions)
@example(text="\\boxed{" * 1000 + "{" * 5000)
@example(text="The answer is " + "9" * 5000 + "^" + "9" * 50)
@example(text="2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2")
@example(text="10^99999999999 or 1e99999999999")
@example(text="\u2212 " * 1000 + "12")
@example(text="The answer is 0." + "1" * 5000)  # an exact value past int -> str's limit
@example(text="\\boxed{\u00b9}")
@example(text="The answer is" + " " * 3000 + "b")  # adjacent \s* quantifiers backtracked
@example(text="B" + " \t*_" * 1000 + " or C")
@example(text="option" + " \t" * 2000 + "x")
def test_parsing_arbitrary_text_never_fails(text):
    for kind in KINDS:
        answer, span = parse_answer_span(text, kind)
        assert answer is None or (isinstance(answer, str) and answer.strip() == answer != "")
        if span is not None:
            start, end = span
            assert 0 <= start < end <= len(text)
    report = parse_self_report(text)
    assert 0 <= report.steps <= MAX_STEPS and 0 <= report.operators <= MAX_OPERATORS
    assert 0.0 <= report.confidence <= 1.0
    for p in (parse_confidence(text), parse_judge(text)):
        assert p is None or 0.0 <= p <= 1.0


@FUZZ
@given(text=completions, kind=st.sampled_from(["numeric", "math", "choice"]))
def test_parsed_answers_are_already_normal(text, kind):
    answer = parse_answer(text, kind)
    if answer is None:
        return
    assert normalize_answer(kind, answer) == answer
    if kind in ("numeric", "choice") or parse_number(answer, allow_units=False) is not None:
        # A bare number or letter is itself a completion that parses to the same answer.
        assert parse_answer(answer, kind) == answer


@FUZZ
@given(text=completions, kind=st.sampled_from(["numeric", "math", "choice"]))
def test_normalize_answer_is_idempotent(text, kind):
    try:
        once = normalize_answer(kind, text)
    except ValueError as err:
        # A known crash outside this module (notes/plan.md, H2; `agents.parsing` guards it):
        # an exact value past Python's 4,300-digit int -> str limit.
        if "Exceeds the limit" in str(err):
            reject()
        raise
    if once is not None:
        assert normalize_answer(kind, once) == once


@settings(max_examples=300, deadline=timedelta(seconds=1))
@given(
    value=st.one_of(
        st.integers(-(10**6), 10**6).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.tuples(st.integers(0, 100), st.integers(0, 100)).map(lambda t: f"{t[0]}/{t[1]}"),
        st.text(max_size=20),
    ),
    label=st.sampled_from(["CONFIDENCE: ", "Confidence = ", "... so 18. Confidence: "]),
)
def test_confidences_are_probabilities(value, label):
    p = parse_confidence(label + value)
    assert p is None or 0.0 <= p <= 1.0


def test_parsing_off_the_main_thread_matches_the_main_thread():
    # math-verify's own timeout is signal.alarm, which raises outside the main thread; the
    # parser must still work from env workers and thread pools, with the same answers.
    texts = [
        ("So the answer is $\\frac{1}{3}$, I think", "math"),
        ("We get x^2+1 in the end: $x^2+1$", "math"),
        ("It is \u2212 12 now", "numeric"),
        ("1e400", "numeric"),
        ("we get 3 + 4 = 7 at last", "numeric"),
        # Deep braces: math-verify timed out here (main) but ran ~5 s off it, with junk.
        ("}" * 300 + "B$" + "{" * 300 + "\u2212\\text{1$", "math"),
    ]
    here = [parse_answer(t, k) for t, k in texts]
    assert threading.current_thread() is threading.main_thread()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        there = list(pool.map(lambda tk: parse_answer(*tk), texts))
    assert there == here
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("kind", KINDS)
def test_huge_adversarial_inputs_are_fast(kind):
    pieces = ["1.000" * 4000, "1," * 20_000, "2^" * 5000, "- " * 5000, "7 or " * 3000,
              "Confidence: 90 " * 2000, "\\boxed{" * 3000, "\u00d7 10^" * 3000]  # fmt: skip
    start = time.perf_counter()
    for piece in pieces:
        parse_answer(piece, kind)
        parse_answer("The answer is " + piece, kind)
    parse_self_report("".join(pieces))
    assert time.perf_counter() - start < 10
