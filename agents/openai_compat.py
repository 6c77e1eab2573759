"""`OpenAIBackend`: LLM agents served by any OpenAI-compatible server (vLLM, SGLang,
llama.cpp, Ollama, or OpenAI itself), through the chat completions API.

    import deliberation_env
    env = deliberation_env.parallel_env(
        backend="openai", model="Qwen/Qwen2.5-7B-Instruct",
        base_url=["http://gpu0:8000/v1", "http://gpu1:8000/v1"],  # load-balanced
        max_concurrency=32, cache="runs/cache.sqlite",
    )

Every request of a round (one batched `solve`/`refine` call) is sent concurrently, at most
`max_concurrency` at a time, spread over the endpoints (least outstanding requests first).
The asyncio loop runs in a private worker thread, so the backend is called from plain sync
code and from notebooks whose event loop is already running alike. Transient failures
(HTTP 429 and 5xx, timeouts, dropped connections, malformed replies) are retried with
exponential back-off and jitter, honouring ``Retry-After``; once the retries are spent the
call raises `OpenAIBackendError`, naming the endpoint, the status and the fix. With
``cache=PATH`` every completion is committed to an `agents.cache.ResponseCache` as it
arrives, so a re-run replays them without calling the server and resumes an interrupted
run where it stopped.

Prompts come from `agents.prompts`, answers and self-reports are read by `agents.parsing`.
The answer's log-prob confidence is exp(mean log-prob) of the answer's tokens, as in
`agents.hf` (where the server returns log-probs). The API key is read from the environment variable
`api_key_env` when the HTTP client is created; it is never stored on the backend, printed
in its repr, pickled, or put into an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import math
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from agents.cache import ResponseCache, open_cache, request_key
from agents.fit import record_from_call
from agents.parsing import parse_answer_span, parse_judge, solution_from_text
from agents.prompts import (
    MAX_SOLUTION_CHARS,
    Message,
    judge_messages,
    refine_messages,
    solve_messages,
)
from deliberation_env.protocol import RefineRequest, Solution, SolveRequest
from deliberation_env.tasks.task import Task

__all__ = [
    "LOAD_BALANCING",
    "OpenAIBackend",
    "OpenAIBackendError",
    "answer_logprob_confidence",
]

LOAD_BALANCING = ("least_outstanding", "round_robin")
RETRY_STATUS = frozenset({408, 409, 425, 429})
"""Retried besides every 5xx: timeouts, conflicts, too early, rate limits."""

Completion = dict[str, Any]
"""One completion as the cache stores it: ``text``, ``tokens`` and ``logprobs`` (lists of
equal length, or None), ``prompt_tokens``, ``completion_tokens`` (None when the server
did not report usage) and ``finish_reason``."""


class OpenAIBackendError(RuntimeError):
    """A request that failed for good (after the retries, or at once for a 4xx)."""


class OpenAIBackend:
    """A text `deliberation_env.protocol.Backend` over OpenAI-compatible chat completions.

    Args:
        model: the model name the server serves (``"Qwen/Qwen2.5-7B-Instruct"``).
        base_url: one endpoint or a list, each up to and including ``/v1``; a list is
            load-balanced (``load_balance``).
        api_key_env: environment variable holding the API key (sent as a bearer token);
            unset or empty: no key is sent (local servers need none).
        max_concurrency: requests in flight at once, over all endpoints.
        timeout: seconds to wait for a reply (read timeout); `connect_timeout` for the
            connection.
        max_retries: retries per request after the first attempt, on HTTP 429/5xx,
            timeouts, connection errors and malformed replies.
        backoff: first retry delay in seconds, doubled per retry up to `max_backoff`, with
            jitter (x0.5 to x1); a ``Retry-After`` header replaces it (capped the same way).
        temperature, top_p, max_tokens: sampling parameters of every request.
        logprobs: ask for token log-probs (for the log-prob confidence); pass False for a
            server that rejects the parameter.
        judge: grade each solution with a second, greedy request
            (`agents.prompts.judge_messages`) for its judge confidence; its tokens count
            towards the solution's. Without it the judge confidence is the verbalised one.
        judge_max_tokens: `max_tokens` of the judge requests.
        load_balance: ``"least_outstanding"`` (fewest requests in flight, ties in turn) or
            ``"round_robin"``.
        cache: a path or `agents.cache.ResponseCache`: record completions and replay them.
        extra_body: more JSON fields for every request (e.g. vLLM's ``{"top_k": 20}``).
        max_solution_chars: quoted solutions in refine and judge prompts are cut to this.
    """

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str] = "http://127.0.0.1:8000/v1",
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 16,
        timeout: float = 120.0,
        connect_timeout: float = 10.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 1024,
        logprobs: bool = True,
        judge: bool = False,
        judge_max_tokens: int = 256,
        load_balance: str = "least_outstanding",
        cache: ResponseCache | str | os.PathLike[str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        max_solution_chars: int = MAX_SOLUTION_CHARS,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(
                "model must be the served model's name, e.g. model='Qwen/Qwen2.5-7B-Instruct'"
            )
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls or not all(isinstance(u, str) and re.match(r"https?://", u) for u in urls):
            raise ValueError(
                f"base_url must be an http(s) URL or a non-empty list of them, e.g. "
                f"'http://127.0.0.1:8000/v1'; got {base_url!r}"
            )
        for name, value, low in (
            ("max_concurrency", max_concurrency, 1),
            ("max_retries", max_retries, 0),
            ("max_tokens", max_tokens, 1),
            ("judge_max_tokens", judge_max_tokens, 1),
            ("max_solution_chars", max_solution_chars, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        if not (backoff >= 0 and max_backoff >= 0):
            raise ValueError(f"backoff and max_backoff must be >= 0, got {backoff}, {max_backoff}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if load_balance not in LOAD_BALANCING:
            raise ValueError(f"load_balance={load_balance!r} is not one of {LOAD_BALANCING}")
        self.model = model
        self.base_urls = tuple(u.rstrip("/") for u in urls)
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_tokens = max_tokens
        self.logprobs = bool(logprobs)
        self.judge = bool(judge)
        self.judge_max_tokens = judge_max_tokens
        self.load_balance = load_balance
        self.cache = open_cache(cache)
        self.extra_body = dict(extra_body or {})
        self.max_solution_chars = max_solution_chars
        self.http_requests = 0
        """HTTP attempts sent by this process (retries included)."""
        self.retries = 0
        self._runner: _Runner | None = None

    def __repr__(self) -> str:
        urls = self.base_urls[0] if len(self.base_urls) == 1 else list(self.base_urls)
        return (
            f"OpenAIBackend(model={self.model!r}, base_url={urls!r}, "
            f"max_concurrency={self.max_concurrency}, cache={self.cache!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runner"] = None  # threads, loops and sockets do not travel
        return state

    def close(self) -> None:
        """Close the HTTP connections and stop the worker thread (reopened when needed)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()

    def stats(self) -> dict[str, Any]:
        """HTTP requests and retries sent by this process, and the cache's `stats()`."""
        out: dict[str, Any] = {"http_requests": self.http_requests, "retries": self.retries}
        if self.cache is not None:
            out["cache"] = self.cache.stats()
        return out

    # ------------------------------------------------------------------ Backend
    def solve(self, requests: Sequence[SolveRequest]) -> list[Solution]:
        messages = [solve_messages(r.task) for r in requests]
        return self._solutions(requests, messages)

    def refine(self, requests: Sequence[RefineRequest]) -> list[Solution]:
        messages = [
            refine_messages(r.task, r.agent, r.own, r.peers, self.max_solution_chars)
            for r in requests
        ]
        return self._solutions(requests, messages)

    # ------------------------------------------------------------------ internals
    def body(
        self,
        messages: Sequence[Message],
        seed: int,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> dict:
        """The JSON body of one request; it is also the request's cache key."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "temperature": self.temperature if temperature is None else temperature,
            "top_p": self.top_p,
            "max_tokens": max_tokens or self.max_tokens,
            "seed": int(seed),
        }
        if self.logprobs:
            body["logprobs"] = True
        body.update(self.extra_body)
        return body

    def _solutions(
        self,
        requests: Sequence[SolveRequest | RefineRequest],
        messages: Sequence[Sequence[Message]],
    ) -> list[Solution]:
        if not requests:
            return []
        bodies = [self.body(m, r.seed) for m, r in zip(messages, requests)]
        keys = [request_key(b) for b in bodies]
        completions = self._complete(bodies, keys)
        solutions = [
            _solution(r.task, c, b["messages"]) for r, c, b in zip(requests, completions, bodies)
        ]
        if self.judge:
            # The grader decodes greedily, as the HF backend's does.
            judge_bodies = [
                self.body(
                    judge_messages(r.task, s, self.max_solution_chars),
                    r.seed,
                    self.judge_max_tokens,
                    0.0,
                )
                for r, s in zip(requests, solutions)
            ]
            graded = self._complete(judge_bodies, [request_key(b) for b in judge_bodies])
            solutions = [
                _with_judge(s, g, b["messages"]) for s, g, b in zip(solutions, graded, judge_bodies)
            ]
        if self.cache is not None:
            # Records for SimulatedBackend.fit, written once per solution (a replay would
            # only verify the same answers again).
            have = self.cache.has_records(keys)
            self.cache.put_records(
                (key, {**record_from_call(r, s), "model": self.model, "seed": r.seed})
                for key, r, s in zip(keys, requests, solutions)
                if key not in have
            )
        return solutions

    def _complete(self, bodies: list[dict], keys: list[str]) -> list[Completion]:
        """Completions of `bodies`, from the cache where it has them, else from the server."""
        out: list[Completion | None] = [None] * len(bodies)
        if self.cache is not None:
            out = [self.cache.get(k) for k in keys]
        todo = [i for i, c in enumerate(out) if c is None]
        if todo:
            runner = self._get_runner()
            fetched = runner.run(
                self._fetch_all(runner, [bodies[i] for i in todo], [keys[i] for i in todo])
            )
            for i, completion in zip(todo, fetched):
                out[i] = completion
        return out  # type: ignore[return-value]

    def _get_runner(self) -> _Runner:
        with _RUNNER_LOCK:
            if self._runner is None or self._runner.pid != os.getpid():
                self._runner = _Runner(self)
            return self._runner

    async def _fetch_all(
        self, st: _Runner, bodies: list[dict], keys: list[str]
    ) -> list[Completion]:
        failures: list[OpenAIBackendError] = []
        done = 0

        async def one(i: int) -> Completion | None:
            nonlocal done
            async with st.semaphore:
                if failures:  # fail fast: start nothing new once a request failed for good
                    return None
                try:
                    completion = await self._fetch_one(st, bodies[i])
                except OpenAIBackendError as err:
                    failures.append(err)
                    return None
            if self.cache is not None:
                self.cache.put(keys[i], bodies[i], completion)
            done += 1
            return completion

        results = await asyncio.gather(*(one(i) for i in range(len(bodies))))
        if failures:
            err = failures[0]
            where = (
                f"{done} of {len(bodies)} requests of this call succeeded and are in the cache "
                f"{str(self.cache.path)!r}: re-run to resume"
                if self.cache is not None
                else "pass cache=PATH so that a re-run resumes instead of starting over"
            )
            raise OpenAIBackendError(f"{err} ({where})") from None
        return results  # type: ignore[return-value]

    async def _fetch_one(self, st: _Runner, body: dict) -> Completion:
        last_url: str | None = None
        problem = ""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            url = st.pick(avoid=last_url)
            last_url = url
            retry_after: float | None = None
            st.outstanding[url] += 1
            self.http_requests += 1
            try:
                resp = await st.client.post(f"{url}/chat/completions", json=body)
            except httpx.TimeoutException as err:
                problem = (
                    f"no reply within the timeout ({type(err).__name__}, timeout={self.timeout}s)"
                )
            except httpx.TransportError as err:
                problem = f"connection error ({type(err).__name__}: {st.scrub(str(err))})"
            else:
                status = resp.status_code
                if status == 200:
                    try:
                        return _completion(resp.json())
                    except (ValueError, KeyError, TypeError, IndexError) as err:
                        problem = (
                            f"malformed reply ({type(err).__name__}: {st.scrub(str(err))[:200]})"
                        )
                elif status in RETRY_STATUS or status >= 500:
                    problem = f"HTTP {status}: {st.scrub(resp.text)[:300]}"
                    retry_after = _retry_after(resp.headers.get("retry-after"))
                else:
                    raise OpenAIBackendError(
                        f"{url}: HTTP {status} for model {self.model!r}: "
                        f"{st.scrub(resp.text)[:300]}. {_fix_for(status, self)}"
                    )
            finally:
                st.outstanding[url] -= 1
            if attempt + 1 < attempts:
                self.retries += 1
                await asyncio.sleep(self._delay(attempt, retry_after))
        raise OpenAIBackendError(
            f"{last_url}: {problem}, after {attempts} attempts (max_retries={self.max_retries}). "
            f"Check that the server is up and serves model {self.model!r} "
            f"(curl {last_url}/models); if it is overloaded, lower max_concurrency or raise "
            f"timeout / max_retries"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        return min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)


# ---------------------------------------------------------------------- the worker loop
_RUNNER_LOCK = threading.Lock()


class _Runner:
    """A private asyncio loop in a daemon thread, with the loop-bound HTTP state.

    Blocking on its futures works whether or not the calling thread runs an event loop.
    """

    def __init__(self, backend: OpenAIBackend) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="OpenAIBackend-loop", daemon=True
        )
        self.thread.start()
        key = os.environ.get(backend.api_key_env or "", "") if backend.api_key_env else ""
        self._secret = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        n = backend.max_concurrency
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(backend.timeout, connect=backend.connect_timeout),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        )
        self.semaphore = asyncio.Semaphore(n)
        self.urls = backend.base_urls
        self.policy = backend.load_balance
        self.outstanding = dict.fromkeys(self.urls, 0)
        self._turn = 0
        self._finalizer = weakref.finalize(self, _shutdown, self.loop, self.thread, self.client)

    def __repr__(self) -> str:
        return f"_Runner(urls={self.urls!r})"

    def run(self, coro: Any) -> Any:
        if threading.current_thread() is self.thread:
            raise RuntimeError("OpenAIBackend was called from its own worker loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: stop the requests in flight
            raise

    def pick(self, avoid: str | None = None) -> str:
        """The next endpoint; a retry avoids the one that just failed when there are others."""
        n = len(self.urls)
        order = [self.urls[(self._turn + k) % n] for k in range(n)]
        self._turn = (self._turn + 1) % n
        if avoid is not None and n > 1:
            order.remove(avoid)
        if self.policy == "round_robin":
            return order[0]
        return min(order, key=self.outstanding.__getitem__)  # first of the least loaded

    def scrub(self, text: str) -> str:
        """`text` with the API key masked (a server may echo request headers)."""
        return text.replace(self._secret, "***") if self._secret else text

    def close(self) -> None:
        self._finalizer()


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread, client: Any) -> None:
    if loop.is_closed():
        return
    if thread.is_alive():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
    if not loop.is_running():
        loop.close()


# ---------------------------------------------------------------------- replies
def _completion(data: Any) -> Completion:
    """The parts of a chat completion reply the backend uses; raises on a malformed reply."""
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    if not isinstance(text, str):
        raise TypeError(f"message content is {type(text).__name__}, not a string")
    tokens = logprobs = None
    lp = choice.get("logprobs")
    if isinstance(lp, Mapping) and lp.get("content"):
        tokens = [_token_text(t) for t in lp["content"]]
        logprobs = [float(t["logprob"]) for t in lp["content"]]
    elif isinstance(lp, Mapping) and lp.get("token_logprobs"):  # legacy completions shape
        tokens = [str(t) for t in lp.get("tokens") or []]
        logprobs = [float(x) for x in lp["token_logprobs"]]
    usage = data.get("usage") or {}
    return {
        "text": text,
        "tokens": tokens,
        "logprobs": logprobs,
        "prompt_tokens": _int_or_none(usage.get("prompt_tokens")),
        "completion_tokens": _int_or_none(usage.get("completion_tokens")),
        "finish_reason": choice.get("finish_reason"),
    }


def _token_text(entry: Mapping[str, Any]) -> str:
    """A token's text from its raw ``bytes`` where the server gives them: a token that is
    part of a multi-byte character keeps its bytes (as surrogate escapes), so the tokens
    still spell the completion byte for byte."""
    raw = entry.get("bytes")
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw).decode("utf-8", "surrogateescape")
    return str(entry.get("token", ""))


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _fix_for(status: int, backend: OpenAIBackend) -> str:
    if status in (401, 403):
        env = backend.api_key_env
        return (
            f"The server refused the credentials: set the API key in ${env}"
            if env
            else "The server wants an API key: pass api_key_env='NAME_OF_THE_VARIABLE'"
        )
    if status == 404:
        return (
            "Check that base_url ends in /v1 (e.g. http://127.0.0.1:8000/v1) and that the "
            "server serves this model (GET {base_url}/models lists them)"
        )
    return (
        "The server rejected the request: check model, max_tokens (context length) and "
        "extra_body; a server without log-prob support needs logprobs=False"
    )


# ---------------------------------------------------------------------- solutions
def _estimate_tokens(text: str) -> int:
    """About 4 characters per token, the usual rule of thumb, when the server reports none."""
    return math.ceil(len(text) / 4)


def _prompt_tokens(c: Completion, messages: Sequence[Message]) -> int:
    if c.get("prompt_tokens") is not None:
        return int(c["prompt_tokens"])
    return sum(_estimate_tokens(m["content"]) + 4 for m in messages)  # + role/format tokens


def _completion_tokens(c: Completion) -> int:
    if c.get("completion_tokens") is not None:
        return int(c["completion_tokens"])
    return len(c["tokens"]) if c.get("tokens") else _estimate_tokens(c["text"])


def _solution(task: Task, c: Completion, messages: Sequence[Message]) -> Solution:
    text = c["text"]
    return solution_from_text(
        text,
        task.kind,
        prompt_tokens=_prompt_tokens(c, messages),
        completion_tokens=_completion_tokens(c),
        logprob_confidence=answer_logprob_confidence(
            text, task.kind, c.get("tokens"), c.get("logprobs")
        ),
    )


def _with_judge(s: Solution, graded: Completion, messages: Sequence[Message]) -> Solution:
    p = parse_judge(graded["text"])
    return dataclasses.replace(
        s,
        judge_confidence=s.self_confidence if p is None else p,
        prompt_tokens=s.prompt_tokens + _prompt_tokens(graded, messages),
        completion_tokens=s.completion_tokens + _completion_tokens(graded),
    )


def answer_logprob_confidence(
    text: str, kind: str, tokens: Sequence[str] | None, logprobs: Sequence[float] | None
) -> float | None:
    """exp(mean log-prob) of the answer's tokens, in [0, 1]; None without log-probs.

    The same measure as `agents.hf.HFBackend.answer_confidence`: the answer's span comes
    from `agents.parsing.parse_answer_span`, the tokens overlapping it are found by their
    byte offsets (a multi-byte character may be split across tokens), and their mean
    log-prob is exponentiated (the per-token geometric mean probability, Xiong et al.,
    arXiv 2306.13063). When the span cannot be located (no answer, or tokens that do not
    spell the text) the mean runs over the whole completion.
    """
    if not logprobs:
        return None
    lps = [lp if math.isfinite(lp) else -1e4 for lp in logprobs]
    picked = lps
    _, span = parse_answer_span(text, kind)
    if span is not None and tokens is not None and len(tokens) == len(lps):
        spelled = [t.encode("utf-8", "surrogateescape") for t in tokens]
        if b"".join(spelled) == text.encode("utf-8", "surrogateescape"):
            lo = len(text[: span[0]].encode("utf-8", "surrogateescape"))
            hi = lo + len(text[span[0] : span[1]].encode("utf-8", "surrogateescape"))
            pos, inside = 0, []
            for tok, lp in zip(spelled, lps):
                end = pos + len(tok)
                if end > lo and pos < hi:
                    inside.append(lp)
                pos = end
            picked = inside or lps
    return float(min(1.0, math.exp(sum(picked) / len(picked))))
