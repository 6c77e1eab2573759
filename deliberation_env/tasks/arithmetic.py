"""Built-in multi-step arithmetic word problems with exact integer answers: offline,
deterministic per seed, difficulty = number of operations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deliberation_env.tasks.task import Task

__all__ = ["generate_arithmetic"]

_MAX_VALUE = 5000  # keeps numbers readable and mental-arithmetic sized


@dataclass(frozen=True)
class _Template:
    """One story. The running quantity starts at ``a * b``; every later sentence applies
    one operator to it, so the text reads in the order the arithmetic runs."""

    name: str
    start: str
    question: str
    phrases: dict[str, tuple[str, ...]]  # operator -> sentences using {x}
    final_only: frozenset[str] = frozenset()  # operators that change what is counted...
    final_question: str = ""  # ...so the question changes when one of them ends the story


_TEMPLATES: tuple[_Template, ...] = (
    _Template(
        name="marbles",
        start="{Name} has {a} bags with {b} marbles in each bag.",
        question="How many marbles does {Name} have now?",
        phrases={
            "+": ("{He} wins {x} more marbles at school.", "A friend gives {him} {x} marbles."),
            "-": ("{He} gives {x} marbles to a cousin.", "{He} loses {x} marbles in the park."),
            "*": ("After a week of trading, {he} has {x} times as many marbles as before.",),
            "/": (
                "{He} splits all of {his} marbles into {x} equal piles and keeps just one pile.",
            ),
        },
    ),
    _Template(
        name="savings",
        start="{Name} saves ${b} every week for {a} weeks.",
        question="How many dollars does {Name} have now?",
        phrases={
            "+": ("{He} gets ${x} as a birthday present.", "{He} earns ${x} walking a dog."),
            "-": ("{He} spends ${x} on a book.", "{He} pays ${x} for a concert ticket."),
            "*": ("A savings prize makes {his} money grow to {x} times as much as before.",),
            "/": (
                "{He} divides all of {his} money equally into {x} envelopes and gives away "
                "every envelope but one.",
            ),
        },
    ),
    _Template(
        name="bakery",
        start="{Name} bakes {a} trays of cookies with {b} cookies on each tray.",
        question="How many cookies does {Name} have now?",
        phrases={
            "+": ("{He} bakes {x} more cookies.", "A neighbour brings over {x} cookies."),
            "-": (
                "{His} family eats {x} of the cookies.",
                "{He} burns {x} cookies and throws them away.",
            ),
            "*": (
                "For a fair, {he} keeps baking until {he} has {x} times as many cookies as before.",
            ),
            "/": (
                "{He} packs all the cookies equally into {x} boxes and gives away every box but one.",
            ),
        },
    ),
    _Template(
        name="shopping",
        start="{Name} buys {a} notebooks that cost ${b} each.",
        question="How many dollars does {Name} pay in total?",
        phrases={
            "+": ("{He} also buys a backpack for ${x}.", "{He} also buys a set of pens for ${x}."),
            "-": (
                "A coupon takes ${x} off {his} bill.",
                "The shop gives {him} a discount of ${x}.",
            ),
        },
    ),
    _Template(
        name="road_trip",
        start="A road trip is planned over {a} days, with {b} kilometres to drive each day.",
        question="How many kilometres long is the trip now?",
        phrases={
            "+": ("A detour adds {x} kilometres to the trip.", "A side visit adds {x} kilometres."),
            "-": (
                "A shortcut saves {x} kilometres.",
                "A new bridge cuts {x} kilometres from the route.",
            ),
        },
    ),
    _Template(
        name="stickers",
        start="A teacher has {a} packs of stickers with {b} stickers in each pack.",
        question="How many stickers does the teacher have now?",
        phrases={
            "+": (
                "The school gives the teacher {x} more stickers.",
                "A parent donates {x} stickers to the class.",
            ),
            "-": (
                "The teacher uses {x} stickers to decorate the classroom.",
                "The teacher gives {x} stickers to another class.",
            ),
            "/": ("The teacher shares all the stickers equally among {x} students.",),
        },
        final_only=frozenset("/"),
        final_question="How many stickers does each student get?",
    ),
)

_PEOPLE = (
    ("Maya", "she", "her", "her"),
    ("Liam", "he", "him", "his"),
    ("Aisha", "she", "her", "her"),
    ("Kenji", "he", "him", "his"),
    ("Sofia", "she", "her", "her"),
    ("Tomas", "he", "him", "his"),
    ("Priya", "she", "her", "her"),
    ("Omar", "he", "him", "his"),
)


def _operand(rng: np.random.Generator, op: str, value: int) -> int | None:
    """A random operand for `op` that keeps the running value a positive integer (products
    at most `_MAX_VALUE`), or None when there is none."""
    if op == "+":
        return int(rng.integers(2, 41))
    if op == "-":
        # From 2, so no sentence says "1 marbles".
        return int(rng.integers(2, min(40, value - 1) + 1)) if value > 3 else None
    if op == "*":
        top = min(4, _MAX_VALUE // value)
        return int(rng.integers(2, top + 1)) if top >= 2 else None
    # Division only by an exact divisor, so every intermediate answer stays an integer.
    divisors = [d for d in range(2, 10) if value % d == 0 and value // d >= 2]
    return divisors[int(rng.integers(len(divisors)))] if divisors else None


def _apply(op: str, value: int, x: int) -> int:
    return {"+": value + x, "-": value - x, "*": value * x, "/": value // x}[op]


def _one_problem(rng: np.random.Generator, task_id: str, level: int) -> Task:
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    name, he, him, his = _PEOPLE[int(rng.integers(len(_PEOPLE)))]
    words = {
        "Name": name,
        "he": he,
        "He": he.capitalize(),
        "him": him,
        "his": his,
        "His": his.capitalize(),
    }
    a, b = int(rng.integers(2, 10)), int(rng.integers(2, 21))
    value = a * b
    sentences = [template.start.format(a=a, b=b, **words)]
    operators, operands, expression = ["*"], [a, b], f"{a} * {b}"
    for step in range(level):
        last = step == level - 1
        choices = [
            (op, x)
            for op in template.phrases
            if last or op not in template.final_only
            if (x := _operand(rng, op, value)) is not None
        ]
        op, x = choices[int(rng.integers(len(choices)))]
        phrase = template.phrases[op][int(rng.integers(len(template.phrases[op])))]
        sentences.append(phrase.format(x=x, **words))
        value = _apply(op, value, x)
        operators.append(op)
        operands.append(x)
        expression = f"({expression}) {op} {x}"
    question = template.question
    if operators[-1] in template.final_only:
        question = template.final_question
    sentences.append(question.format(**words))
    return Task(
        id=task_id,
        question=" ".join(sentences),
        answer=str(value),
        kind="numeric",
        meta={
            "source": "arithmetic",
            "level": level,
            "steps": level + 1,
            "operators": tuple(operators),
            "operands": tuple(operands),
            "expression": expression,
            "template": template.name,
        },
    )


def generate_arithmetic(n: int, seed: int = 0, levels: Sequence[int] = (1, 2, 3, 4)) -> list[Task]:
    """`n` word problems; a level-k problem takes k + 1 operations (+, -, *, exact /).

    Levels cycle through `levels` (task i has level ``levels[i % len(levels)]``), so every
    level is equally represented. The same `seed` gives the same problems, and the first
    m problems do not depend on `n`. ``meta`` holds ``level``, ``steps``, ``operators``,
    ``operands`` and ``expression`` (evaluates to the answer, left to right).
    """
    if n < 0:
        raise ValueError(f"n={n}: the number of problems must be >= 0")
    levels = tuple(int(k) for k in levels)
    if not levels or min(levels) < 1:
        raise ValueError(f"levels={levels}: give at least one level, each >= 1 (operations - 1)")
    rng = np.random.default_rng(seed)
    return [_one_problem(rng, f"arithmetic/{seed}/{i}", levels[i % len(levels)]) for i in range(n)]
