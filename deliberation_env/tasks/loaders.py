"""Task sources: `load_tasks("gsm8k:PATH")`, `load_tasks("hf:openai/gsm8k")`,
`load_tasks("arithmetic:500")`, resolved through a registry filled by `register_loader`."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from deliberation_env.tasks.arithmetic import generate_arithmetic
from deliberation_env.tasks.task import CHOICE_LETTERS, Task
from deliberation_env.tasks.verify import last_boxed, normalize_answer

__all__ = [
    "DATA_DIR_ENV",
    "HF_DATASETS",
    "TASK_SOURCES",
    "HFDataset",
    "Loader",
    "RowParser",
    "load_tasks",
    "read_jsonl",
    "register_hf_dataset",
    "register_loader",
]

Loader = Callable[[str | None], Sequence[Task]]
"""A task source: gets what follows ``NAME:`` in the spec (None when there is nothing)."""

RowParser = Callable[[Mapping[str, Any], str], Task]
"""Turns one dataset row into a Task with the given id; raises ValueError on a bad row."""

DATA_DIR_ENV = "DELIBERATION_DATA_DIR"
DEFAULT_ARITHMETIC_TASKS = 1000

_LOADERS: dict[str, Loader] = {}
TASK_SOURCES: Mapping[str, Loader] = MappingProxyType(_LOADERS)
"""Read-only view of the registered sources, by name; add one with `register_loader`."""


def register_loader(name: str, fn: Loader, *, replace: bool = False) -> None:
    """Make ``load_tasks("NAME")`` and ``load_tasks("NAME:ARG")`` call ``fn(ARG)``."""
    if not name or ":" in name or name != name.strip().lower():
        raise ValueError(f"loader name {name!r} must be non-empty, lower-case and contain no ':'")
    if name in _LOADERS and not replace:
        raise ValueError(f"a loader named {name!r} is already registered; pass replace=True")
    _LOADERS[name] = fn


def load_tasks(spec: str | Sequence[Task], *, limit: int | None = None) -> list[Task]:
    """Tasks from a source spec, or a sequence of Tasks passed through; at most `limit`.

    Specs: ``"arithmetic"`` (1000 generated problems, seed 0), ``"arithmetic:N"`` or
    ``"arithmetic:N:SEED"``; ``"gsm8k:PATH"``, ``"math:PATH"``, ``"aime:PATH"``,
    ``"amc:PATH"``, ``"mmlu:PATH"``, ``"svamp:PATH"``, ``"humaneval:PATH"`` (JSONL, plain
    or .gz; PATH may be a folder holding ``test.jsonl``; a relative PATH not found is
    also tried under ``$DELIBERATION_DATA_DIR``); ``"hf:DATASET_ID"`` or
    ``"hf:DATASET_ID:SPLIT"`` (needs ``pip install deliberation-env[hf]``).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit={limit}: must be None (all tasks) or >= 0")
    if isinstance(spec, str):
        name, sep, arg = spec.partition(":")
        loader = _LOADERS.get(name.strip().lower())
        if loader is None:
            raise ValueError(
                f"unknown task source {name!r} in {spec!r}; valid sources: "
                f"{', '.join(sorted(_LOADERS))} (write 'NAME' or 'NAME:ARG', "
                "e.g. 'gsm8k:data/gsm8k/test.jsonl')"
            )
        tasks = list(loader(arg if sep else None))
        origin = f"loader {name!r}"
    else:
        tasks = list(spec)
        origin = "the task list"
    for task in tasks:
        if not isinstance(task, Task):
            raise TypeError(f"{origin} gave a {type(task).__name__}, not a Task: {task!r:.80}")
    return tasks if limit is None else tasks[:limit]


# --- reading files -------------------------------------------------------------------


