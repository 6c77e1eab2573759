"""`OpenAIBackend` against a real local OpenAI-compatible HTTP server (tests/openai_server.py):
env episodes, retries on transient faults, clear errors, concurrency, load balancing,
cache replay, a run killed midway, and (when the tiny model fixture exists) real generation.

Everything runs on 127.0.0.1 with short timeouts; no test reaches the network.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("httpx")

from openai_server import OpenAIServer, ScriptedResponder  # noqa: E402
from tiny_model import tiny_model_dir  # noqa: E402, F401  (the session fixture)

import deliberation_env  # noqa: E402
from agents.cache import ResponseCache
from agents.fit import RECORD_KEYS  # noqa: E402
from agents.openai_compat import (  # noqa: E402
    OpenAIBackend,
    OpenAIBackendError,
    answer_logprob_confidence,
)
from agents.simulated import SimulatedBackend
from deliberation_env import Action, RefineRequest, SolveRequest  # noqa: E402
from deliberation_env.tasks import generate_arithmetic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASKS = generate_arithmetic(6, seed=0)
ANSWERS = {t.question: t.answer for t in TASKS}
FAKE_KEY = "sk-test-DO-NOT-LEAK-8f3a1c"
FAST = {"timeout": 0.2, "connect_timeout": 0.2, "backoff": 0.001, "max_backoff": 0.01}
"""Short timeouts and back-off so the fault tests take milliseconds."""


@pytest.fixture
def server():
    with OpenAIServer(ScriptedResponder(ANSWERS), hang_s=1.0) as srv:
        yield srv


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DELIB_TEST_KEY", FAKE_KEY)
    return "DELIB_TEST_KEY"


def backend(url: str | list[str], **kw) -> OpenAIBackend:
    return OpenAIBackend(**{"model": "tiny", "base_url": url, "max_retries": 3, **FAST, **kw})


def solve_requests(n: int, task: int = 0) -> list[SolveRequest]:
    return [SolveRequest(TASKS[task], agent=i % 3, seed=1000 + i) for i in range(n)]


def dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def play(env, seed: int, actions=(Action.REFINE, Action.CONCEDE, Action.REFINE)) -> list:
    """One episode; everything observable, for exact comparison."""
    obs, infos = env.reset(seed=seed)
    trace = [(obs, infos)]
    k = 0
    while env.agents:
        act = {a: int(actions[(k + i) % len(actions)]) for i, a in enumerate(env.agents)}
        trace.append(env.step(act))
        k += 1
    return trace


def assert_same_trace(a: list, b: list) -> None:
    from gymnasium.utils.env_checker import data_equivalence

    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert data_equivalence(x, y, exact=True)


# ---------------------------------------------------------------------- env episodes
def test_env_episode_through_the_registry(server: OpenAIServer, tmp_path: Path) -> None:
    env = deliberation_env.parallel_env(
        backend="openai",
        base_url=server.url,
        model="tiny",
        tasks=TASKS,
        max_concurrency=8,
        cache=tmp_path / "cache.sqlite",
        render_mode="ansi",
    )
    obs, infos = env.reset(seed=3)
    assert server.hits == 3  # the initial solutions: one batched call, three requests
    assert all(isinstance(infos[a]["answer"], str) for a in env.agents)
    steps = 0
    while env.agents:
        obs, rewards, terms, truncs, infos = env.step({a: Action.REFINE for a in env.agents})
        steps += 1
        assert all(math.isfinite(r) for r in rewards.values())
        assert all(infos[a]["tokens"] > 0 for a in infos)
    assert steps == 3 and server.hits == 3 + 9
    final = infos["agent_0"]
    assert final["total_tokens"] > 0 and final["actions"]["refine"] == 9
    assert "Team answer" in env.render()
    # Seeds reach the server per request; every body asks for log-probs.
    assert len({b["seed"] for b in server.bodies}) == 12
    assert all(b["logprobs"] is True and b["model"] == "tiny" for b in server.bodies)
    cache = env.backend.cache
    records = list(cache.records())
    assert len(records) == 12
    assert {r["action"] for r in records} == {"solve", "refine"}
    assert all(len(r["peers_correct"]) == 2 for r in records if r["action"] == "refine")
    assert set(RECORD_KEYS) <= set(records[0])
    # Record on a server once, then calibrate the simulator from the cache.
    sim = SimulatedBackend.fit(cache, tasks=TASKS)
    assert "fit:" in sim.profile.sources["accuracy"]


def test_cache_replays_an_episode_bit_identically_without_the_server(
    server: OpenAIServer, tmp_path: Path
) -> None:
    kw = {"backend": "openai", "model": "tiny", "tasks": TASKS, "cache": tmp_path / "c.sqlite"}
    first = deliberation_env.parallel_env(base_url=server.url, max_concurrency=8, judge=True, **kw)
    recorded = [play(first, seed) for seed in (0, 1)]
    hits = server.hits
    assert hits > 0
    # Replay against a dead endpoint: any model call would fail.
    replay = deliberation_env.parallel_env(base_url=dead_url(), max_retries=0, judge=True, **kw)
    replayed = [play(replay, seed) for seed in (0, 1)]
    for a, b in zip(recorded, replayed):
        assert_same_trace(a, b)
    backend_ = replay.backend
    assert server.hits == hits and backend_.http_requests == 0
    stats = backend_.cache.stats()
    assert stats["misses"] == 0 and stats["hits"] == hits
    assert [r.text for r in replay.solutions().values()] == [
        r.text for r in first.solutions().values()
    ]


def test_a_run_killed_midway_resumes_from_the_cache(tmp_path: Path) -> None:
    """SIGKILL a process mid-episode; the re-run replays what was committed and asks the
    server only for the rest, and ends exactly as an uninterrupted run."""
    cache = tmp_path / "c.sqlite"
    script = f"""
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
import deliberation_env
from test_openai_backend import TASKS, play
env = deliberation_env.parallel_env(backend="openai", model="tiny", tasks=TASKS,
    base_url=sys.argv[1], cache=sys.argv[2], max_concurrency=1)
