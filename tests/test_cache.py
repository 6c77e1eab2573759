"""The SQLite response cache: keys, replay, stats, records, concurrent writers, a run
killed with SIGKILL midway (the file stays whole and a re-run resumes), and a cache never
put at risk: replayed read-only from a read-only mount (bwrap, so the test fails even as
root), refused when recorded with another model or prompt version, and no message that
advises deleting one."""

from __future__ import annotations

import ast
import json
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agents.cache import (
    CacheMismatchError,
    ReadOnlyCacheWarning,
    ResponseCache,
    cached_batch,
    cached_generate,
    open_cache,
    prompt_version,
    request_key,
)

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
    with pytest.raises(ValueError, match="notes.txt.*cannot be opened as SQLite.*left as it is"):
        ResponseCache(bad)
    with pytest.raises(ValueError, match="notes.txt.*cannot be opened as SQLite"):
        ResponseCache(bad, read_only=True)
    assert bad.read_text() == "not a database, just text " * 100


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


# ---------------------------------------------------------------- never put at risk
class Model:
    """A stand-in model that answers "x" and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def batch(self, indices: list[int]) -> list[dict]:
        self.calls.append(list(indices))
        return [{"text": "x"} for _ in indices]

    def one(self) -> dict:
        return self.batch([0])[0]


def record(path: Path, n: int = 3) -> bytes:
    """A closed cache at `path` with `n` completions of model "m" and one record; its bytes."""
    cache = ResponseCache(path)
    cached_batch(cache, [fields(i) for i in range(n)], lambda idx: [{"text": f"a{i}"} for i in idx])
    cache.put_record("r0", {"task_id": "t/0"})
    cache.close()
    assert not Path(f"{path}-wal").exists()  # the last close folds the WAL into the file
    return path.read_bytes()


_READ_ONLY_REPLAY = """
import json, sys, warnings
from agents.cache import ResponseCache, ReadOnlyCacheWarning, cached_batch
path = sys.argv[1]
fields = lambda i: {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "seed": i}
calls = []
def generate(idx):
    calls.append(list(idx))
    return [{"text": "new"} for _ in idx]
out = {}
try:
    ResponseCache(path, read_only=False)
except PermissionError as err:
    out["read_write"] = str(err)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cache = ResponseCache(path)
    texts = [r["text"] for r in cached_batch(cache, [fields(0), fields(1), fields(9)], generate)]
    texts += [r["text"] for r in cached_batch(cache, [fields(9)], generate)]
    cache.put_record("r1", {"task_id": "t/1"})
    out["records"] = len(list(cache.records()))