class _RowError(ValueError):
    """A row that does not fit its format; the caller adds the file and line."""


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, object)`` for each non-blank line of a JSONL file (``.gz`` too)."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f"{path}, line {line_number}: not valid JSON ({e.msg} at column "
                        f"{e.colno}); each line must hold one JSON object"
                    ) from None
                if not isinstance(row, dict):
                    raise ValueError(
                        f"{path}, line {line_number}: expected a JSON object, "
                        f"got {type(row).__name__}"
                    )
                yield line_number, row
    except (UnicodeDecodeError, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: not UTF-8 JSONL text ({e}); is it the right file?") from None


def _resolve(source: str, arg: str | None) -> Path:
    if not arg:
        raise ValueError(
            f"task source {source!r} needs a file: write '{source}:PATH' "
            "(a JSONL file, optionally .gz, or a folder holding test.jsonl)"
        )
    path = Path(arg).expanduser()
    tried = [path]
    data_dir = os.environ.get(DATA_DIR_ENV)
    if not path.exists() and not path.is_absolute() and data_dir:
        path = Path(data_dir).expanduser() / path
        tried.append(path)
    if not path.exists():
        where = " or ".join(str(p) for p in tried)
        raise FileNotFoundError(f"{source}: no file at {where}; check the path in '{source}:PATH'")
    if path.is_dir():
        for name in ("test.jsonl", "test.jsonl.gz"):
            if (path / name).is_file():
                return path / name
        files = sorted(p for p in path.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
        if len(files) != 1:
            raise FileNotFoundError(
                f"{source}: folder {path} has no test.jsonl and {len(files)} JSONL files "
                f"({', '.join(p.name for p in files) or 'none'}); name the file in the path"
            )
        return files[0]
    return path


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return name


def _file_loader(source: str, parse_row: RowParser) -> Loader:
    def load(arg: str | None) -> list[Task]:
        path = _resolve(source, arg)
        stem = _stem(path)
        tasks = []
        for line_number, row in read_jsonl(path):
            try:
                tasks.append(parse_row(row, f"{source}/{stem}/{line_number}"))
            except _RowError as e:
                raise ValueError(f"{path}, line {line_number}: {e}") from None
        if not tasks:
            raise ValueError(f"{path}: no rows; a {source} file holds one JSON object a line")
        return tasks

    load.__doc__ = f"Tasks from a {source} JSONL file; ids are '{source}/<file stem>/<line>'."
    return load


# --- row formats ---------------------------------------------------------------------


def _field(row: Mapping[str, Any], *names: str, required: bool = True) -> Any:
    """The first of `names` present in `row`, matching keys case-insensitively."""
    lowered = {str(k).lower(): v for k, v in row.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value is not None and value != "":
            return value
    if required:
        raise _RowError(
            f"missing field {' or '.join(repr(n) for n in names)}; the row has {sorted(row)}"
        )
    return None


def _text(row: Mapping[str, Any], *names: str) -> str:
    value = _field(row, *names)
    if not isinstance(value, str):
        raise _RowError(f"field {names[0]!r} must be text, got {type(value).__name__}")
    return value


def _number(value: Any, what: str) -> str:
    answer = normalize_answer("numeric", str(value))
    if answer is None:
        raise _RowError(f"{what} {value!r} is not a number")
    return answer


def _gsm8k_row(row: Mapping[str, Any], task_id: str) -> Task:
    worked = _text(row, "answer")
    solution, sep, final = worked.rpartition("####")
    if not sep:
        raise _RowError("GSM8K 'answer' must end with '#### <number>'; found no '####'")
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
            raise _RowError("no 'answer' field and no \\boxed{...} answer in 'solution'")
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
            raise _RowError("no 'answer' field and no \\boxed{...} answer in 'solution'")
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
        raise _RowError(f"'choices' must be a list of 2 to {len(CHOICE_LETTERS)} options")
    answer = _field(row, "answer", "answer_index")
    if isinstance(answer, str) and answer.strip().upper() in CHOICE_LETTERS:
        index = CHOICE_LETTERS.index(answer.strip().upper())
    elif isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit()):
        index = int(answer)
    else:
        raise _RowError(f"'answer' {answer!r} is neither an option index nor a letter")
    if not 0 <= index < len(choices):
        raise _RowError(f"'answer' {answer!r} is out of range for {len(choices)} options")
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


# --- Hugging Face datasets -----------------------------------------------------------


@dataclass(frozen=True)
class HFDataset:
    """How to read one Hugging Face dataset: its row format and where the rows are."""

    row_format: str
    """A key of `ROW_FORMATS` (``"gsm8k"``, ``"math"``, ...)."""
    configs: tuple[str | None, ...] = (None,)
    """Dataset configs to load and concatenate, in order (None: the default one)."""
    split: str = "test"
    """Split used when the spec names none."""


_MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
HF_DATASETS: dict[str, HFDataset] = {
    "openai/gsm8k": HFDataset("gsm8k", ("main",)),
    "gsm8k": HFDataset("gsm8k", ("main",)),
    "hendrycks/competition_math": HFDataset("math"),
    "EleutherAI/hendrycks_math": HFDataset("math", _MATH_SUBJECTS),
    "DigitalLearningGmbH/MATH-lighteval": HFDataset("math", ("default",)),
    "HuggingFaceH4/MATH-500": HFDataset("math"),
    "math-ai/minervamath": HFDataset("math"),
    "HuggingFaceH4/aime_2024": HFDataset("aime", split="train"),
    "Maxwell-Jia/AIME_2024": HFDataset("aime", split="train"),
    "AI-MO/aimo-validation-aime": HFDataset("aime", split="train"),
    "math-ai/aime24": HFDataset("aime"),
    "AI-MO/aimo-validation-amc": HFDataset("amc", split="train"),
    "math-ai/amc23": HFDataset("amc"),
    "cais/mmlu": HFDataset("mmlu", ("all",)),
    "TIGER-Lab/MMLU-Pro": HFDataset("mmlu"),
    "ChilleD/SVAMP": HFDataset("svamp"),
    "openai/openai_humaneval": HFDataset("humaneval"),
    "openai_humaneval": HFDataset("humaneval"),
}
"""Known dataset ids for ``hf:DATASET_ID``; add others with `register_hf_dataset`."""


def register_hf_dataset(
    dataset_id: str,
    row_format: str,
    *,
    configs: Sequence[str | None] = (None,),
    split: str = "test",
) -> None:
    """Let ``load_tasks("hf:DATASET_ID")`` read `dataset_id` with an existing row format."""
    if row_format not in ROW_FORMATS:
        raise ValueError(f"row format {row_format!r} is not one of {sorted(ROW_FORMATS)}")
    HF_DATASETS[dataset_id] = HFDataset(row_format, tuple(configs), split)


def _load_hf(arg: str | None) -> list[Task]:
    dataset_id, _, split = (arg or "").strip().partition(":")
    if not dataset_id:
        raise ValueError(
            "'hf' needs a dataset id: write 'hf:openai/gsm8k' or 'hf:openai/gsm8k:test'"
        )
    entry = HF_DATASETS.get(dataset_id) or next(
        (v for k, v in HF_DATASETS.items() if k.lower() == dataset_id.lower()), None
    )
    if entry is None:
        raise ValueError(
            f"unknown Hugging Face dataset {dataset_id!r}; known: {', '.join(sorted(HF_DATASETS))}. "
            "For another dataset in one of these formats call "
            "register_hf_dataset(dataset_id, row_format) first"
        )
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            f"'hf:{dataset_id}' needs the Hugging Face `datasets` library: "
            "pip install deliberation-env[hf]"
        ) from e
    split = split or entry.split
    parse_row = ROW_FORMATS[entry.row_format]
    tasks: list[Task] = []
    for config in entry.configs:
        rows = datasets.load_dataset(dataset_id, config, split=split)
        for row in rows:
            # 1-based like the line numbers of a JSONL export, so ids agree with files.
            task_id = f"{entry.row_format}/{split}/{len(tasks) + 1}"
            try:
                tasks.append(parse_row(row, task_id))
            except _RowError as e:
                where = f"hf:{dataset_id} (config {config}, split {split}), row {len(tasks) + 1}"
                raise ValueError(f"{where}: {e}") from None
    return tasks


# --- procedural ----------------------------------------------------------------------


def _load_arithmetic(arg: str | None) -> list[Task]:
    parts = arg.split(":") if arg else []
    try:
        if len(parts) > 2:
            raise ValueError
        n = int(parts[0]) if parts else DEFAULT_ARITHMETIC_TASKS
        seed = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError(
            f"'arithmetic:{arg}': write 'arithmetic', 'arithmetic:N' or 'arithmetic:N:SEED' "
            "with integers N and SEED"
        ) from None
    return generate_arithmetic(n, seed=seed)


register_loader("arithmetic", _load_arithmetic)
for _name, _parser in ROW_FORMATS.items():
    register_loader(_name, _file_loader(_name, _parser))
register_loader("hf", _load_hf)
