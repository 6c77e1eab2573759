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
The asyncio loop runs in a private worker thread (`agents.openai_transport`), so the
backend is called from plain sync code and from notebooks whose event loop is already
running alike. Transient failures (HTTP 429 and 5xx, timeouts, dropped connections,
malformed replies) are retried with exponential back-off and jitter, honouring
``Retry-After``; once the retries are spent the call raises `OpenAIBackendError`, naming
the endpoint, the status and the fix. `stats()` counts attempts, retries by kind and
requests lost.

Context window. When the server answers that a request is longer than its context
(HTTP 400 in vLLM's, SGLang's, OpenAI's or llama.cpp's words), the request is sent once
more with its quoted solutions cut to fit (`agents.prompts.fit_messages`, sized from the
context and prompt tokens the message gives, at the prompt's own characters per token,
with a margin) and, when even the answers-only prompt leaves less than `max_tokens`,
with `max_tokens` lowered to what is left. The reply is cached under the request as it was
asked, so a re-run replays it. A prompt that does not fit even so, or a second context
error, raises `OpenAIContextError` (an `OpenAIBackendError` and an
`agents.prompts.ContextWindowError`). With ``cache=PATH`` every completion is committed to
an `agents.cache.ResponseCache` as it arrives, so a re-run replays them without calling
the server and resumes an interrupted run where it stopped.

Prompts come from `agents.prompts`, answers and self-reports are read by `agents.parsing`,
replies by `agents.openai_replies` (with the answer's log-prob confidence, exp(mean
log-prob) of the answer's tokens, as in `agents.hf`). The API key is read from the
environment variable `api_key_env` when the HTTP client is created; it is never stored on
the backend, printed in its repr, pickled, or put into an error message.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from agents.cache import ResponseCache, open_cache, prompt_version, request_key
from agents.openai_replies import (
    Completion,
    answer_logprob_confidence,
    judged_solution,
    reply_solution,
)
from agents.openai_transport import (
    LOAD_BALANCING,
    RETRY_STATUS,
    ContextLimit,
    OpenAIBackendError,
    Retry,
    Runner,
    backoff_delay,
)
from agents.prompts import (
    MAX_SOLUTION_CHARS,
    MIN_REPLY_TOKENS,
    ContextWindowError,
    Message,
    fit_messages,
    judge_messages,
    longest_text,
    refine_messages,
)
from agents.records import record_from_call
from agents.text_backend import check_int, check_sampling, request_messages
from agents.verifier import JudgeVerifier, score_solutions, verifier_groups
from deliberation_env.protocol import RefineRequest, Solution, SolveRequest

__all__ = [
    "LOAD_BALANCING",
    "RETRY_STATUS",
    "OpenAIBackend",
    "OpenAIBackendError",
    "OpenAIContextError",
    "answer_logprob_confidence",
]

_RUNNER_LOCK = threading.Lock()
_TOKENS_PER_CHAR = 1 / 3
"""Prompt tokens per character when the server's message gives no prompt size (a cautious
guess: English text runs at about 1/4 with the usual tokenizers)."""

Builder = Callable[[int | None], list[Message]]
"""A request's messages with its quoted solutions cut to ``keep`` characters (None: uncut)."""


