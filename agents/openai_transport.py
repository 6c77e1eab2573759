"""The HTTP side of `agents.openai_compat.OpenAIBackend`: a private asyncio loop in a worker
thread, the connection pool, load balancing over endpoints, one attempt of a request and
what a failure means (retry, with which delay, or give up and say how to fix it).

The loop runs in its own daemon thread, so the backend is called from plain sync code and
from notebooks whose event loop is already running alike. The API key is read from the
environment when a `Runner` is made; it lives only in the client's headers and is masked
(`Runner.scrub`) in every text a server sends back.

What each failure of one attempt becomes (`Runner.attempt`):

=====================================  =================================================
failure                                result
=====================================  =================================================
HTTP 429 (``Retry-After`` honoured),   `Retry` (kind ``"429"`` / ``"5xx"`` / ``"408"``...)
408/409/425, any 5xx
no reply within ``timeout`` (httpx's   `Retry` (kind ``"timeout"``)
``TimeoutException`` family)
refused / reset / dropped connection,  `Retry` (kind ``"connection"``; httpx's
a body cut short                       ``TransportError`` family)
HTTP 200 that is not a completion      `Retry` (kind ``"malformed"``)
(bad JSON, no choices, ...)
HTTP 400/413/422 saying the context    `ContextLimit`, with the sizes the message gives
is too small (vLLM, SGLang, OpenAI,    (`context_limit`): the backend re-sends once with
llama.cpp phrasings)                   shortened peers
any other 4xx                          `OpenAIBackendError` at once, with the fix
=====================================  =================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from agents.openai_replies import Completion, parse_completion

__all__ = [
    "LOAD_BALANCING",
    "RETRY_STATUS",
    "ContextLimit",
    "OpenAIBackendError",
    "Retry",
    "Runner",
    "backoff_delay",
    "context_limit",
]

LOAD_BALANCING = ("least_outstanding", "round_robin")
RETRY_STATUS = frozenset({408, 409, 425, 429})
"""Retried besides every 5xx: timeouts, conflicts, too early, rate limits."""


class OpenAIBackendError(RuntimeError):
    """A request that failed for good (after the retries, or at once for a 4xx)."""


@dataclass(frozen=True)
class Retry:
    """A transient failure of one attempt: what went wrong, and the server's Retry-After."""

    problem: str
    retry_after: float | None = None
    kind: str = "other"
    """``"429"``, ``"5xx"``, another retried status, ``"timeout"``, ``"connection"`` or
    ``"malformed"`` (the backend counts retries by kind)."""


@dataclass(frozen=True)
class ContextLimit:
    """A request the server rejected as too long for its context, with the sizes it gave."""

    problem: str
    context_tokens: int | None = None
    """The model's context (prompt + completion), when the message says."""
    prompt_tokens: int | None = None
    """The request's prompt tokens, when the message says."""


CONTEXT_STATUS = frozenset({400, 413, 422})
"""Statuses a server uses for a request longer than its context."""

_CONTEXT_RE = re.compile(
    r"context[ _]length|context size|context window|context limit|maximum model length"
    r"|max_model_len|too many tokens|prompt is too long|input is too long",
    re.IGNORECASE,
)
_CONTEXT_SIZE_RE = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"maximum context length (?:is|of) (\d+)",  # OpenAI, vLLM, SGLang
        r"maximum model length (?:is |of )?(\d+)",  # vLLM engine check
        r"context length \((\d+) tokens\)",  # SGLang
        r"context (?:limit|size|window)(?: is| of)?:? (\d+)",
        r"\"n_ctx\"\s*:\s*(\d+)",  # llama.cpp
    )
]
_PROMPT_SIZE_RE = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"(\d+) (?:tokens )?in the messages",  # vLLM (older), OpenAI
        r"(\d+) tokens from the input",  # SGLang
        r"prompt contains (?:at least )?(\d+) input tokens",  # vLLM
        r"request has (\d+) input tokens",  # vLLM
        r"messages resulted in (\d+) tokens",  # OpenAI
        r"prompt \(length (\d+)\)",  # vLLM engine check
        r"input \((\d+) tokens\)",  # SGLang
        r"\"n_prompt_tokens\"\s*:\s*(\d+)",  # llama.cpp
    )
]


