"""SQLite response cache for the LLM backends: record every completion once, replay it exactly.

A backend given ``cache="runs/cache.sqlite"`` looks each request up by a hash of everything
that determines the completion (model, messages or prompt, sampling parameters, seed) and
calls the model only on a miss. A re-run with the same cache makes no model calls and is
bit-identical, because a fresh completion goes through the same JSON round trip as a
replayed one. Each completion is committed in its own transaction as soon as it arrives
(SQLite in WAL mode), so a run killed midway leaves only whole entries behind and a re-run
resumes where it stopped. Several threads or processes may write to one file; writers wait
on each other (``busy_timeout``) instead of failing.

A cache is never put at risk. One in a read-only location (a shared dataset, a read-only
mount) is opened read-only (SQLite ``mode=ro``) and replayed: misses are generated but
not recorded, and the cache says so once (`ReadOnlyCacheWarning`); ``read_only=True`` asks
for that anywhere. A cache serves one model and one version of the prompts: both are
stored in the file (``meta``), and a backend that opens it with another model or
another prompt version (`prompt_version`, a fingerprint of `agents.prompts`) is refused
with the reason, before anything is generated or written, so completions of two setups
never mix in one file. No message ever advises deleting a cache.

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
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CacheMismatchError",
    "ReadOnlyCacheWarning",
    "ResponseCache",
    "cached_batch",
    "cached_generate",
    "open_cache",
    "prompt_version",
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


class CacheMismatchError(ValueError):
    """A cache recorded with another model or another prompt version than the one opening
    it (the message says which, and both values)."""


class ReadOnlyCacheWarning(UserWarning):
    """A cache opened read-only: it replays, and records nothing new."""


_PROMPT_VERSION: str | None = None


def prompt_version() -> str:
    """A fingerprint of the prompt templates (`agents.prompts`): a hash of the solve,
    refine and judge messages they render for fixed example inputs, so any change to what
    a model is shown gives a new version, and an edit that changes no prompt does not."""
    global _PROMPT_VERSION
    if _PROMPT_VERSION is None:
        _PROMPT_VERSION = _fingerprint()
    return _PROMPT_VERSION


def _fingerprint() -> str:
    import inspect

    from agents import prompts

    try:
        from deliberation_env.protocol import Solution
        from deliberation_env.tasks.task import Task

        def solution(answer: str, text: str) -> Solution:
            return Solution(text, answer, 0.7, 0.6, None, 2, 1, 10, 20)

        own, peers = solution("4", "2 + 2 = 4"), [solution("5", "</solution> 5"), solution("4", "")]
        tasks = [
            Task("v/1", "What is 2 + 2?", "4", "numeric"),
            Task("v/2", "Which is even?", "1", "choice", ("3", "4")),
            Task("v/3", "Simplify x + x.", "2x", "math"),
        ]
        rendered = [
            [prompts.solve_messages(t), prompts.refine_messages(t, 0, own, peers),
             prompts.judge_messages(t, own)]
            for t in tasks
        ]  # fmt: skip
        blob = _dumps(rendered)
    except Exception:  # templates whose signatures changed: fall back to their source
        blob = inspect.getsource(prompts)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
        read_only: True opens the file read-only (SQLite ``mode=ro``): lookups hit, every
            ``put`` records nothing. None (default): read-only when the file or its folder
            is not writable (a read-only mount, a shared dataset), with one
            `ReadOnlyCacheWarning`; else read-write. False: refuse a file that cannot be
            written.
        model: the model whose completions this cache holds; None: the first one recorded.
        prompts: the prompt version (`prompt_version()`) the completions answer; None:
            the version of the first one recorded.

    A file recorded with another `model` or `prompts` is refused (`CacheMismatchError`,
    naming both), at open time when they are given, else before the first completion of
    another model is generated or stored; a cache is never mixed.

    Picklable (only the path and the settings travel; connections are opened lazily per
    thread and per process). `hits`, `misses` and `writes` count this instance's lookups
    and stores; `unrecorded` the stores a read-only cache skipped.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        read_only: bool | None = None,
        model: str | None = None,
        prompts: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.unrecorded = 0
        self.read_only = bool(read_only) or (read_only is None and not self._writable())
        if read_only is False and not self._writable():
            raise PermissionError(
                f"response cache {str(self.path)!r} is not writable (the file or its folder "
                "is read-only); pass read_only=True to replay it without recording, or a "
                "writable path to record"
            )
        self._meta: dict[str, str] = {}
        self._init_local()
        self._conn()  # a bad path or an incompatible file fails here, not mid-run
        self.check(model=model, prompts=prompts)
        if self.read_only and read_only is None:
            warnings.warn(
                f"response cache {str(self.path)!r} is read-only: it is replayed as it is, "
                "and completions it lacks are generated but not recorded",
                ReadOnlyCacheWarning,
                stacklevel=2,
            )

    def _writable(self) -> bool:
        """Whether this process can write the file (and, for SQLite's WAL and journal
        files, its folder); ``os.access`` sees read-only mounts even for root."""
        if self.path.exists():
            return os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        folder = next((p for p in self.path.parents if p.exists()), Path("."))
        return os.access(folder, os.W_OK)

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
        if self.read_only and not self.path.exists():
            raise FileNotFoundError(
                f"response cache {str(self.path)!r} does not exist, so there is nothing to "
                "replay read-only; pass the path of a recorded cache, or a writable path to "
                "record one"
            )
        try:
            conn = self._open_read_only() if self.read_only else self._open_read_write()
            version = self._read_meta(conn)
        except sqlite3.DatabaseError as err:
            raise ValueError(
                f"response cache {str(self.path)!r} cannot be opened as SQLite ({err}); it "
                "is left as it is: pass the path of a response cache, or a new path to "
                "record one"
            ) from None
        if version != str(SCHEMA_VERSION):
            conn.close()
            raise ValueError(
                f"response cache {str(self.path)!r} has schema {version}, this version reads "
                f"{SCHEMA_VERSION}; record into a new cache file (the old one stays as it is)"
            )
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._lock:
            self._all.append(conn)
        return conn

    def _open_read_write(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:  # someone else's database: never touch it
            conn.close()
            raise ValueError(
                f"response cache {str(self.path)!r} is an SQLite database of something else "
                f"(tables {', '.join(sorted(tables)[:5])}); it is left as it is: pass the path "
                "of a response cache, or a new path to record one"
            )
        conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a committed entry survives a killed process (not a power cut).
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_SCHEMA)
        conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', ?)",
            (str(SCHEMA_VERSION),),
        )
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri()
        try:
            conn = sqlite3.connect(
                f"{uri}?mode=ro", uri=True, timeout=self.timeout, check_same_thread=False
            )
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            # A WAL file in a folder SQLite cannot write (no -shm to create): immutable, as
            # nobody can write there either.
            conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = 1")
        return conn

    def _read_meta(self, conn: sqlite3.Connection) -> str:
        """The schema version, and the stored model and prompt version into `_meta`."""
        rows = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        with self._lock:
            self._meta = {k: v for k, v in rows.items() if k in ("model", "prompts")}
            if "model" not in self._meta:
                # Files from before the model was stored: the model of their completions.
                models = conn.execute("SELECT DISTINCT model FROM responses LIMIT 2").fetchall()
                if len(models) == 1 and models[0][0] is not None:
                    self._meta["model"] = str(models[0][0])
                    if not self.read_only:  # stored, so later opens need no scan
                        conn.execute(
                            "INSERT OR IGNORE INTO meta (name, value) VALUES ('model', ?)",
                            (self._meta["model"],),
                        )
        return str(rows.get("schema"))

    # ------------------------------------------------------------------ what it holds
    def check(self, model: str | None = None, prompts: str | None = None) -> None:
        """Refuse (`CacheMismatchError`) a `model` or prompt version (`prompts`) other than
        the ones this cache was recorded with; a writable cache without them stores them.
        Backends call it when they open the cache (``model=...``, ``prompts=
        prompt_version()``) and `cached_batch` before generating a miss."""
        claims = {k: v for k, v in (("model", model), ("prompts", prompts)) if v is not None}
        for name, value in claims.items():
            held = self._meta.get(name)
            if held is not None and held != str(value):
                what = (
                    f"holds completions of model {held!r}, not {str(value)!r}"
                    if name == "model"
                    else f"was recorded with prompt version {held}, and the prompts are now "
                    f"version {value} (agents.prompts changed)"
                )
                raise CacheMismatchError(
                    f"response cache {str(self.path)!r} {what}: its completions answer other "
                    "requests, so it is left as it is; pass a cache file of its own for this "
                    "setup (a new path records one)"
                )
        new = {k: str(v) for k, v in claims.items() if k not in self._meta}
        if new and not self.read_only:
            conn = self._conn()
            for name, value in new.items():
                conn.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)", (name, value)
                )
            self._read_meta(conn)  # a concurrent writer may have claimed it first
            self.check(model, prompts)

    @property
    def model(self) -> str | None:
        """The model whose completions this cache holds (None: none recorded yet)."""
        return self._meta.get("model")

    @property
    def prompts(self) -> str | None:
        """The prompt version its completions answer (None: not recorded)."""
        return self._meta.get("prompts")

    def _check_request(self, request: Mapping[str, Any]) -> None:
        model = request.get("model")
        self.check(model=None if model is None else str(model), prompts=prompt_version())

    def _skip(self) -> bool:
        """True (and counted) when a store must record nothing: the cache is read-only."""
        if not self.read_only:
            return False
        with self._lock:
            self.unrecorded += 1
        return True

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
        extra = ", read_only=True" if self.read_only else ""
        return f"ResponseCache({str(self.path)!r}{extra})"

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
        """Store one completion in its own transaction (replacing an entry with that key);
        a read-only cache records nothing. A request for another model than the cache's,
        or made with other prompts, is refused (`check`)."""
        if self._skip():
            return
        self._check_request(request)
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

        A replayed solution rewrites the same record, so records are never duplicated; a
        read-only cache records nothing.
        """
        if self._skip():
            return
        self._conn().execute(
            "INSERT OR REPLACE INTO records (key, record, created) VALUES (?, ?, ?)",
            (key, _dumps(dict(record), True), time.time()),
        )

    def put_records(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Store many ``(key, record)`` pairs in one transaction (one backend call's worth)."""
        now = time.time()
        rows = [(key, _dumps(dict(record), True), now) for key, record in items]
        if not rows or self._skip():
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
            "read_only": self.read_only,
            "unrecorded": self.unrecorded,
            "model": self.model,
            "prompts": self.prompts,
        }

    def reset_stats(self) -> None:
        with self._lock:
            self.hits = self.misses = self.writes = self.unrecorded = 0


def open_cache(
    cache: ResponseCache | str | os.PathLike[str] | None,
    *,
    model: str | None = None,
    prompts: str | None = None,
) -> ResponseCache | None:
    """A backend's ``cache=`` argument as a `ResponseCache` (a path opens one; None: no
    cache), checked against the backend's `model` and prompt version (`prompts`, e.g.
    `prompt_version()`): a cache recorded with others is refused (`CacheMismatchError`)."""
    if cache is None:
        return None
    if isinstance(cache, ResponseCache):
        cache.check(model=model, prompts=prompts)
        return cache
    if isinstance(cache, (str, os.PathLike)):
        return ResponseCache(cache, model=model, prompts=prompts)
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
    if not cache.read_only:
        cache._check_request(key_fields)  # refused before the model is called
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
        if not cache.read_only:
            for i in missing:  # refused before the model is called
                cache._check_request(key_fields[i])
        for i, response in zip(missing, _checked(generate(missing), len(missing))):
            responses[keys[i]] = _round_trip(response)
            cache.put(keys[i], key_fields[i], responses[keys[i]])
    return [responses[key] for key in keys]


def _checked(out: Sequence[Mapping[str, Any]], n: int) -> Sequence[Mapping[str, Any]]:
    if len(out) != n:
        raise RuntimeError(f"generate returned {len(out)} responses for {n} requests")
    return out
