"""Questions with gold answers: the `Task` record, loaders for the benchmarks and the
built-in arithmetic generator, and `verify(task, answer)`."""

from deliberation_env.tasks.arithmetic import generate_arithmetic
from deliberation_env.tasks.loaders import (
    HF_DATASETS,
    TASK_SOURCES,
    Loader,
    load_tasks,
    register_hf_dataset,
    register_loader,
)
from deliberation_env.tasks.split import normalise_question, train_eval_split
from deliberation_env.tasks.task import CHOICE_LETTERS, TASK_KINDS, Task, TaskKind
from deliberation_env.tasks.verify import last_boxed, normalize_answer, parse_number, verify

__all__ = [
    "CHOICE_LETTERS",
    "HF_DATASETS",
    "TASK_KINDS",
    "TASK_SOURCES",
    "Loader",
    "Task",
    "TaskKind",
    "generate_arithmetic",
    "last_boxed",
    "load_tasks",
    "normalise_question",
    "normalize_answer",
    "parse_number",
    "register_hf_dataset",
    "register_loader",
    "train_eval_split",
    "verify",
]