def context_limit(status: int, text: str) -> ContextLimit | None:
    """The `ContextLimit` of an error reply that says the request exceeds the context.

    Recognises the phrasings of vLLM ("This model's maximum context length is 2048 tokens.
    However, you requested 2100 tokens (1076 in the messages, 1024 in the completion)",
    "... your prompt contains at least 1100 input tokens ...", "The decoder prompt (length
    3000) is longer than the maximum model length of 2048"), SGLang, OpenAI
    (``context_length_exceeded``) and llama.cpp (``exceed_context_size_error`` with
    ``n_ctx`` / ``n_prompt_tokens``); None for any other reply.
    """
    if status not in CONTEXT_STATUS or not (
        _CONTEXT_RE.search(text) or "exceed_context_size" in text
    ):
        return None

    def first(patterns: list[re.Pattern[str]]) -> int | None:
        for pattern in patterns:
            found = pattern.search(text)
            if found:
                return int(found.group(1))
        return None

    return ContextLimit(
        f"HTTP {status}: {text[:300]}", first(_CONTEXT_SIZE_RE), first(_PROMPT_SIZE_RE)
    )


class Runner:
    """A private asyncio loop in a daemon thread, with the loop-bound HTTP state.

    Blocking on its futures works whether or not the calling thread runs an event loop.

    Args:
        urls: the endpoints, each up to and including ``/v1``.
        policy: one of `LOAD_BALANCING`.
        max_concurrency: requests in flight at once (and pooled connections).
        timeout, connect_timeout: read and connect timeouts in seconds.
        model: the served model's name, for error messages.
        api_key_env: environment variable holding the API key (None or unset: no key).
    """

    def __init__(
        self,
        urls: tuple[str, ...],
        policy: str,
        max_concurrency: int,
        timeout: float,
        connect_timeout: float,
        model: str,
        api_key_env: str | None,
    ) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="OpenAIBackend-loop", daemon=True
        )
        self.thread.start()
        key = os.environ.get(api_key_env or "", "") if api_key_env else ""
        self._secret = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
        )
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.urls = urls
        self.policy = policy
        self.timeout = timeout
        self.model = model
        self.api_key_env = api_key_env
        self.outstanding = dict.fromkeys(self.urls, 0)
        self._turn = 0
        self._finalizer = weakref.finalize(self, _shutdown, self.loop, self.thread, self.client)

    def __repr__(self) -> str:
        return f"Runner(urls={self.urls!r})"

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` on the worker loop and wait for its result."""
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

    async def attempt(self, url: str, body: dict) -> Completion | Retry | ContextLimit:
        """One POST of `body` to `url`: the completion, a `Retry` for a transient failure,
        or a `ContextLimit` when the request is too long for the server's context.

        Raises `OpenAIBackendError` at once for a status that a retry cannot fix (a 4xx
        other than `RETRY_STATUS`).
        """
        self.outstanding[url] += 1
        try:
            resp = await self.client.post(f"{url}/chat/completions", json=body)
        except httpx.TimeoutException as err:
            return Retry(
                f"no reply within the timeout ({type(err).__name__}, timeout={self.timeout}s)",
                kind="timeout",
            )
        except httpx.TransportError as err:
            return Retry(
                f"connection error ({type(err).__name__}: {self.scrub(str(err))})",
                kind="connection",
            )
        finally:
            self.outstanding[url] -= 1
        status = resp.status_code
        if status == 200:
            try:
                return parse_completion(resp.json())
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
                return Retry(
                    f"malformed reply ({type(err).__name__}: {self.scrub(str(err))[:200]})",
                    kind="malformed",
                )
        if status in RETRY_STATUS or status >= 500:
            return Retry(
                f"HTTP {status}: {self.scrub(resp.text)[:300]}",
                _retry_after(resp.headers.get("retry-after")),
                kind="5xx" if status >= 500 else str(status),
            )
        limit = context_limit(status, self.scrub(resp.text))
        if limit is not None:
            return limit
        raise OpenAIBackendError(
            f"{url}: HTTP {status} for model {self.model!r}: "
            f"{self.scrub(resp.text)[:300]}. {_fix_for(status, self.api_key_env)}"
        )

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


# ---------------------------------------------------------------------- failures
def backoff_delay(
    attempt: int, retry_after: float | None, backoff: float, max_backoff: float
) -> float:
    """Seconds before retry `attempt + 1`: the server's Retry-After, else `backoff` doubled
    per attempt with jitter (x0.5 to x1), both capped at `max_backoff`."""
    if retry_after is not None:
        return min(retry_after, max_backoff)
    return min(max_backoff, backoff * 2**attempt) * random.uniform(0.5, 1.0)


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


def _fix_for(status: int, api_key_env: str | None) -> str:
    if status in (401, 403):
        return (
            f"The server refused the credentials: set the API key in ${api_key_env}"
            if api_key_env
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
