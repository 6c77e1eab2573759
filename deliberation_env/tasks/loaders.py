"""Task sources: `load_tasks("gsm8k:PATH")`, `load_tasks("hf:openai/gsm8k")`,
`load_tasks("arithmetic:500")`, resolved through a registry filled by `register_loader`."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from deliberation_env.tasks.arithmetic import generate_arithmetic
from deliberation_env.tasks.hf import HF_DATASETS, HFDataset, load_hf, register_hf_dataset
from deliberation_env.tasks.rows import ROW_FORMATS, RowError, RowParser
from deliberation_env.tasks.task import Task

__all__ = [
    "DATA_DIR_ENV",
    "HF_DATASETS",
    "TASK_SOURCES",
    "HFDataset",
    "Loader",
    "ROW_FORMATS",
    "RowParser",
    "load_tasks",
    "read_jsonl",
    "register_hf_dataset",
    "register_loader",
]

Loader = Callable[[str | None], Sequence[Task]]
"""A task source: gets what follows ``NAME:`` in the spec (None when there is nothing)."""

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
            except RowError as e:
                raise ValueError(f"{path}, line {line_number}: {e}") from None
        if not tasks:
            raise ValueError(f"{path}: no rows; a {source} file holds one JSON object a line")
        return tasks

    load.__doc__ = f"Tasks from a {source} JSONL file; ids are '{source}/<file stem>/<line>'."
    return load


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
register_loader("hf", load_hf)
