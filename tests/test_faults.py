"""Faults survived at scale: `OpenAIBackend` against the local server injecting faults at a
set rate (``tests/openai_server.py``) gives the metrics of a fault-free run, caches every
reply, loses no request, and retries each fault exactly once.

The evaluation here is small (12 questions, 144 requests a run, faults at 25%); the
200-question version is ``python benchmarks/faults.py``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("httpx")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import faults as bench  # noqa: E402  (benchmarks/faults.py)
from openai_server import RATE_FAULTS, OpenAIServer, ScriptedResponder  # noqa: E402

from agents.openai_compat import OpenAIBackend  # noqa: E402
from agents.openai_transport import backoff_delay  # noqa: E402
from deliberation_env import SolveRequest  # noqa: E402
from deliberation_env.tasks import generate_arithmetic, load_tasks  # noqa: E402

QUESTIONS = 12
RATE = 0.25
SEED = 3
CLIENT = {"timeout": 1.0, "connect_timeout": 1.0, "backoff": 0.001, "max_backoff": 0.01}
TASKS = generate_arithmetic(4, seed=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The debate evaluation fault-free and faulty, on in-process servers."""
    tmp = tmp_path_factory.mktemp("faults")
    tasks = f"arithmetic:{QUESTIONS}:{SEED}"
    answers = {t.question.strip(): t.answer for t in load_tasks(tasks)}
    out = {}
    for name, rate in (("clean", 0.0), ("faulty", RATE)):
        responder = ScriptedResponder(answers, answers_only=True)
        with OpenAIServer(
            responder, hang_s=1.5, retry_after="0.01", fault_rate=rate, fault_seed=SEED
        ) as srv:
            metrics, stats = bench.evaluation(
                srv.url, tasks, QUESTIONS, tmp / f"{name}.sqlite", client=CLIENT
            )
            out[name] = {
                "metrics": metrics,
                "stats": stats,
                "hits": srv.hits,
                "injected": Counter(srv.injected),
                "cache": bench.cache_contents(tmp / f"{name}.sqlite"),
            }
    return out


def test_a_faulty_run_gives_the_metrics_of_a_fault_free_one(runs: dict) -> None:
    clean, faulty = runs["clean"], runs["faulty"]
    assert clean["injected"] == Counter() and clean["stats"]["retries"] == 0
    assert faulty["metrics"] == clean["metrics"]
    assert 0 < faulty["metrics"]["team_accuracy"] < 1  # a real evaluation, not a degenerate one


def test_every_reply_is_cached_once_and_no_request_is_lost(runs: dict) -> None:
    clean, faulty = runs["clean"], runs["faulty"]
    assert len(clean["cache"]) == QUESTIONS * 3 * 4  # solve + 3 refine rounds, 3 agents
    assert faulty["cache"] == clean["cache"]  # same keys, same replies
    assert faulty["stats"]["lost"] == 0 and clean["stats"]["lost"] == 0


def test_every_kind_of_fault_is_injected_and_retried_once(runs: dict) -> None:
    injected, stats = runs["faulty"]["injected"], runs["faulty"]["stats"]
    assert set(injected) == set(RATE_FAULTS), injected  # the seed hits every kind
    kinds = stats["retry_kinds"]
    assert kinds.get("429", 0) == injected["429"]
    assert kinds.get("5xx", 0) == injected["500"]
    assert kinds.get("connection", 0) == injected["drop"] + injected["disconnect"]
    assert kinds.get("malformed", 0) == injected["truncated"] + injected["empty_choices"]
    assert stats["context_retries"] == injected["context"]
    # A hang is a timeout; a loaded machine may add a slow reply or two.
    assert injected["hang"] <= kinds.get("timeout", 0) <= injected["hang"] + 2
    total = sum(injected.values())
    assert runs["faulty"]["hits"] == len(runs["clean"]["cache"]) + total
    assert stats["http_requests"] == runs["faulty"]["hits"]


# ---------------------------------------------------------------------- each fault alone
@pytest.fixture
def server():
    answers = {t.question: t.answer for t in TASKS}
    with OpenAIServer(ScriptedResponder(answers), hang_s=1.5) as srv:
        yield srv


def backend(url: str, **kw) -> OpenAIBackend:
    return OpenAIBackend("tiny", url, api_key_env=None, max_retries=3, **{**CLIENT, **kw})


@pytest.mark.parametrize("fault", [k for k in RATE_FAULTS if k != "context"])
def test_each_fault_is_retried_once(server: OpenAIServer, fault: str) -> None:
    request = [SolveRequest(TASKS[0], 0, seed=5)]
    expected = backend(server.url).solve(request)
    server.reset_counts()
    b = backend(server.url)
    server.faults.append(fault)
    assert b.solve(request) == expected
    assert server.hits == 2 and b.retries == 1 and server.injected == Counter({fault: 1})


def test_retry_after_is_waited_for_and_backoff_is_bounded(server: OpenAIServer) -> None:
    server.retry_after = "0.3"
    server.faults.append("429")
    start = time.perf_counter()
    backend(server.url, max_backoff=1.0).solve([SolveRequest(TASKS[0], 0, seed=5)])
    assert time.perf_counter() - start >= 0.3
    assert backoff_delay(0, 100.0, 0.5, 2.0) == 2.0  # a huge Retry-After is capped
    assert all(backoff_delay(k, None, 0.5, 2.0) <= 2.0 for k in range(30))
    assert 0.25 <= backoff_delay(0, None, 0.5, 2.0) <= 0.5  # jitter x0.5..x1


def test_fault_draws_are_seeded() -> None:
    def draws(seed: int) -> list:
        srv = OpenAIServer(ScriptedResponder({}), fault_rate=0.5, fault_seed=seed)
        body = {"messages": [{"role": "user", "content": "q"}], "model": "m"}
        return [srv._draw({**body, "seed": i}) for i in range(200)]

    assert draws(1) == draws(1) != draws(2)
    assert 60 < sum(d is not None for d in draws(1)) < 140
