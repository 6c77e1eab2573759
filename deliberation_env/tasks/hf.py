"""``load_tasks("hf:DATASET_ID[:SPLIT]")``: Hugging Face datasets read with the row formats
of `deliberation_env.tasks.rows` (needs the `datasets` extra and a connection)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deliberation_env.tasks.rows import ROW_FORMATS, RowError
from deliberation_env.tasks.task import Task


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


def load_hf(arg: str | None) -> list[Task]:
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
            except RowError as e:
                where = f"hf:{dataset_id} (config {config}, split {split}), row {len(tasks) + 1}"
                raise ValueError(f"{where}: {e}") from None
    return tasks
