"""The ``du`` and ``jsonl`` readers of `agents.transcripts` (formats in its docstring), and
how a log's questions are matched to tasks (`Matcher`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.parsing import parse_answer
from deliberation_env.tasks import TASK_KINDS, Task, normalise_question, normalize_answer, verify
from deliberation_env.tasks.loaders import read_jsonl

__all__ = ["Matcher", "Question", "check", "read_answers_jsonl", "read_du"]


# ---------------------------------------------------------------------- matching questions
def _gold_text(gold: Any) -> str | None:
    """A log's gold as answer text: a GSM8K solution's part after ``####``, numbers as text."""
    if gold is None or isinstance(gold, bool):
        return None
    if isinstance(gold, (int, float)):
        return repr(gold)
    if not isinstance(gold, str):
        return None
    text = gold.rpartition("####")[2] if "####" in gold else gold
    return text.strip() or None


class Matcher:
    """Finds each question's task (by id, else by normalised question text) or builds one."""

    def __init__(self, path: Path, tasks: Sequence[Task], kind: str) -> None:
        self.path, self.kind, self.stem = path, kind, path.name.split(".")[0]
        self.by_id = {t.id: t for t in tasks}
        self.by_text: dict[str, Task] = {}
        for t in tasks:
            self.by_text.setdefault(normalise_question(t.question), t)
        self.have_tasks = bool(tasks)

    def where(self, question: str, round: int | None = None, agent: int | None = None) -> str:
        """``FILE: question 'first 60 chars', round r, agent i`` for error messages."""
        parts = [f"{self.path}: question {question[:60]!r}"]
        parts += [f"round {round}"] if round is not None else []
        parts += [f"agent {agent}"] if agent is not None else []
        return ", ".join(parts)

    def task(
        self, index: int, question: str, gold: Any, task_id: Any = None, kind: str | None = None
    ) -> Task:
        where = self.where(question)
        found = self.by_id.get(task_id) if isinstance(task_id, str) else None
        found = found or self.by_text.get(normalise_question(question))
        text = _gold_text(gold)
        if gold is not None and text is None:
            raise ValueError(
                f"{where}: gold {gold!r:.60} is not an answer; write the final "
                "answer (or a GSM8K solution ending '#### N') or null"
            )
        if found is not None:
            if text is not None and not check(found, text, where):
                raise ValueError(
                    f"{where}: the log's gold {text!r} disagrees with task {found.id!r}'s "
                    f"answer {found.answer!r}; fix the gold or pass the tasks it came from"
                )
            return found
        kind = kind or self.kind
        if kind not in TASK_KINDS:
            raise ValueError(f"{where}: kind {kind!r} is not one of {TASK_KINDS}")
        if kind == "choice":
            raise ValueError(
                f"{where}: no task of --tasks has this choice question; choice questions "
                "need their options: pass --tasks with the file the questions came from"
            )
        if text is None:
            hint = "none of --tasks has this question" if self.have_tasks else "no --tasks given"
            raise ValueError(
                f"{where}: no gold answer and {hint}; add the gold to the log or "
                "pass --tasks with the file the questions came from"
            )
        answer = text.strip() if kind == "code" else normalize_answer(kind, text)
        if answer is None or kind not in ("numeric", "math", "code"):
            raise ValueError(
                f"{where}: gold {text!r} is not a {kind!r} answer; fix the gold, or the "
                "question's 'kind' (numeric | math | choice | code)"
            )
        ident = task_id if isinstance(task_id, str) else f"transcript/{self.stem}/{index}"
        return Task(id=ident, question=question, answer=answer, kind=kind)  # type: ignore[arg-type]


def check(task: Task, answer: str | None, where: str) -> bool:
    try:
        return bool(verify(task, answer))
    except NotImplementedError:
        raise ValueError(
            f"{where}: {task.kind} answers cannot be scored yet "
            "(code needs the execution sandbox); drop these questions"
        ) from None


# ---------------------------------------------------------------------- one question
@dataclass
class Question:
    """One question as read: its task, answers ``[R+1][N]``, and what the log measured."""

    task: Task
    answers: list[list[str | None]]
    texts: list[list[str]] | None = None
    prompt_chars: list[list[int]] | None = None
    confidences: list[list[float | None]] | None = None


# ---------------------------------------------------------------------- du
def read_du(path: Path, m: Matcher) -> list[Question]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{path}: not a JSON file ({err}); a Du et al. log is one JSON "
            "object {question: [agent_contexts, gold]}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: a Du et al. log is a JSON object {{question: "
            f"[agent_contexts, gold]}}, got a {type(data).__name__}"
        )
    out = []
    for index, (question, value) in enumerate(data.items()):
        if not (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and value[0]
            and isinstance(value[0], list)
        ):
            raise ValueError(
                f"{m.where(question)}: the value must be [agent_contexts, gold] "
                "with one chat (a list of messages) per agent"
            )
        contexts, gold = value
        chats = [_du_replies(ctx, question, a, m) for a, ctx in enumerate(contexts)]
        rounds = max(len(c) for c in chats)
        for a, chat in enumerate(chats):
            if len(chat) < rounds:
                raise ValueError(
                    f"{m.where(question, len(chat), a)}: no reply (agent {a} has {len(chat)} "
                    f"replies, another agent {rounds}); every agent needs one assistant reply "
                    "per round: complete the chat or drop the question"
                )
        task = m.task(index, question, gold)
        texts = [[chats[a][r][0] for a in range(len(chats))] for r in range(rounds)]
        prompts = [[chats[a][r][1] for a in range(len(chats))] for r in range(rounds)]
        answers = [[parse_answer(t, task.kind) for t in row] for row in texts]
        out.append(Question(task, answers, texts, prompts))
    return out


