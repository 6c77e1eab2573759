"""Row formats of the benchmark files: one parser per format turns a dataset row (a JSONL
line or a Hugging Face row) into a `Task`, or raises `RowError` naming what is wrong."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from deliberation_env.tasks.task import CHOICE_LETTERS, Task
from deliberation_env.tasks.verify import last_boxed, normalize_answer

RowParser = Callable[[Mapping[str, Any], str], Task]
"""Turns one dataset row into a Task with the given id; raises RowError on a bad row."""


class RowError(ValueError):
    """A row that does not fit its format; the caller adds the file and line."""


def _field(row: Mapping[str, Any], *names: str, required: bool = True) -> Any:
    """The first of `names` present in `row`, matching keys case-insensitively."""
    lowered = {str(k).lower(): v for k, v in row.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None and value != "":
            return value
    if required:
        raise RowError(
            f"missing field {' or '.join(repr(n) for n in names)}; the row has {sorted(row)}"
        )
    return None


def _text(row: Mapping[str, Any], *names: str) -> str:
    value = _field(row, *names)
    if not isinstance(value, str):
        raise RowError(f"field {names[0]!r} must be text, got {type(value).__name__}")
    return value


def _number(value: Any, what: str) -> str:
    answer = normalize_answer("numeric", str(value))
    if answer is None:
        raise RowError(f"{what} {value!r} is not a number")
    return answer


def _gsm8k_row(row: Mapping[str, Any], task_id: str) -> Task:
    worked = _text(row, "answer")
    solution, sep, final = worked.rpartition("####")
    if not sep:
        raise RowError("GSM8K 'answer' must end with '#### <number>'; found no '####'")
    return Task(
        id=task_id,
        question=_text(row, "question"),
        answer=_number(final.strip(), "GSM8K final answer"),
        kind="numeric",
        meta={"source": "gsm8k", "solution": solution.strip()},
    )


def _math_row(row: Mapping[str, Any], task_id: str) -> Task:
    solution = _field(row, "solution", required=False)
    answer = _field(row, "answer", required=False)
    if answer is None:
        boxed = last_boxed(solution) if isinstance(solution, str) else None
        if boxed is None or not boxed.strip():
            raise RowError("no 'answer' field and no \\boxed{...} answer in 'solution'")
        answer = boxed
    meta = {"source": "math", "solution": solution}
    for key in ("level", "type", "subject", "unique_id", "idx"):
        if (value := _field(row, key, required=False)) is not None:
            meta[key] = value
    return Task(
        id=task_id,
        question=_text(row, "problem", "question"),
        answer=str(answer).strip(),
        kind="math",
        meta=meta,
    )


def _competition_meta(row: Mapping[str, Any], source: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": source}
    for key in ("id", "url", "year", "solution"):
        if (value := _field(row, key, required=False)) is not None:
            meta[key] = value
    return meta


def _aime_row(row: Mapping[str, Any], task_id: str) -> Task:
    answer = _field(row, "answer", required=False)
    if answer is None:
        solution = _field(row, "solution", required=False)
        answer = last_boxed(solution) if isinstance(solution, str) else None
        if answer is None:
            raise RowError("no 'answer' field and no \\boxed{...} answer in 'solution'")
    return Task(
        id=task_id,
        question=_text(row, "problem", "question"),
        answer=_number(answer, "AIME answer"),
        kind="numeric",
        meta=_competition_meta(row, "aime"),
    )


def _amc_row(row: Mapping[str, Any], task_id: str) -> Task:
    return Task(
        id=task_id,
        question=_text(row, "question", "problem"),
        answer=_number(_field(row, "answer"), "AMC answer"),
        kind="numeric",
        meta=_competition_meta(row, "amc"),
    )


def _mmlu_row(row: Mapping[str, Any], task_id: str) -> Task:
    choices = _field(row, "choices", "options")
    if not isinstance(choices, (list, tuple)) or not 2 <= len(choices) <= len(CHOICE_LETTERS):
        raise RowError(f"'choices' must be a list of 2 to {len(CHOICE_LETTERS)} options")
    answer = _field(row, "answer", "answer_index")
    if isinstance(answer, str) and answer.strip().upper() in CHOICE_LETTERS:
        index = CHOICE_LETTERS.index(answer.strip().upper())
    elif isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit()):
        index = int(answer)
    else:
        raise RowError(f"'answer' {answer!r} is neither an option index nor a letter")
    if not 0 <= index < len(choices):
        raise RowError(f"'answer' {answer!r} is out of range for {len(choices)} options")
    subject = _field(row, "subject", "type", "category", required=False)
    return Task(
        id=task_id,
        question=_text(row, "question"),
        answer=CHOICE_LETTERS[index],
        kind="choice",
        choices=tuple(str(c) for c in choices),
        meta={"source": "mmlu", "subject": subject},
    )


def _svamp_row(row: Mapping[str, Any], task_id: str) -> Task:
    body = _text(row, "Body").strip()
    # Some SVAMP bodies end mid-sentence; a full stop keeps the question readable.
    if body and body[-1] not in ".?!":
        body += "."
    meta: dict[str, Any] = {"source": "svamp"}
    for key in ("Equation", "Type", "ID"):
        if (value := _field(row, key, required=False)) is not None:
            meta[key.lower()] = value
    return Task(
        id=task_id,
        question=f"{body} {_text(row, 'Question').strip()}",
        answer=_number(_field(row, "Answer"), "SVAMP answer"),
        kind="numeric",
        meta=meta,
    )


def _humaneval_row(row: Mapping[str, Any], task_id: str) -> Task:
    prompt = _text(row, "prompt")
    entry_point = _text(row, "entry_point")
    return Task(
        id=task_id,
        question=prompt,
        answer=entry_point,
        kind="code",
        meta={
            "source": "humaneval",
            "task_id": _field(row, "task_id", required=False),
            "prompt": prompt,
            "test": _text(row, "test"),
            "entry_point": entry_point,
            "canonical_solution": _field(row, "canonical_solution", required=False),
        },
    )


ROW_FORMATS: Mapping[str, RowParser] = MappingProxyType(
    {
        "gsm8k": _gsm8k_row,
        "math": _math_row,
        "aime": _aime_row,
        "amc": _amc_row,
        "mmlu": _mmlu_row,
        "svamp": _svamp_row,
        "humaneval": _humaneval_row,
    }
)
