"""SQLite response cache for the LLM backends: record every completion once, replay it exactly.

A backend given ``cache="runs/cache.sqlite"`` looks each request up by a hash of everything
that determines the completion (model, messages or prompt, sampling parameters, seed) and
calls the model only on a miss. A re-run with the same cache makes no model calls and is
bit-identical, because a fresh completion goes through the same JSON round trip as a
replayed one. Each completion is committed in its own transaction as soon as it arrives
(SQLite in WAL mode), so a run killed midway leaves only whole entries behind and a re-run
resumes where it stopped. Several threads or processes may write to one file; writers wait
on each other (``busy_timeout``) instead of failing.

Besides the raw completions the cache keeps one *record* per agent solution (task, round,
action, answer, correctness, confidences, tokens, peers' correctness) for
`SimulatedBackend.fit`: record a run once on a GPU, then fit a simulator profile to it.

    from agents.cache import ResponseCache, cached_batch

    cache = ResponseCache("runs/cache.sqlite")
    outs = cached_batch(cache, [{"model": m, "prompt": p, "seed": s} for ...], generate)
    cache.stats()  # {"hits": ..., "misses": ..., "writes": ..., "entries": ..., ...}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ResponseCache",
    "cached_batch",
    "cached_generate",
    "open_cache",
    "request_key",
]

SCHEMA_VERSION = 1
"""Bumped when the stored layout changes; an older file is refused with a clear message."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    created REAL NOT NULL
);
"""


def _dumps(value: Any, allow_nan: bool = False) -> str:
    # Canonical JSON: sorted keys, so equal requests hash equally everywhere; ASCII escapes
    # keep lone surrogates (bytes of a split character) storable. Keys refuse NaN (it has
    # no canonical form); stored values keep it (a server may send -Infinity log-probs).
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=allow_nan)


def request_key(fields: Mapping[str, Any]) -> str:
    """The cache key of a request: sha256 of its canonical JSON.

    `fields` must hold everything that determines the completion (model, messages or
    prompt, temperature, top_p, max_tokens, seed, logprobs, ...) and be JSON-serialisable.
    """
    try:
        blob = _dumps(dict(fields))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"cache key fields must be JSON-serialisable (str, int, float, bool, None, lists, "
            f"dicts; no NaN): {err}"
        ) from None
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """Completions and solution records in one SQLite file.

    Args:
        path: the database file (created with its parent folder when missing).
        timeout: seconds a writer waits for another process's transaction (busy timeout).

    Picklable (only the path travels; connections are opened lazily per thread and per
    process). `hits`, `misses` and `writes` count this instance's lookups and stores.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._init_local()
        self._conn()  # a bad path or an incompatible file fails here, not mid-run

    def _init_local(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []

    # ------------------------------------------------------------------ connections
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        # A connection must not cross a fork: the child opens its own.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a committed entry survives a killed process (not a power cut).
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
            version = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise ValueError(
                f"response cache {str(self.path)!r} cannot be opened as SQLite ({err}); "
                "pass another path or delete the file"
            ) from None
        if version != str(SCHEMA_VERSION):
            conn.close()
            raise ValueError(
                f"response cache {str(self.path)!r} has schema {version}, this version reads "
                f"{SCHEMA_VERSION}; use a new cache file"
            )
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this instance opened (it reopens lazily if used again)."""
        with self._lock:
            conns, self._all = self._all, []
        pid = os.getpid()
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        if getattr(self._local, "pid", None) == pid:
            self._local.conn = None
        self._init_local()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_local", "_lock", "_all"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_local()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    # ------------------------------------------------------------------ completions
    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response of `key` (counted as a hit), or None (a miss)."""
        row = (
            self._conn().execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        )
        with self._lock:
            if row is None:
                self.misses += 1
            else:
                self.hits += 1
        return None if row is None else json.loads(row[0])

    def put(self, key: str, request: Mapping[str, Any], response: Mapping[str, Any]) -> None:
        """Store one completion in its own transaction (replacing an entry with that key)."""
        self._conn().execute(
            "INSERT OR REPLACE INTO responses (key, model, request, response, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                key,
                request.get("model"),
                _dumps(dict(request)),
                _dumps(dict(response), True),
                time.time(),
            ),
        )
        with self._lock:
            self.writes += 1

    def __contains__(self, key: object) -> bool:
        row = self._conn().execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone()
        return row is not None

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def entries(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Every stored ``(request, response)``, oldest first."""
        cur = self._conn().execute("SELECT request, response FROM responses ORDER BY rowid")
        for request, response in cur:
            yield json.loads(request), json.loads(response)

    # ------------------------------------------------------------------ solution records
    def put_record(self, key: str, record: Mapping[str, Any]) -> None:
        """Store the record of one agent solution (see `records`); `key` is its request key.

        A replayed solution rewrites the same record, so records are never duplicated.
        """
        self._conn().execute(
            "INSERT OR REPLACE INTO records (key, record, created) VALUES (?, ?, ?)",
            (key, _dumps(dict(record), True), time.time()),
        )

    def put_records(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Store many ``(key, record)`` pairs in one transaction (one backend call's worth)."""
        now = time.time()
        rows = [(key, _dumps(dict(record), True), now) for key, record in items]
        if not rows:
            return
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO records (key, record, created) VALUES (?, ?, ?)", rows
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def has_records(self, keys: Sequence[str]) -> set[str]:
        """The subset of `keys` that already have a record."""
        conn = self._conn()
        found: set[str] = set()
        for start in range(0, len(keys), 500):  # SQLite caps the parameters of one query
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT key FROM records WHERE key IN ({marks})", chunk)
            found.update(k for (k,) in rows)
        return found

    def records(self) -> Iterator[dict[str, Any]]:
        """One dict per recorded agent solution, oldest first: the input of
        `SimulatedBackend.fit` (schema: `agents.records`; backends store
        `agents.records.record_from_call` plus ``model`` and ``seed``)."""
        cur = self._conn().execute("SELECT record FROM records ORDER BY rowid")
        for (record,) in cur:
            yield json.loads(record)

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """This instance's hits, misses and writes, the hit rate, and the file's totals."""
        conn = self._conn()
        lookups = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "writes": self.writes,
            "hit_rate": self.hits / lookups if lookups else 0.0,
            "entries": conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0],
            "records": conn.execute("SELECT COUNT(*) FROM records").fetchone()[0],
            "path": str(self.path),
        }

    def reset_stats(self) -> None:
        with self._lock:
            self.hits = self.misses = self.writes = 0