class OpenAIContextError(OpenAIBackendError, ContextWindowError):
    """A request the server's context cannot hold, even with its quoted solutions cut."""


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
        verifier_model: a judge model on the same server(s) that scores every solution
            (`agents.verifier.JudgeVerifier`; H8); None: no verifier.
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
        verifier_model: str | None = None,
    ) -> None:
        self.verifier = None if verifier_model is None else JudgeVerifier(verifier_model)
        self.observation_groups = verifier_groups(self.verifier)
        self.base_urls = _checked_urls(model, base_url)
        for name, count, low in (
            ("max_concurrency", max_concurrency, 1),
            ("max_retries", max_retries, 0),
            ("max_tokens", max_tokens, 1),
            ("judge_max_tokens", judge_max_tokens, 1),
            ("max_solution_chars", max_solution_chars, 1),
        ):
            check_int(name, count, low)
        _check_timing(timeout, connect_timeout, backoff, max_backoff)
        check_sampling(temperature, top_p)
        if load_balance not in LOAD_BALANCING:
            raise ValueError(f"load_balance={load_balance!r} is not one of {LOAD_BALANCING}")
        self.model = model
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
        self.cache = open_cache(cache, model=self.model, prompts=prompt_version())
        self.extra_body = dict(extra_body or {})
        self.max_solution_chars = max_solution_chars
        self.http_requests = 0
        """HTTP attempts sent by this process (retries included)."""
        self.retries = 0
        """Attempts repeated after a transient failure (`retry_kinds` says which)."""
        self.retry_kinds: Counter[str] = Counter()
        self.context_retries = 0
        """Requests sent again shortened after a context-length error."""
        self.lost = 0
        """Requests of failed calls that got no completion."""
        self._runner: Runner | None = None

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
        """HTTP requests, retries (by kind), context re-sends and lost requests of this
        process, and the cache's `stats()`."""
        out: dict[str, Any] = {
            "http_requests": self.http_requests,
            "retries": self.retries,
            "retry_kinds": dict(self.retry_kinds),
            "context_retries": self.context_retries,
            "lost": self.lost,
        }
        if self.cache is not None:
            out["cache"] = self.cache.stats()
        return out

    # ------------------------------------------------------------------ Backend
    def solve(self, requests: Sequence[SolveRequest]) -> list[Solution]:
        return self._solutions(requests)

    def refine(self, requests: Sequence[RefineRequest]) -> list[Solution]:
        return self._solutions(requests)

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

    def _solutions(self, requests: Sequence[SolveRequest | RefineRequest]) -> list[Solution]:
        if not requests:
            return []
        bodies = [self.body(request_messages(r, self.max_solution_chars), r.seed) for r in requests]
        keys = [request_key(b) for b in bodies]
        completions = self._complete(bodies, keys, [self._builder(r) for r in requests])
        solutions = [
            reply_solution(r.task, c, b["messages"])
            for r, c, b in zip(requests, completions, bodies)
        ]
        if self.judge:
            solutions = self._judged(requests, solutions)
        solutions = score_solutions(self.verifier, requests, solutions, self)
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

    def _judged(
        self, requests: Sequence[SolveRequest | RefineRequest], solutions: list[Solution]
    ) -> list[Solution]:
        # The grader decodes greedily, as the HF backend's does.
        bodies = [
            self.body(
                judge_messages(r.task, s, self.max_solution_chars),
                r.seed,
                self.judge_max_tokens,
                0.0,
            )
            for r, s in zip(requests, solutions)
        ]
        builders = [
            (functools.partial(judge_messages, r.task, s, self.max_solution_chars), len(s.text))
            for r, s in zip(requests, solutions)
        ]
        graded = self._complete(bodies, [request_key(b) for b in bodies], builders)
        return [judged_solution(s, g, b["messages"]) for s, g, b in zip(solutions, graded, bodies)]

    def _builder(self, r: SolveRequest | RefineRequest) -> tuple[Builder, int] | None:
        """How to cut the quoted solutions of `r` (with the longest one's length)."""
        if not isinstance(r, RefineRequest):
            return None
        build = functools.partial(
            refine_messages, r.task, r.agent, r.own, r.peers, self.max_solution_chars
        )
        return build, longest_text([r.own, *r.peers])

    def _complete(
        self,
        bodies: list[dict],
        keys: list[str],
        builders: Sequence[tuple[Builder, int] | None] | None = None,
    ) -> list[Completion]:
        """Completions of `bodies`, from the cache where it has them, else from the server."""
        out: list[Completion | None] = [None] * len(bodies)
        builders = builders or [None] * len(bodies)
        if self.cache is not None:
            out = [self.cache.get(k) for k in keys]
        todo = [i for i, c in enumerate(out) if c is None]
        if todo:
            runner = self._get_runner()
            fetched = runner.run(
                self._fetch_all(
                    runner,
                    [bodies[i] for i in todo],
                    [keys[i] for i in todo],
                    [builders[i] for i in todo],
                )
            )
            for i, completion in zip(todo, fetched):
                out[i] = completion
        return cast("list[Completion]", out)  # every slot is filled: a hit or fetched

    def _get_runner(self) -> Runner:
        with _RUNNER_LOCK:
            if self._runner is None or self._runner.pid != os.getpid():
                self._runner = Runner(
                    self.base_urls,
                    self.load_balance,
                    self.max_concurrency,
                    self.timeout,
                    self.connect_timeout,
                    self.model,
                    self.api_key_env,
                )
            return self._runner

    async def _fetch_all(
        self,
        st: Runner,
        bodies: list[dict],
        keys: list[str],
        builders: Sequence[tuple[Builder, int] | None],
    ) -> list[Completion]:
        failures: list[OpenAIBackendError] = []
        done = 0

        async def one(i: int) -> Completion | None:
            nonlocal done
            async with st.semaphore:
                if failures:  # fail fast: start nothing new once a request failed for good
                    return None
                try:
                    completion = await self._fetch_one(st, bodies[i], builders[i])
                except OpenAIBackendError as err:
                    failures.append(err)
                    return None
            if self.cache is not None:
                self.cache.put(keys[i], bodies[i], completion)
            done += 1
            return completion

        results = await asyncio.gather(*(one(i) for i in range(len(bodies))))
        if failures:
            where = (
                f"{done} of {len(bodies)} requests of this call succeeded and are in the cache "
                f"{str(self.cache.path)!r}: re-run to resume"
                if self.cache is not None
                else "pass cache=PATH so that a re-run resumes instead of starting over"
            )
            self.lost += len(bodies) - done
            raise type(failures[0])(f"{failures[0]} ({where})") from None
        return cast("list[Completion]", results)  # None only where a request failed

    async def _fetch_one(
        self, st: Runner, body: dict, builder: tuple[Builder, int] | None = None
    ) -> Completion:
        """One completion, retried with back-off on transient failures, and sent once more
        shortened after a context-length error."""
        url: str | None = None
        failure = Retry("")
        attempts = self.max_retries + 1
        attempt = 0
        refitted = False
        while attempt < attempts:
            url = st.pick(avoid=url)
            self.http_requests += 1
            result = await st.attempt(url, body)
            if isinstance(result, ContextLimit):
                shorter = None if refitted else self._refit(body, result, builder)
                if shorter is None:
                    raise self._context_error(url, result, builder is not None, refitted)
                body, refitted = shorter, True
                self.context_retries += 1
                continue  # not a transient failure: no back-off, no retry spent
            if not isinstance(result, Retry):
                return result
            failure = result
            attempt += 1
            if attempt < attempts:
                self.retries += 1
                self.retry_kinds[result.kind] += 1
                delay = backoff_delay(
                    attempt - 1, result.retry_after, self.backoff, self.max_backoff
                )
                await asyncio.sleep(delay)
        raise OpenAIBackendError(
            f"{url}: {failure.problem}, after {attempts} attempts "
            f"(max_retries={self.max_retries}). "
            f"Check that the server is up and serves model {self.model!r} "
            f"(curl {url}/models); if it is overloaded, lower max_concurrency or raise "
            f"timeout / max_retries"
        )

    def _refit(
        self, body: dict, limit: ContextLimit, builder: tuple[Builder, int] | None
    ) -> dict | None:
        """`body` cut to fit the context `limit` reports, or None when it cannot fit.

        Token counts are estimated at the characters per token of the rejected prompt (its
        size from the server's message), with a margin of 2% + 8 tokens.
        """
        max_tokens = int(body.get("max_tokens") or self.max_tokens)
        chars = _chars(body["messages"])
        per_char = (
            limit.prompt_tokens / chars if limit.prompt_tokens and chars else _TOKENS_PER_CHAR
        )
        if limit.context_tokens is None:  # sizes unknown: quote the answers only
            return None if builder is None else {**body, "messages": builder[0](0)}
        room = limit.context_tokens - (8 + limit.context_tokens // 50)

        def estimate(messages: list[Message]) -> int:
            return math.ceil(_chars(messages) * per_char)

        messages = body["messages"]
        if builder is not None:
            messages, _ = fit_messages(
                builder[0], lambda m: estimate(m) + max_tokens <= room, builder[1]
            )
        reply = min(max_tokens, room - estimate(messages))
        if reply < min(max_tokens, MIN_REPLY_TOKENS):
            return None
        return {**body, "messages": messages, "max_tokens": reply}

    def _context_error(
        self, url: str, limit: ContextLimit, cuttable: bool, refitted: bool
    ) -> OpenAIContextError:
        how = (
            "after one re-send with shortened prompt"
            if refitted
            else "even with every quoted solution cut to its final answer"
            if cuttable
            else "even with a lower max_tokens"
        )
        return OpenAIContextError(
            f"{url}: the request does not fit the context of model {self.model!r} {how} "
            f"({limit.problem[:300]}). Serve the model with a longer context (vLLM: "
            f"--max-model-len), use shorter questions, or lower max_tokens={self.max_tokens}"
        )


def _chars(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "")) for m in messages)


def _checked_urls(model: str, base_url: str | Sequence[str]) -> tuple[str, ...]:
    """`base_url` as a tuple of endpoints without trailing slashes; checks `model` too."""
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
    return tuple(u.rstrip("/") for u in urls)


def _check_timing(
    timeout: float, connect_timeout: float, backoff: float, max_backoff: float
) -> None:
    for name, seconds in (("timeout", timeout), ("connect_timeout", connect_timeout)):
        if not seconds > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {seconds!r}")
    if not (backoff >= 0 and max_backoff >= 0):
        raise ValueError(f"backoff and max_backoff must be >= 0, got {backoff}, {max_backoff}")
