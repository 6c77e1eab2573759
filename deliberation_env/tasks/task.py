"""The `Task` record: one question with its gold answer, the unit the env draws per episode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

TaskKind = Literal["numeric", "math", "choice", "code"]
TASK_KINDS: tuple[str, ...] = ("numeric", "math", "choice", "code")
CHOICE_LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Task:
    """One question.

    Attributes:
        id: stable identifier, unique within its source (e.g. ``"gsm8k/test/17"``).
        question: the text shown to an LLM (for ``choice`` tasks, without the options).
        answer: the gold answer, normalised: a number as a plain decimal string for
            ``numeric``; a LaTeX expression (no ``\\boxed``) for ``math``; a letter
            (``"A"``...) for ``choice``; the entry point name for ``code``.
        kind: how answers are checked, see :func:`deliberation_env.tasks.verify`.
        choices: the options of a ``choice`` task, in letter order.
        meta: anything else the source carries (difficulty level, subject, unit tests).
    """

    id: str
    question: str
    answer: str
    kind: TaskKind
    choices: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.id!r}: kind {self.kind!r} is not one of {TASK_KINDS}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"task {self.id!r}: a choice task needs its options in `choices`")