for seed in range(3):
    play(env, seed)
"""
    with OpenAIServer(ScriptedResponder(ANSWERS), latency=0.03) as srv:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", script, srv.url, str(cache)], env=env)
        try:
            deadline = time.monotonic() + 30
            while srv.hits < 8 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
            assert proc.poll() is None, "the run ended before it could be killed"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        committed = len(ResponseCache(cache))
        assert 6 <= committed <= srv.hits

        srv.reset_counts()
        kw = {"backend": "openai", "model": "tiny", "tasks": TASKS, "base_url": srv.url}
        resumed = deliberation_env.parallel_env(cache=cache, max_concurrency=1, **kw)
        traces = [play(resumed, seed) for seed in range(3)]
        total = committed + srv.hits
        assert resumed.backend.cache.stats()["hits"] == committed
    with OpenAIServer(ScriptedResponder(ANSWERS)) as fresh:
        kw["base_url"] = fresh.url
        clean = deliberation_env.parallel_env(**kw)
        for seed, trace in enumerate(traces):
            assert_same_trace(play(clean, seed), trace)
        assert fresh.hits == total


# ---------------------------------------------------------------------- faults and retries
@pytest.mark.parametrize("fault", ["429", "500", "503", "hang", "drop", "garbage"])
def test_transient_faults_are_retried(server: OpenAIServer, fault: str) -> None:
    expected = backend(server.url).solve(solve_requests(1))
    server.reset_counts()
    server.faults.extend([fault, fault])
    b = backend(server.url)
    assert b.solve(solve_requests(1)) == expected
    assert server.hits == 3 and b.retries == 2


def test_retry_after_is_honoured(server: OpenAIServer) -> None:
    server.retry_after = "0.3"
    server.faults.append("429")
    b = backend(server.url, backoff=0.0, max_backoff=1.0)  # Retry-After is capped by it
    start = time.monotonic()
    b.solve(solve_requests(1))
    assert 0.3 <= time.monotonic() - start < 2.0
    assert server.hits == 2


def test_missing_usage_is_estimated(server: OpenAIServer) -> None:
    b = backend(server.url)
    with_usage = b.solve(solve_requests(1))[0]
    server.faults.append("no_usage")
    without = backend(server.url).solve(solve_requests(1))[0]
    assert without.answer == with_usage.answer
    # Completion tokens fall back on the log-prob token count, the prompt on ~4 chars/token.
    assert without.completion_tokens == with_usage.completion_tokens
    assert without.prompt_tokens > 0


def test_exhausted_retries_raise_a_clear_error_without_the_key(
    server: OpenAIServer, api_key: str
) -> None:
    server.faults.extend(["500"] * 10)
    b = backend(server.url, max_retries=2, api_key_env=api_key)
    with pytest.raises(OpenAIBackendError) as info:
        b.solve(solve_requests(1))
    msg = str(info.value)
    assert server.url in msg and "HTTP 500" in msg and "after 3 attempts" in msg
    assert "max_retries" in msg and "pass cache=PATH" in msg
    assert server.hits == 3
    # The key was sent, and appears nowhere else.
    assert server.headers[0]["Authorization"] == f"Bearer {FAKE_KEY}"
    for text in (msg, repr(info.value.__cause__), repr(b), str(b.stats())):
        assert FAKE_KEY not in text
    assert FAKE_KEY.encode() not in pickle.dumps(b)


def test_a_dead_endpoint_is_named(api_key: str) -> None:
    url = dead_url()
    with pytest.raises(OpenAIBackendError, match=f"{url}: connection error.*curl {url}/models"):
        backend(url, max_retries=1, api_key_env=api_key).solve(solve_requests(1))


@pytest.mark.parametrize(("status", "hint"), [("401", "DELIB_TEST_KEY"), ("404", "ends in /v1")])
def test_client_errors_fail_at_once_with_the_fix(
    server: OpenAIServer, api_key: str, status: str, hint: str
) -> None:
    server.faults.append(status)
    with pytest.raises(OpenAIBackendError, match=f"HTTP {status}") as info:
        backend(server.url, api_key_env=api_key).solve(solve_requests(1))
    assert hint in str(info.value) and FAKE_KEY not in str(info.value)
    assert server.hits == 1  # not retried


def test_a_failed_call_keeps_what_succeeded_in_the_cache(
    server: OpenAIServer, tmp_path: Path
) -> None:
    server.faults.extend(["ok", "ok", "500", "500", "500"])
    b = backend(server.url, max_retries=2, max_concurrency=1, cache=tmp_path / "c.sqlite")
    requests = solve_requests(5)
    with pytest.raises(OpenAIBackendError, match="2 of 5 requests of this call succeeded") as e:
        b.solve(requests)
    assert str(tmp_path / "c.sqlite") in str(e.value) and "re-run to resume" in str(e.value)
    assert server.hits == 5  # fail fast: requests 4 and 5 were never sent
    server.reset_counts()
    b.solve(requests)
    assert server.hits == 3 and b.cache.stats()["hits"] == 2


# ---------------------------------------------------------------------- concurrency
def test_concurrency_overlaps_and_is_bounded(server: OpenAIServer) -> None:
    server.latency = 0.1
    start = time.monotonic()
    concurrent = backend(server.url, max_concurrency=4, timeout=2.0).solve(solve_requests(16))
    fast = time.monotonic() - start
    assert server.max_in_flight == 4
    server.reset_counts()
    start = time.monotonic()
    sequential = backend(server.url, max_concurrency=1, timeout=2.0).solve(solve_requests(16))
    slow = time.monotonic() - start
    assert server.max_in_flight == 1
    assert concurrent == sequential  # same requests, same seeds: same answers, in order
    assert slow > 2 * fast


def test_two_endpoints_share_the_load(tmp_path: Path) -> None:
    with (
        OpenAIServer(ScriptedResponder(ANSWERS), latency=0.02) as a,
        OpenAIServer(ScriptedResponder(ANSWERS), latency=0.02) as b,
    ):
        for policy in ("least_outstanding", "round_robin"):
            a.reset_counts()
            b.reset_counts()
            out = backend([a.url, b.url], max_concurrency=4, load_balance=policy, timeout=2.0)
            out.solve(solve_requests(20))
            assert a.hits + b.hits == 20 and min(a.hits, b.hits) >= 8, (policy, a.hits, b.hits)
        # One endpoint down: its requests fail over to the other.
        a.reset_counts()
        dead = dead_url()
        solutions = backend([dead, a.url], max_concurrency=4).solve(solve_requests(10))
        assert len(solutions) == 10 and a.hits == 10


def test_called_from_inside_a_running_event_loop(server: OpenAIServer) -> None:
    """As in a notebook: the caller's loop is running, the backend still works."""
    b = backend(server.url)
    expected = b.solve(solve_requests(3))

    async def notebook_cell():
        return b.solve(solve_requests(3))

    assert asyncio.run(notebook_cell()) == expected


