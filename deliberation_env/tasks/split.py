"""Train / held-out splits of a task list that cannot leak a question across sides."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from deliberation_env.tasks.task import Task


def normalise_question(text: str) -> str:
    """A question's text with whitespace collapsed and case folded: the key that matches
    the same question across splits, task files and transcripts."""
    return " ".join(text.split()).casefold()


def train_eval_split(
    tasks: Sequence[Task], eval_fraction: float = 0.25, seed: int = 0
) -> tuple[list[Task], list[Task]]:
    """Split `tasks` into (train, eval) by a hash of ``(seed, task.id)``.

    Deterministic and order-independent: a task's side depends on its id and `seed`
    only. The sides share no id, and eval tasks whose question text (whitespace and case
    normalised) also appears in train are dropped, so duplicated questions cannot leak.
    """
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must lie in [0, 1]")

    def in_eval(task: Task) -> bool:
        digest = hashlib.blake2b(f"{seed}\x00{task.id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") < eval_fraction * 2.0**64

    sides = [in_eval(t) for t in tasks]
    train = [t for t, e in zip(tasks, sides) if not e]
    seen = {normalise_question(t.question) for t in train if t.question.strip()}
    held_out = [t for t, e in zip(tasks, sides) if e and normalise_question(t.question) not in seen]
    return train, held_out
