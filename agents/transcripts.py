"""Real multi-agent debate logs -> `Transcript`: per-round answers and correctness as arrays,
plus the records `SimulatedBackend.fit` takes (`agents.records`), from three formats.

Formats (``load_transcript(path, format=...)``; guessed from the file when not given)
-------------------------------------------------------------------------------------
``du``
    The Du et al. log (``composable-models/llm_multiagent_debate``, ``gsm/gen_gsm.py``): one
    JSON object ``{question: [agent_contexts, gold]}``. ``agent_contexts`` holds one chat per
    agent, alternating ``user`` / ``assistant`` messages (leading ``system`` messages are
    skipped); the r-th assistant reply is the agent's answer at round r (round 0 = the
    initial solution; the user message of a later round quotes the peers' previous replies,
    which this reader takes from the peers' own chats). A message's ``content`` is a string
    or a ``{"role", "content"}`` dict; ``null`` is an empty reply. ``gold`` is an answer
    (``"18"``, ``18``), a GSM8K solution ending ``#### 18``, or ``null`` (then the question
    must match a task). Replies are parsed with `agents.parsing.parse_answer` for the task's
    kind (for numbers: the last ``\\boxed{}``, else a ``####`` line or an "answer is" phrase,
    else the last number). Tokens are estimated as characters / 4; confidences are read from
    ``CONFIDENCE:`` lines when every reply has one.
``jsonl``
    Per-round per-agent answers, one JSON object a line::

        {"question": "Tom has 3 apples...", "gold": "18", "task_id": "gsm8k/test/7",
         "kind": "numeric", "rounds": [["18", "20", "18"], ["18", "18", "18"]],
         "confidences": [[0.9, 0.6, 0.8], [0.9, 0.7, 0.9]]}

    ``rounds[r][i]`` is agent i's answer at round r (round 0 = initial answers; every
    later round is one REFINE by every agent, who saw all peers' round r-1 answers): a
    string, a number or ``null`` (unparseable). ``question`` is required unless
    ``task_id`` names a task of ``tasks``; ``gold`` is required unless the question
    matches a task; ``kind`` (numeric | math | choice | code) defaults to the loader's
    `kind`; ``confidences`` (same shape, numbers in [0, 1] or ``null``) is optional.
``cache``
    Our own record store: a `agents.cache.ResponseCache` SQLite file, or a JSONL of records
    (`agents.records` schema, e.g. `RecordingBackend.records` written one a line). All
    records go to `Transcript.records`; the arrays hold the episodes in which every agent
    refined in every round, chained by answers (a refine whose previous answer and peers'
    answers equal the state after the round before), those with the most rounds.

Every question of one transcript needs the same number of agents N and rounds R.
Questions are matched to ``tasks`` (a `deliberation_env.load_tasks` spec or list) by task
id, else by question text (whitespace and case normalised, as `train_eval_split` does); a
matched task gives the gold answer, its kind and its id. Correctness is
`deliberation_env.verify`. A malformed log raises `ValueError` naming the file, the question
(first 60 characters), the round and the agent, and saying how to fix it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.parsing import DEFAULT_CONFIDENCE, parse_confidence, parse_self_report
from agents.profiles import SimProfile, get_profile
from agents.records import RECORD_KEYS
from agents.transcript_cache import Episode, load_cache_episodes
from agents.transcript_formats import Matcher, Question, check, read_answers_jsonl, read_du
from deliberation_env.tasks import Task, load_tasks

__all__ = [
    "FORMATS",
    "MEASURED_FIELDS",
    "Transcript",
    "fit_transcript",
    "load_transcript",
]

FORMATS = ("du", "jsonl", "cache")
CHARS_PER_TOKEN = 4.0
"""Token estimate of a text without a tokenizer (the same len / 4 as `agents.fit`)."""
MEASURED_FIELDS: dict[str, tuple[str, ...]] = {
    "confidence": ("self_auroc", "self_mean", "judge_auroc", "logprob_auroc"),
    "tokens": (
        "completion_tokens",
        "wrong_length_factor",
        "token_sigma",
        "question_tokens",
        "solve_instruction_tokens",
        "refine_instruction_tokens",
    ),
    "profile": ("steps", "operators_per_step"),
}
"""Profile fields fitted from each kind of measure; `fit_transcript` keeps the base's values
of the kinds a transcript did not measure (a log without confidences says nothing about
their AUROC)."""


@dataclass(frozen=True)
class Transcript:
    """A debate log as arrays: question q, round r (0 = initial answers), agent i."""

    path: Path
    format: str
    tasks: list[Task]
    """The task of each question (matched, or built from the log's question and gold)."""
    answers: list[list[list[str | None]]]
    """``answers[q][r][i]``: normalised answer; None = unparseable."""
    correct: np.ndarray
    """``[Q, R+1, N]`` bool."""
    records: list[dict[str, Any]]
    """One `agents.records` record per reply (the input of `SimulatedBackend.fit`)."""
    measured: frozenset[str] = frozenset()
    """Which of `MEASURED_FIELDS` the records carry real values for."""
    notes: tuple[str, ...] = field(default=())

    @property
    def num_questions(self) -> int:
        return int(self.correct.shape[0])

    @property
    def num_rounds(self) -> int:
        """R, the deliberation rounds after the initial answers."""
        return int(self.correct.shape[1]) - 1

    @property
    def num_agents(self) -> int:
        return int(self.correct.shape[2])

    def answer_ids(self) -> np.ndarray:
        """``[Q, R+1, N]`` int answer ids, the simulator's convention: 0 = right, k > 0 the
        k-th distinct wrong answer of the question, -1 = unparseable."""
        ids = np.full(self.correct.shape, -1, np.int64)
        for q, rounds in enumerate(self.answers):
            wrong: dict[str, int] = {}
            for r, row in enumerate(rounds):
                for i, answer in enumerate(row):
                    if self.correct[q, r, i]:
                        ids[q, r, i] = 0
                    elif answer is not None:
                        ids[q, r, i] = wrong.setdefault(answer, len(wrong) + 1)
        return ids


# ---------------------------------------------------------------------- entry point
def load_transcript(
    path: str | os.PathLike[str],
    format: str | None = None,
    tasks: str | Sequence[Task] | None = None,
    kind: str = "numeric",
) -> Transcript:
    """Read a debate log (formats in the module docstring; `format` None: guessed).

    `tasks` (a `load_tasks` spec or tasks) supplies gold answers, kinds and ids by
    question; `kind` is the answer kind of questions that match no task.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"transcript {path}: no such file; check --transcripts")
    format = format or guess_format(path)
    if format not in FORMATS:
        raise ValueError(f"transcript format {format!r} is not one of {FORMATS}")
    task_list = load_tasks(tasks) if tasks is not None else []
    matcher = Matcher(path, task_list, kind)
    if format == "cache":
        return _from_episodes(path, load_cache_episodes(path), matcher)
    questions = read_du(path, matcher) if format == "du" else read_answers_jsonl(path, matcher)
    return _build(path, format, questions)


def guess_format(path: Path) -> str:
    """``cache`` for SQLite or a JSONL of records, ``jsonl`` for other JSONL, else ``du``."""
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(b"SQLite format 3\x00"):
        return "cache"
    first = head.split(b"\n", 1)[0].strip()
    if path.suffix == ".json":
        return "du"
    try:
        one_object_a_line = isinstance(json.loads(first), dict)
    except ValueError:
        one_object_a_line = False
    if path.suffix == ".jsonl" or one_object_a_line:
        return "cache" if b'"action"' in first else "jsonl"
    return "du"


def fit_transcript(
    transcript: Transcript, base: str | SimProfile = "llama3.1-8b/gsm8k", **kwargs: Any
) -> SimProfile:
    """`agents.fit.fit_profile` on the transcript's records, keeping `base`'s values of the
    fields the transcript has no measure for (`MEASURED_FIELDS`); `kwargs` go to it."""
    from agents.fit import fit_profile

    base = get_profile(base)
    kwargs.setdefault("tasks", transcript.tasks)
    fitted = fit_profile(transcript.records, base=base, **kwargs)
    keep = [
        k for kind, keys in MEASURED_FIELDS.items() if kind not in transcript.measured for k in keys
    ]
    sources = {k: v for k, v in fitted.sources.items() if k not in keep}
    if keep:
        sources["unmeasured"] = (
            f"{transcript.path.name} has no {sorted(set(MEASURED_FIELDS) - transcript.measured)}"
            f" measures: {', '.join(keep)} kept at {base.name!r}'s values"
        )
    return fitted.with_(sources=sources, **{k: getattr(base, k) for k in keep})


def _build(path: Path, format: str, questions: list[Question]) -> Transcript:
    if not questions:
        raise ValueError(f"{path}: the log holds no questions")
    first = questions[0]
    shape = (len(first.answers), len(first.answers[0]))
    for q in questions:
        got = (len(q.answers), len(q.answers[0]))
        if got != shape:
            raise ValueError(
                f"{path}: question {q.task.question[:60]!r} has {got[0]} rounds of {got[1]} "
                f"answers, the first question {shape[0]} of {shape[1]}; every question of a "
                "transcript needs the same N and R: split the file by protocol"
            )
    correct = np.array(
        [[[check(q.task, a, path.name) for a in row] for row in q.answers] for q in questions],
        bool,
    )
    records = [rec for q, c in zip(questions, correct) for rec in _records(q, c)]
    measured = set()
    if all(q.texts is not None for q in questions):
        measured |= {"tokens", "profile"}
    if all(
        q.confidences is not None and all(v is not None for row in q.confidences for v in row)
        for q in questions
    ):
        measured.add("confidence")
    return Transcript(
        path,
        format,
        [q.task for q in questions],
        [q.answers for q in questions],
        correct,
        records,
        frozenset(measured),
    )


def _records(q: Question, correct: np.ndarray) -> list[dict[str, Any]]:
    """One `agents.records` record per reply; peers listed from agent + 1 (mod N)."""
    out = []
    n = len(q.answers[0])
    for r, row in enumerate(q.answers):
        for i, answer in enumerate(row):
            peers = [(i + k) % n for k in range(1, n)]
            record: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
            record.update(
                task_id=q.task.id,
                kind=q.task.kind,
                round=r,
                agent=i,
                answer=answer,
                action="refine" if r else "solve",
                correct=bool(correct[r, i]),
                **_measures(q, r, i),
            )
            if r:
                before = q.answers[r - 1]
                record.update(
                    prev_answer=before[i],
                    prev_correct=bool(correct[r - 1, i]),
                    peer_answers=[before[p] for p in peers],
                    peers_correct=[bool(correct[r - 1, p]) for p in peers],
                )
            out.append(record)
    return out


def _measures(q: Question, r: int, i: int) -> dict[str, Any]:
    """Confidences, reasoning profile and tokens of one reply (0 where the log has none)."""
    conf = q.confidences[r][i] if q.confidences else None
    out: dict[str, Any] = dict.fromkeys(
        ("steps", "operators", "prompt_tokens", "completion_tokens"), 0
    )
    if q.texts is not None and q.prompt_chars is not None:
        text = q.texts[r][i]
        report = parse_self_report(text)
        out.update(
            steps=report.steps,
            operators=report.operators,
            completion_tokens=math.ceil(len(text) / CHARS_PER_TOKEN),
            prompt_tokens=math.ceil(q.prompt_chars[r][i] / CHARS_PER_TOKEN),
        )
        conf = parse_confidence(text) if conf is None else conf
    conf = DEFAULT_CONFIDENCE if conf is None else float(conf)
    return {**out, "self_confidence": conf, "judge_confidence": conf, "logprob_confidence": None}


# ---------------------------------------------------------------------- cache
def _from_episodes(
    path: Path, read: tuple[list[Episode], list[dict], list[str]], m: Matcher
) -> Transcript:
    episodes, records, notes = read
    tasks = {}
    for ep in episodes:
        if ep.task_id not in tasks:
            found = m.by_id.get(ep.task_id)
            tasks[ep.task_id] = found or Task(
                ep.task_id,
                "",
                ep.gold or "?",
                ep.kind,  # type: ignore[arg-type]
                choices=tuple("ABCD") if ep.kind == "choice" else (),
            )
    measured = {"confidence", "tokens", "profile"}  # real backends record every measure
    return Transcript(
        path,
        "cache",
        [tasks[ep.task_id] for ep in episodes],
        [ep.answers for ep in episodes],
        np.array([ep.correct for ep in episodes], bool),
        records,
        frozenset(measured),
        tuple(notes),
    )