def _du_replies(ctx: Any, question: str, agent: int, m: Matcher) -> list[tuple[str, int]]:
    """``(reply text, characters of the chat before it)`` for each assistant reply."""
    if not isinstance(ctx, list):
        raise ValueError(
            f"{m.where(question, agent=agent)}: the agent's chat must be a list of "
            f"messages, got a {type(ctx).__name__}"
        )
    replies: list[tuple[str, int]] = []
    chars, expect = 0, "user"
    for k, msg in enumerate(ctx):
        role = msg.get("role") if isinstance(msg, Mapping) else None
        if role == "system" and not replies and expect == "user":
            chars += len(_content(msg, question, len(replies), agent, m))
            continue
        if role != expect:
            raise ValueError(
                f"{m.where(question, len(replies), agent)}: message {k} should be a "
                f"{{'role': {expect!r}, 'content': ...}} message, got {str(msg)[:60]!r}; "
                "the chat alternates user and assistant messages"
            )
        text = _content(msg, question, len(replies), agent, m)
        if role == "assistant":
            replies.append((text, chars))
        chars += len(text)
        expect = "assistant" if expect == "user" else "user"
    if not replies:
        raise ValueError(f"{m.where(question, 0, agent)}: the chat has no assistant reply")
    return replies


def _content(msg: Mapping[str, Any], question: str, r: int, agent: int, m: Matcher) -> str:
    """A message's text: content as a string, a ``{"role", "content"}`` dict, or null."""
    content = msg.get("content")
    if isinstance(content, Mapping):
        content = content.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise ValueError(
            f"{m.where(question, r, agent)}: message content must be text or a "
            f"{{'role', 'content'}} dict, got {type(content).__name__}"
        )
    return content


# ---------------------------------------------------------------------- jsonl
def read_answers_jsonl(path: Path, m: Matcher) -> list[Question]:
    out = []
    for index, (line, row) in enumerate(read_jsonl(path)):
        question = row.get("question")
        task_id = row.get("task_id")
        task = m.by_id.get(task_id) if isinstance(task_id, str) else None
        if not isinstance(question, str):
            if task is None:
                raise ValueError(
                    f"{path}, line {line}: no 'question' text (and no 'task_id' "
                    "of --tasks); add the question"
                )
            question = task.question
        where = f"{m.where(question)} (line {line})"
        task = m.task(index, question, row.get("gold"), task_id, row.get("kind"))
        rounds = _grid(row.get("rounds"), "rounds", where, None)
        answers = [
            [_jsonl_answer(v, task.kind, f"{where}, round {r}, agent {i}") for i, v in enumerate(a)]
            for r, a in enumerate(rounds)
        ]
        conf = row.get("confidences")
        confidences = None if conf is None else _confidences(conf, where, rounds)
        out.append(Question(task, answers, confidences=confidences))
    return out


def _grid(value: Any, name: str, where: str, like: list[list[Any]] | None) -> list[list[Any]]:
    """A non-empty ``[R+1][N]`` list of lists, all rows of one length (and `like`'s shape)."""
    ok = isinstance(value, list) and value and all(isinstance(v, list) and v for v in value)
    if (
        ok
        and len({len(v) for v in value}) == 1
        and (like is None or (len(value) == len(like) and len(value[0]) == len(like[0])))
    ):
        return value
    shape = "the shape of 'rounds'" if like else "one list of N answers per round, N the same"
    raise ValueError(
        f"{where}: '{name}' must be a list of lists, {shape}, e.g. "
        '[["18", "20", "18"], ["18", "18", "18"]]; got '
        f"{str(value)[:60]}"
    )


def _jsonl_answer(value: Any, kind: str, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: an answer is a string, a number or null, got {value!r:.60}")
    text = value if isinstance(value, str) else repr(value)
    if kind == "code":
        return text.strip() or None
    return normalize_answer(kind, text) or parse_answer(text, kind)


def _confidences(value: Any, where: str, like: list[list[Any]]) -> list[list[float | None]]:
    grid = _grid(value, "confidences", where, like)
    for r, row in enumerate(grid):
        for i, v in enumerate(row):
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0
            ):
                raise ValueError(
                    f"{where}, round {r}, agent {i}: confidence {v!r:.40} is not "
                    "a number in [0, 1] (or null)"
                )
    return grid
