"""Debate episodes rebuilt from solution records (a `agents.cache.ResponseCache` file or a
JSONL of `agents.records` records), for `agents.transcripts`' ``cache`` format.

Records are per LLM call, not per episode, and a text backend may not know the round. An
episode is rebuilt by chaining: its round-0 state is the n-th solve record of each agent for
a task (in storage order); its round-r state takes, for every agent, the first unused refine
record of that task whose previous answer and peers' answers (agent + 1, agent + 2, ... mod
N) equal the round r-1 state, and whose round, where recorded, is r. An episode ends at the
first round in which some agent made no REFINE call (it persisted or conceded). Episodes in
the same state are interchangeable, so which one a record joins does not change the counts.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.records import load_records

__all__ = ["Episode", "load_cache_episodes"]

_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class Episode:
    """One all-REFINE episode: answers and correctness ``[R+1][N]``."""

    task_id: str
    kind: str
    answers: list[list[Any]]
    correct: list[list[bool]]
    gold: str | None
    """A right answer seen in the task's records (None if no agent was ever right)."""


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        sqlite = f.read(16) == _SQLITE_MAGIC
    if sqlite:
        from agents.cache import ResponseCache

        cache = ResponseCache(path, read_only=True)  # reading records never writes the file
        try:
            return load_records(cache)
        finally:
            cache.close()
    try:
        return load_records(path)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{path}: not a response cache nor a JSONL of records ({err}); for per-round "
            "answers use --format jsonl"
        ) from None


def _key(agent: int, before: list[Any], n: int, round: int | None) -> Hashable:
    """Index of a refine record: agent, its own and its peers' answers before, round."""
    own = before[agent]
    peers = tuple(before[(agent + k) % n] for k in range(1, n))
    return (agent, own, peers, round)


def _record_key(r: dict[str, Any]) -> Hashable:
    peers = r.get("peer_answers") or []
    return (int(r["agent"]), r.get("prev_answer"), tuple(peers), r.get("round"))


def load_cache_episodes(path: Path) -> tuple[list[Episode], list[dict[str, Any]], list[str]]:
    """``(episodes, records, notes)``: the all-REFINE episodes with the most rounds, every
    scoreable record (for fitting), and what was left out."""
    records = [r for r in _read(path) if r.get("correct") is not None]
    if not records:
        raise ValueError(
            f"{path}: no records with a known 'correct' (a cache written by the hf or openai "
            "backend with cache=PATH holds them); record a run first"
        )
    n = 1 + max(int(r["agent"]) for r in records)
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_task[str(r["task_id"])].append(r)
    episodes = [ep for task, recs in by_task.items() for ep in _task_episodes(task, recs, n)]
    if not episodes:
        raise ValueError(
            f"{path}: no task has a solve record from each of the {n} agents; the records "
            "must come from whole episodes"
        )
    rounds = max(len(ep.answers) for ep in episodes) - 1
    kept = [ep for ep in episodes if len(ep.answers) - 1 == rounds]
    notes = []
    if len(kept) < len(episodes):
        notes.append(
            f"{len(episodes) - len(kept)} of {len(episodes)} episodes have fewer than "
            f"{rounds} rounds in which every agent refined; left out of the arrays"
        )
    if rounds == 0:
        notes.append(
            "no episode has a round in which every agent refined: record a debate (every "
            "agent REFINEs each round) to compare transitions"
        )
    return kept, records, notes


def _task_episodes(task: str, recs: list[dict[str, Any]], n: int) -> list[Episode]:
    solves: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    pool: dict[Hashable, deque[dict[str, Any]]] = defaultdict(deque)
    for r in recs:
        if r["action"] == "solve":
            solves[int(r["agent"])].append(r)
        else:
            pool[_record_key(r)].append(r)
    gold = next((r["answer"] for r in recs if r["correct"] and r["answer"] is not None), None)
    kind = str(recs[0].get("kind") or "numeric")
    out = []
    for e in range(min(len(s) for s in solves)):
        first = [solves[a][e] for a in range(n)]
        ep = Episode(
            task, kind, [[r["answer"] for r in first]], [[bool(r["correct"]) for r in first]], gold
        )
        while True:
            before, rnd = ep.answers[-1], len(ep.answers)
            found = [_take(pool, a, before, n, rnd) for a in range(n)]
            if any(f is None for f in found):
                for f in found:  # give back the partial round's records
                    if f is not None:
                        pool[_record_key(f)].appendleft(f)
                break
            ep.answers.append([f["answer"] for f in found])  # type: ignore[index]
            ep.correct.append([bool(f["correct"]) for f in found])  # type: ignore[index]
        out.append(ep)
    return out


def _take(
    pool: dict[Hashable, deque[dict[str, Any]]], agent: int, before: list[Any], n: int, r: int
) -> dict[str, Any] | None:
    for round in (r, None):
        queue = pool.get(_key(agent, before, n, round))
        if queue:
            return queue.popleft()
    return None