def test_backend_is_picklable_before_and_after_use(server: OpenAIServer, tmp_path: Path) -> None:
    b = backend(server.url, cache=tmp_path / "c.sqlite")
    first = b.solve(solve_requests(2))
    copy = pickle.loads(pickle.dumps(b))
    assert copy._runner is None and copy.solve(solve_requests(2)) == first
    env = deliberation_env.parallel_env(backend=b, tasks=TASKS)
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    clone.reset(seed=0)
    b.close()
    assert b.solve(solve_requests(2)) == first  # reopens after close()


# ---------------------------------------------------------------------- solutions
def test_logprobs_used_where_present(tmp_path: Path) -> None:
    with OpenAIServer(ScriptedResponder(ANSWERS)) as srv:
        sol = backend(srv.url).solve(solve_requests(1))[0]
        assert sol.logprob_confidence is not None and 0.0 <= sol.logprob_confidence <= 1.0
        off = backend(srv.url, logprobs=False).solve(solve_requests(1))[0]
        assert "logprobs" not in srv.bodies[-1] and off.logprob_confidence is None
    with OpenAIServer(ScriptedResponder(ANSWERS, logprobs=False)) as srv:
        sol = backend(srv.url).solve(solve_requests(1))[0]
        assert sol.logprob_confidence is None and sol.answer is not None


