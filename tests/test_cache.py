"""The SQLite response cache: keys, replay, stats, records, concurrent writers, and a run
killed with SIGKILL midway (the file stays whole and a re-run resumes)."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agents.cache import ResponseCache, cached_batch, cached_generate, open_cache, request_key

REPO = Path(__file__).resolve().parents[1]


def fields(i: int, **extra: object) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "seed": i, **extra}


def test_key_is_canonical_and_covers_every_field() -> None:
    a = {"model": "m", "seed": 1, "temperature": 0.7}
    assert request_key(a) == request_key(dict(reversed(list(a.items()))))
    assert request_key(a) != request_key({**a, "seed": 2})
    assert request_key(a) != request_key({**a, "temperature": 0.70001})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        request_key({"x": float("nan")})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        request_key({"x": object()})


def test_put_get_stats_and_len(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "sub" / "c.sqlite")  # the folder is created
    key = request_key(fields(0))
    assert cache.get(key) is None
    cache.put(key, fields(0), {"text": "hi", "logprobs": [-0.1, -2.5e-9]})
    assert cache.get(key) == {"text": "hi", "logprobs": [-0.1, -2.5e-9]}
    assert key in cache and len(cache) == 1
    s = cache.stats()
    assert (s["hits"], s["misses"], s["writes"], s["entries"]) == (1, 1, 1, 1)
    assert s["hit_rate"] == 0.5
    assert list(cache.entries()) == [(fields(0), {"text": "hi", "logprobs": [-0.1, -2.5e-9]})]
    # Stored values keep non-finite floats (servers send -Infinity log-probs); keys do not.
    cache.put("inf", fields(1), {"logprobs": [float("-inf")]})
    assert cache.get("inf") == {"logprobs": [float("-inf")]}


def test_cached_generate_calls_the_model_once(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    calls = []

    def fn() -> dict:
        calls.append(1)
        return {"text": "x", "tokens": ("a", "b"), "lp": 0.1 + 0.2}

    first = cached_generate(cache, fields(1), fn)
    second = cached_generate(cache, fields(1), fn)
    assert len(calls) == 1
    # A fresh response takes the replay's JSON path: tuples come back as lists both times.
    assert first == second == {"text": "x", "tokens": ["a", "b"], "lp": 0.1 + 0.2}
    assert cached_generate(None, fields(1), fn) == first and len(calls) == 2


def test_cached_batch_generates_only_the_misses(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    asked: list[list[int]] = []

    def generate(indices: list[int]) -> list[dict]:
        asked.append(indices)
        return [{"text": f"a{batch[i]['seed']}"} for i in indices]

    batch = [fields(0), fields(1), fields(0), fields(2)]  # a duplicate within the batch
    out = cached_batch(cache, batch, generate)
    assert asked == [[0, 1, 3]]
    assert [o["text"] for o in out] == ["a0", "a1", "a0", "a2"]
    batch = [fields(2), fields(3), fields(1)]
    assert [o["text"] for o in cached_batch(cache, batch, generate)] == ["a2", "a3", "a1"]
    assert asked[-1] == [1]
    asked.clear()
    cached_batch(cache, batch, generate)
    assert asked == []  # every request hit: the model is not called at all
    with pytest.raises(RuntimeError, match="1 responses for 2 requests"):
        cached_batch(cache, [fields(8), fields(9)], lambda idx: [{"text": "only one"}])


def test_records_are_replaced_not_duplicated(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put_record("k1", {"task_id": "t/1", "correct": True})
    cache.put_record("k2", {"task_id": "t/2", "correct": False})
    cache.put_record("k1", {"task_id": "t/1", "correct": True})  # a replayed solution
    assert sorted(r["task_id"] for r in cache.records()) == ["t/1", "t/2"]
    assert cache.stats()["records"] == 2
    assert cache.has_records(["k1", "k3", "k2"]) == {"k1", "k2"}
    cache.put_records([("k3", {"task_id": "t/3"}), ("k1", {"task_id": "t/1"})])
    assert cache.has_records([f"k{i}" for i in range(1000)]) == {"k1", "k2", "k3"}


def test_pickle_and_reopen(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.put("k", {"model": "m"}, {"text": "t"})
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.get("k") == {"text": "t"} and repr(copy) == repr(cache)
    cache.close()
    assert cache.get("k") == {"text": "t"}  # reopens lazily
    assert open_cache(str(tmp_path / "c.sqlite")).get("k") == {"text": "t"}
    assert open_cache(cache) is cache and open_cache(None) is None
    with pytest.raises(TypeError, match="path or an agents.cache.ResponseCache"):
        open_cache(3)


def test_a_file_that_is_not_a_cache_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database, just text " * 100)
    with pytest.raises(ValueError, match="notes.txt.*cannot be opened as SQLite"):
        ResponseCache(bad)


def test_threads_write_concurrently(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")

    def writer(t: int) -> None:
        for i in range(40):
            cached_generate(cache, fields(i, thread=t), lambda i=i: {"text": f"{t}-{i}"})

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(cache) == 240 and cache.stats()["writes"] == 240


def _process_writer(path: str, worker: int) -> None:
    cache = ResponseCache(path, timeout=20)
    for i in range(40):
        cache.put(request_key(fields(i, worker=worker)), fields(i), {"text": f"{worker}-{i}"})


def test_processes_write_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "c.sqlite")
    ResponseCache(path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_writer, args=(path, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(ResponseCache(path)) == 120


_KILLED_WRITER = """
import sys, time
from agents.cache import ResponseCache, cached_generate
cache = ResponseCache(sys.argv[1])
for i in range(100_000):
    fields = {"model": "m", "seed": i}
    # A response big enough that a kill can land in the middle of writing one.
    cached_generate(cache, fields, lambda: {"text": "x" * 20_000 + str(i), "i": i})
"""


def test_sigkill_midway_leaves_whole_entries_and_a_rerun_resumes(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)], env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if path.exists():
                try:
                    with sqlite3.connect(path, timeout=5) as db:
                        if db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] >= 50:
                            break
                except sqlite3.OperationalError:
                    pass  # the writer is still creating the schema
        assert proc.poll() is None, "the writer ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cache = ResponseCache(path)
    n = len(cache)
    assert n >= 50
    seen = set()
    for request, response in cache.entries():  # every entry whole and matching its request
        i = request["seed"]
        assert response == {"text": "x" * 20_000 + str(i), "i": i}
        seen.add(i)
    assert seen == set(range(n))  # committed in order, none lost, none half-written
    # The re-run replays what was committed and generates only the rest.
    calls = []
    for i in range(n + 5):
        cached_generate(cache, {"model": "m", "seed": i}, lambda: calls.append(1) or {"i": -1})
    assert len(calls) == 5 and cache.stats()["hits"] == n


def test_records_survive_json_round_trip(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    record = {"task_id": "t", "peers_correct": [True, False], "logprob_confidence": None}
    cache.put_record("k", record)
    assert next(cache.records()) == json.loads(json.dumps(record))