def open_cache(cache: ResponseCache | str | os.PathLike[str] | None) -> ResponseCache | None:
    """A backend's ``cache=`` argument as a `ResponseCache` (a path opens one; None: no cache)."""
    if cache is None or isinstance(cache, ResponseCache):
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return ResponseCache(cache)
    raise TypeError(
        f"cache must be a path or an agents.cache.ResponseCache (or None), "
        f"got {type(cache).__name__}"
    )


def _round_trip(response: Mapping[str, Any]) -> dict[str, Any]:
    # A fresh response takes the same JSON path as a replayed one (tuples become lists,
    # float32 becomes float), so both give bit-identical solutions.
    return json.loads(_dumps(dict(response), True))


def cached_generate(
    cache: ResponseCache | None,
    key_fields: Mapping[str, Any],
    fn: Callable[[], Mapping[str, Any]],
) -> dict[str, Any]:
    """``fn()``'s JSON response for `key_fields`, from the cache when it holds one.

    On a miss `fn` is called and its response stored (committed before returning).
    """
    if cache is None:
        return _round_trip(fn())
    key = request_key(key_fields)
    hit = cache.get(key)
    if hit is not None:
        return hit
    response = _round_trip(fn())
    cache.put(key, key_fields, response)
    return response


def cached_batch(
    cache: ResponseCache | None,
    key_fields: Sequence[Mapping[str, Any]],
    generate: Callable[[list[int]], Sequence[Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    """Responses for a batch of requests, generating only the misses in one call.

    `generate(indices)` receives the positions (into `key_fields`) of the requests the
    cache lacks, in order, and returns one JSON-serialisable response per position; it is
    not called when every request hits. Each new response is committed in its own
    transaction. Duplicate requests in a batch are generated once.
    """
    if cache is None:
        out = generate(list(range(len(key_fields))))
        return [_round_trip(r) for r in _checked(out, len(key_fields))]
    keys = [request_key(f) for f in key_fields]
    responses: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    missing: list[int] = []
    for i, key in enumerate(keys):
        if key in seen:  # a duplicate within the batch: share the first one's result
            continue
        seen.add(key)
        hit = cache.get(key)
        if hit is None:
            missing.append(i)
        else:
            responses[key] = hit
    if missing:
        for i, response in zip(missing, _checked(generate(missing), len(missing))):
            responses[keys[i]] = _round_trip(response)
            cache.put(keys[i], key_fields[i], responses[keys[i]])
    return [responses[key] for key in keys]


def _checked(out: Sequence[Mapping[str, Any]], n: int) -> Sequence[Mapping[str, Any]]:
    if len(out) != n:
        raise RuntimeError(f"generate returned {len(out)} responses for {n} requests")
    return out