def test_answer_logprob_confidence_by_hand() -> None:
    tokens = ["So", " \\boxed{", "4", "2", "}", "\nCONFIDENCE: 9"]
    text = "".join(tokens)
    lps = [-1.0, -0.5, -0.1, -0.2, -0.3, -2.0]
    # The answer "42" spans tokens "4" and "2": exp of their mean log-prob.
    conf = answer_logprob_confidence(text, "numeric", tokens, lps)
    assert conf == pytest.approx(math.exp(-0.15))
    # No answer: the mean over the whole completion.
    plain = ["no", " answer", " here"]
    assert answer_logprob_confidence("no answer here", "choice", plain, [-1.0, -2.0, -3.0]) == (
        pytest.approx(math.exp(-2.0))
    )
    assert answer_logprob_confidence(text, "numeric", tokens, None) is None
    assert answer_logprob_confidence(
        "Answer: (B)", "choice", ["Answer: (", "B", ")"], [-5.0, -0.25, -5.0]
    ) == (pytest.approx(math.exp(-0.25)))
    # A character split over two tokens (byte-level BPE): offsets are counted in bytes.
    euro = "\u20ac".encode()
    halves = [
        euro[:2].decode("utf-8", "surrogateescape"),
        euro[2:].decode("utf-8", "surrogateescape"),
    ]
    tokens = ["3 ", *halves, " so \\boxed{", "7", "}"]
    text = "3 \u20ac so \\boxed{7}"
    lps = [-1.0, -1.0, -1.0, -1.0, -0.125, -1.0]
    assert answer_logprob_confidence(text, "numeric", tokens, lps) == pytest.approx(
        math.exp(-0.125)
    )


def test_judge_pass_is_a_second_request(server: OpenAIServer) -> None:
    b = backend(server.url, judge=True)
    sols = b.solve(solve_requests(3))
    assert server.hits == 6
    graders = [body for body in server.bodies if "grader" in body["messages"][0]["content"]]
    assert len(graders) == 3 and all(g["max_tokens"] == b.judge_max_tokens for g in graders)
    plain = backend(server.url).solve(solve_requests(3))
    for s, p in zip(sols, plain):
        assert s.answer == p.answer and p.judge_confidence == p.self_confidence
        assert 0.3 <= s.judge_confidence <= 0.9  # the scripted grader says 30..90
        assert s.prompt_tokens > p.prompt_tokens  # the judge's tokens are counted
    assert any(s.judge_confidence != s.self_confidence for s in sols)


def test_refine_requests_quote_peers_and_put_the_agent_last(server: OpenAIServer) -> None:
    b = backend(server.url)
    own, *peers = b.solve(solve_requests(3))
    out = b.refine([RefineRequest(TASKS[0], 0, own, tuple(peers), seed=7)])
    assert len(out) == 1 and out[0].answer is not None
    user = server.bodies[-1]["messages"][-1]["content"]
    assert user.count("untrusted>") == 3 and user.rstrip().endswith("Give your updated solution.")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": ""}, "model must be"),
        ({"base_url": "localhost:8000"}, "base_url must be"),
        ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
        ({"top_p": 0}, "top_p"),
        ({"load_balance": "random"}, "load_balance"),
        ({"timeout": 0}, "timeout must be > 0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OpenAIBackend(**{"model": "tiny", **kwargs})


def test_unknown_env_argument_lists_what_the_backend_accepts() -> None:
    with pytest.raises(ValueError, match="accepts.*max_concurrency"):
        deliberation_env.parallel_env(backend="openai", model="tiny", max_concurrenc=3)


# ---------------------------------------------------------------------- a real model
def test_episode_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """The server generates with a real (tiny, random-weight) causal LM."""
    pytest.importorskip("transformers")
    from openai_server import ModelResponder

    with OpenAIServer(ModelResponder(tiny_model_dir, max_new_tokens=12)) as srv:
        kw = {"backend": "openai", "model": "tiny", "tasks": TASKS[:2], "max_tokens": 12}
        env = deliberation_env.parallel_env(
            base_url=srv.url, max_concurrency=4, cache=tmp_path / "c.sqlite", **kw
        )
        trace = play(env, seed=0)
        records = list(env.solutions().values())
        assert all(isinstance(r.text, str) for r in records)
        assert all(r.logprob_confidence is not None for r in records)
        assert all(0 < r.completion_tokens <= 12 for r in records)
        hits = srv.hits
        replay = deliberation_env.parallel_env(base_url=srv.url, cache=tmp_path / "c.sqlite", **kw)
        assert_same_trace(play(replay, seed=0), trace)
        assert srv.hits == hits