out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, ReadOnlyCacheWarning)]
out.update(texts=texts, calls=calls, stats=cache.stats())
print(json.dumps(out))
"""


def test_a_cache_on_a_read_only_mount_replays_and_records_nothing(tmp_path: Path) -> None:
    """A read-only bind mount (bwrap): root cannot write there either, so a cache that
    tried to would fail this test."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bwrap is not installed")
    shared = tmp_path / "shared"
    shared.mkdir()
    path = shared / "c.sqlite"
    before = record(path)
    listing = sorted(os.listdir(shared))
    cmd = [bwrap, "--dev-bind", "/", "/", "--ro-bind", str(shared), str(shared)]
    probe = subprocess.run([*cmd, "touch", str(shared / "probe")], capture_output=True)
    if probe.returncode == 0 or b"Read-only" not in probe.stderr:
        pytest.skip(f"bwrap cannot make a read-only mount here: {probe.stderr!r}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [*cmd, sys.executable, "-c", _READ_ONLY_REPLAY, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "is not writable" in out["read_write"] and "read_only=True" in out["read_write"]
    assert len(out["warnings"]) == 1  # said once
    assert str(path) in out["warnings"][0] and "read-only" in out["warnings"][0]
    assert "not recorded" in out["warnings"][0]
    assert out["texts"] == ["a0", "a1", "new", "new"]  # replayed; the miss generated twice
    assert out["calls"] == [[2], [0]]
    stats = out["stats"]
    assert stats["read_only"] and (stats["hits"], stats["misses"]) == (2, 2)
    assert (stats["writes"], stats["unrecorded"], stats["entries"]) == (0, 3, 3)
    assert out["records"] == 1
    assert path.read_bytes() == before and sorted(os.listdir(shared)) == listing


def test_read_only_true_replays_anywhere_and_writes_nothing(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    path = tmp_path / "c.sqlite"
    before = record(path)
    cache = ResponseCache(path, read_only=True)
    assert repr(cache).endswith("read_only=True)")
    model = Model()
    out = cached_batch(cache, [fields(0), fields(7)], model.batch)
    assert [o["text"] for o in out] == ["a0", "x"] and model.calls == [[1]]
    cache.put("k", fields(8), {"text": "y"})
    cache.put_records([("r9", {"task_id": "t/9"})])
    assert cache.stats()["unrecorded"] == 3 and len(cache) == 3
    assert [r["task_id"] for r in cache.records()] == ["t/0"]
    cache.close()
    assert path.read_bytes() == before
    assert not [w for w in recwarn if issubclass(w.category, ReadOnlyCacheWarning)]  # asked for
    with pytest.raises(FileNotFoundError, match="nothing to replay"):
        ResponseCache(tmp_path / "missing.sqlite", read_only=True)


def test_a_cache_that_cannot_be_written_is_opened_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.sqlite"
    before = record(path)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real(p, mode))
    with pytest.warns(ReadOnlyCacheWarning, match="read-only"):
        cache = ResponseCache(path)
    assert cache.read_only and cache.get(request_key(fields(1))) == {"text": "a1"}
    cache.close()
    with pytest.raises(PermissionError, match="c.sqlite.*not writable.*read_only=True"):
        ResponseCache(path, read_only=False)
    assert path.read_bytes() == before


def test_a_cache_of_another_model_is_refused_before_generating(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    record(path)
    with pytest.raises(CacheMismatchError, match="holds completions of model 'm', not 'other'"):
        ResponseCache(path, model="other")
    with pytest.raises(CacheMismatchError, match="c.sqlite"):
        open_cache(str(path), model="other")
    assert ResponseCache(path, model="m").model == "m"
    cache = ResponseCache(path)  # a backend that does not say its model: caught at a miss
    model = Model()
    with pytest.raises(CacheMismatchError, match="not 'other'"):
        cached_batch(cache, [fields(0, model="other")], model.batch)
    with pytest.raises(CacheMismatchError):
        cached_generate(cache, fields(5, model="other"), model.one)
    with pytest.raises(CacheMismatchError):
        cache.put("k", fields(5, model="other"), {"text": "t"})
    assert model.calls == [] and len(cache) == 3
    with pytest.raises(CacheMismatchError):
        open_cache(cache, model="other")


def test_a_cache_of_other_prompts_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    record(path)
    assert ResponseCache(path).prompts == prompt_version()  # stored at the first completion
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 'v-old' WHERE name = 'prompts'")
    with pytest.raises(CacheMismatchError, match=r"prompt version v-old.*agents.prompts changed"):
        ResponseCache(path, model="m", prompts=prompt_version())
    cache = ResponseCache(path)
    model = Model()
    with pytest.raises(CacheMismatchError, match="v-old"):
        cached_generate(cache, fields(7), model.one)
    assert model.calls == [] and len(cache) == 3
    assert cache.get(request_key(fields(0))) == {"text": "a0"}  # reading stays possible
    assert [r["task_id"] for r in ResponseCache(path, read_only=True).records()] == ["t/0"]


def test_an_older_cache_without_metadata_gets_its_model_from_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    record(path)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM meta WHERE name != 'schema'")
    assert ResponseCache(path, read_only=True).model == "m"
    with pytest.raises(CacheMismatchError, match="model 'm'"):
        ResponseCache(path, model="other")


def test_prompt_version_follows_the_rendered_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import cache as cache_module
    from agents import prompts

    version = prompt_version()
    assert isinstance(version, str) and len(version) == 16
    assert cache_module._fingerprint() == version  # deterministic
    real = prompts.solve_messages
    monkeypatch.setattr(
        prompts, "solve_messages", lambda t: [*real(t), {"role": "user", "content": "!"}]
    )
    assert cache_module._fingerprint() != version


def test_someone_elses_sqlite_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="app.db.*SQLite database of something else.*users"):
        ResponseCache(path)
    assert path.read_bytes() == before


def test_reading_records_for_transcripts_never_writes(tmp_path: Path) -> None:
    from agents.transcript_cache import _read

    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    rec = {"task_id": "t/0", "action": "solve", "answer": "4", "correct": True, "agent": 0}
    cache.put_records([("r0", rec)])
    cache.close()
    before = path.read_bytes()
    assert [r["task_id"] for r in _read(path)] == ["t/0"]
    assert path.read_bytes() == before  # (SQLite's readers may leave an empty -wal beside it)


_ADVICE = re.compile(r"\b(delet\w*|remov\w*|rm -\w*|unlink\w*|wipe\w*|erase\w*)\b", re.IGNORECASE)


def _messages(tree: ast.AST) -> list[tuple[int, str]]:
    """The literal text of every raise, warning, print and log call in a module."""
    out = []
    for node in ast.walk(tree):
        target: ast.AST | None = None
        if isinstance(node, ast.Raise):
            target = node.exc
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in {"warn", "print", "echo", "info", "warning", "error", "exit", "SystemExit"}:
                target = node
        if target is None:
            continue
        text = " ".join(
            n.value
            for n in ast.walk(target)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        )
        out.append((getattr(node, "lineno", 0), text))
    return out


def test_no_message_advises_deleting_a_cache() -> None:
    offenders = []
    for package in ("agents", "deliberation_env", "algorithms", "experiments", "benchmarks"):
        for file in sorted((REPO / package).rglob("*.py")):
            for line, text in _messages(ast.parse(file.read_text(), str(file))):
                if _ADVICE.search(text) and re.search(r"cache|sqlite|file", text, re.I):
                    offenders.append(f"{file.relative_to(REPO)}:{line}: {text[:100]}")
    assert offenders == []
