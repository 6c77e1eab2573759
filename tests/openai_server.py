"""A real OpenAI-compatible HTTP server on 127.0.0.1 for the backend tests and benchmark.

`OpenAIServer` serves ``POST /v1/chat/completions`` (and ``GET /v1/models``) from a
`ThreadingHTTPServer` bound to a free loopback port. Replies come from a *responder*:
`ScriptedResponder` (deterministic text from the request: the task's gold answer or a wrong
one, chosen by a hash of the request and its seed) or `ModelResponder` (``transformers``
generation on a local model folder, e.g. the tiny random-weight model of
``tests/tiny_model.py``). Fault injection: queue fault names in `OpenAIServer.faults`
(each request takes the next one), or set a `fault_rate` (each request without a queued
fault gets one of `fault_kinds` with that probability, drawn from a generator seeded with
`fault_seed`):

=================  ====================================================================
fault              what the server does
=================  ====================================================================
``429``            HTTP 429 with ``Retry-After: <retry_after>``
``500``            HTTP 500 (any ``"5xx"``/``"4xx"`` code string works the same way)
``hang``           sleeps `hang_s` seconds before answering (past the client's timeout)
``drop``           sends the headers and half the body, then closes the socket
``disconnect``     closes the connection without a reply
``truncated``      HTTP 200 whose JSON body is cut in half (a consistent Content-Length)
``garbage``        HTTP 200 with a body that is not JSON
``empty_choices``  HTTP 200 with ``"choices": []``
``context``        HTTP 400 in vLLM's words: "This model's maximum context length is C
                   tokens. However, you requested ... (P in the messages, M in the
                   completion)", with C a quarter of the prompt short; given at most once
                   per request (a real server's context does not shrink between tries)
``no_usage``       a normal reply without the ``usage`` field
``ok``             a normal reply (to place a fault after some good requests)
=================  ====================================================================

`injected` counts the faults served, by kind. With `context_tokens` the server has a real
context: any request whose prompt (4 characters a token) plus ``max_tokens`` exceeds it gets
the ``context`` error, every time. The server counts requests (`hits`), tracks
the most requests in flight at once
(`max_in_flight`), can add a fixed `latency` to every reply, and keeps every request body
(`bodies`). `ServerProcess` runs one in a child process (for timings: a server in the
client's process shares its GIL); ``python tests/openai_server.py --tasks arithmetic:50``
serves one from the command line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Completion = dict[str, Any]
"""What a responder returns: ``text``, optional ``tokens``, ``logprobs`` and
``token_bytes`` (lists of the same length), ``prompt_tokens``, ``completion_tokens``."""
Responder = Callable[[Mapping[str, Any]], Completion]

RATE_FAULTS = (
    "429",
    "500",
    "hang",
    "drop",
    "disconnect",
    "truncated",
    "empty_choices",
    "context",
)
"""The fault kinds a `fault_rate` draws from, by default."""

_BLOCK_RE = re.compile(r"(<solution agent=\d+ untrusted>\n)(.*?)(\n</solution>)", re.DOTALL)
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def answers_only(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`messages` with each quoted solution reduced to its final answer (the last
    ``\\boxed{}``, else the last line): what is left when quoted reasoning is cut."""

    def reduce(match: re.Match[str]) -> str:
        body = match.group(2)
        boxed = _BOXED_RE.findall(body)
        kept = boxed[-1] if boxed else (body.strip().splitlines() or [""])[-1]
        return f"{match.group(1)}{kept}{match.group(3)}"

    return [{**m, "content": _BLOCK_RE.sub(reduce, str(m.get("content", "")))} for m in messages]


def _digest(*parts: Any) -> int:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little")


def _pseudo_tokens(text: str) -> list[str]:
    """Whitespace-preserving chunks (a word with its leading space, or a symbol run)."""
    return re.findall(r"\s*\w+|\s*[^\w\s]+|\s+", text)


class ScriptedResponder:
    """Deterministic replies: the same request (messages + seed) always gets the same text.

    Args:
        answers: question text -> gold answer (the text of `Task.question`).
        accuracy: chance that a solve/refine reply carries the gold answer.
        logprobs: whether replies carry per-token log-probs.
        answers_only: read quoted solutions by their final answers only (`answers_only`),
            so that a prompt whose quoted reasoning was cut to fit a context gets the same
            reply (text and usage) as the whole prompt: for the fault tests, which compare
            a faulty run with a fault-free one.
    """

    def __init__(
        self,
        answers: Mapping[str, str],
        accuracy: float = 0.6,
        logprobs: bool = True,
        answers_only: bool = False,
    ) -> None:
        self.answers = dict(answers)
        self.accuracy = accuracy
        self.logprobs = logprobs
        self.answers_only = answers_only

    def __call__(self, body: Mapping[str, Any]) -> Completion:
        messages = answers_only(body["messages"]) if self.answers_only else body["messages"]
        system, user = messages[0]["content"], messages[-1]["content"]
        h = _digest(messages, body.get("seed"), body.get("model"))
        u = (h % 10_000) / 10_000
        if "grader" in system:
            p = 30 + h % 61
            text = f"The steps check out as far as I can see.\nP(CORRECT): {p}"
        else:
            gold = self._gold(user)
            if gold is None:
                answer = "unknown"
            elif u < self.accuracy:
                answer = gold
            else:
                answer = _wrong(gold, h)
            conf = 50 + (h >> 8) % 50
            steps = 1 + (h >> 16) % 4
            lines = [f"Step {i + 1}: work on the problem." for i in range(steps)]
            text = "\n".join(
                [
                    *lines,
                    f"\\boxed{{{answer}}}",
                    f"STEPS: {steps}",
                    f"OPERATORS: {1 + (h >> 20) % 5}",
                    f"CONFIDENCE: {conf}",
                ]
            )
        tokens = _pseudo_tokens(text)
        out: Completion = {
            "text": text,
            "tokens": tokens,
            "prompt_tokens": sum(len(m["content"]) for m in messages) // 4,
            "completion_tokens": len(tokens),
        }
        if self.logprobs:
            out["logprobs"] = [
                -(((_digest(h, i) % 1000) / 1000.0) ** 2) for i in range(len(tokens))
            ]
        return out

    def _gold(self, user: str) -> str | None:
        for question, gold in self.answers.items():
            if question in user:
                return gold
        return None


def _wrong(gold: str, h: int) -> str:
    try:
        return str(int(gold) + 1 + (h >> 32) % 3)
    except ValueError:
        return f"{gold}x"


class ModelResponder:
    """Replies generated by a local ``transformers`` causal LM (CPU, one request at a time).

    Sampling follows the request's ``temperature``, ``top_p``, ``max_tokens`` (capped at
    `max_new_tokens`) and ``seed``; per-token log-probs of the sampled tokens come along.
    """

    def __init__(self, model_dir: str | Path, max_new_tokens: int = 24) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agents.prompts import render_chat

        self._torch, self._render = torch, render_chat
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()  # generate() is not meant to run concurrently

    def __call__(self, body: Mapping[str, Any]) -> Completion:
        torch, tok = self._torch, self.tokenizer
        prompt = self._render(body["messages"], tok)
        ids = tok(prompt, return_tensors="pt").input_ids
        temperature = float(body.get("temperature", 1.0))
        n_new = min(int(body.get("max_tokens") or self.max_new_tokens), self.max_new_tokens)
        with self._lock, torch.no_grad():
            torch.manual_seed(int(body.get("seed") or 0))
            kwargs: dict[str, Any] = {"do_sample": temperature > 0}
            if temperature > 0:
                kwargs.update(temperature=temperature, top_p=float(body.get("top_p", 1.0)))
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n_new,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
                **kwargs,
            )
        new = out.sequences[0, ids.shape[1] :].tolist()
        logprobs = [
            float(torch.log_softmax(score[0].float(), -1)[t]) for score, t in zip(out.scores, new)
        ]
        # Each token's text as what it adds to the decoded prefix, so that the tokens spell
        # the completion whatever the tokenizer (byte-level or sentencepiece).
        texts = [tok.decode(new[:k], skip_special_tokens=True) for k in range(len(new) + 1)]
        pieces = [b[len(a) :] for a, b in zip(texts, texts[1:])]
        return {
            "text": texts[-1],
            "tokens": pieces,
            "logprobs": [lp if math.isfinite(lp) else -100.0 for lp in logprobs],
            "prompt_tokens": int(ids.shape[1]),
            "completion_tokens": len(new),
        }


class OpenAIServer:
    """A threaded OpenAI-compatible server on ``127.0.0.1:<free port>``.

    Use as a context manager or call `start` / `stop`. `url` is the ``base_url`` a client
    takes (``http://127.0.0.1:PORT/v1``).
    """

    def __init__(
        self,
        responder: Responder,
        *,
        latency: float = 0.0,
        retry_after: str = "0",
        hang_s: float = 2.0,
        model_name: str = "tiny",
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = RATE_FAULTS,
        fault_seed: int = 0,
        context_tokens: int | None = None,
    ) -> None:
        self.responder = responder
        self.context_tokens = context_tokens
        """A context size: a request whose prompt (4 characters a token) plus
        ``max_tokens`` exceeds it gets the ``context`` error (not counted as a fault)."""
        self.latency = latency
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.model_name = model_name
        self.faults: deque[str] = deque()
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self._rng = random.Random(fault_seed)
        self.injected: Counter[str] = Counter()
        """Faults served, by kind (``ok`` and ``no_usage`` are not faults)."""
        self._context_given: set[int] = set()
        self.hits = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> OpenAIServer:
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self._httpd = _HTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counts(self) -> None:
        with self._lock:
            self.hits = 0
            self.max_in_flight = 0
            self.bodies.clear()
            self.headers.clear()
            self.injected.clear()

    # ------------------------------------------------------------------ per request
    def _enter(self, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        with self._lock:
            self.hits += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.bodies.append(body)
            self.headers.append(headers)
            fault = self.faults.popleft() if self.faults else self._draw(body)
            if fault is not None and fault not in ("ok", "no_usage"):
                self.injected[fault] += 1
            return fault

    def _draw(self, body: Mapping[str, Any]) -> str | None:
        """A fault at `fault_rate` (caller holds the lock); context errors once per request."""
        if not self.fault_rate or self._rng.random() >= self.fault_rate:
            return None
        fault = self._rng.choice(self.fault_kinds)
        if fault == "context":
            # The request without what a client may cut or lower to fit.
            ident = _digest(answers_only(body["messages"]), body.get("seed"), body.get("model"))
            if ident in self._context_given:
                return None
            self._context_given.add(ident)
        return fault

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reply(self, body: Mapping[str, Any], usage: bool = True) -> dict[str, Any]:
        completion = self.responder(body)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": completion["text"]},
            "finish_reason": "stop",
            "logprobs": None,
        }
        if body.get("logprobs") and completion.get("logprobs") is not None:
            choice["logprobs"] = {
                "content": [
                    {"token": t, "logprob": lp, "bytes": b, "top_logprobs": []}
                    for t, lp, b in zip(
                        completion["tokens"],
                        completion["logprobs"],
                        completion.get("token_bytes")
                        or [list(t.encode()) for t in completion["tokens"]],
                    )
                ]
            }
        out: dict[str, Any] = {
            "id": f"chatcmpl-{self.hits}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model_name),
            "choices": [choice],
        }
        if usage:
            p, c = completion["prompt_tokens"], completion["completion_tokens"]
            out["usage"] = {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        return out


def _request_tokens(body: Mapping[str, Any]) -> tuple[int, int]:
    """A request's prompt tokens (about 4 characters each) and its ``max_tokens``."""
    prompt = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4
    return prompt, int(body.get("max_tokens") or 16)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connections of a concurrent burst

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) resets the connection: not a server error.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    # Headers and body go out as separate writes; without TCP_NODELAY the body waits for
    # the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    server_ref: OpenAIServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: bytes, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, obj: Any, headers: Sequence[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _context_error(self, prompt: int, completion: int, context: int) -> None:
        message = (
            f"This model's maximum context length is {context} tokens. However, you "
            f"requested {prompt + completion} tokens ({prompt} in the messages, "
            f"{completion} in the completion). Please reduce the length of the "
            "messages or completion."
        )
        body = {"object": "error", "message": message, "type": "BadRequestError", "code": 400}
        self._json(400, body)

    def do_GET(self) -> None:
        srv = self.server_ref
        path = self.path.rstrip("/")
        if path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": srv.model_name, "object": "model"}]})
        elif path == "/_stats":  # for a server in another process (`ServerProcess`)
            self._json(
                200,
                {
                    "hits": srv.hits,
                    "max_in_flight": srv.max_in_flight,
                    "injected": dict(srv.injected),
                },
            )
        elif path == "/_reset":
            srv.reset_counts()
            self._json(200, {})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        srv = self.server_ref
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._json(400, {"error": {"message": "request body is not JSON"}})
            return
        fault = srv._enter(body, dict(self.headers.items()))
        try:
            if srv.latency:
                srv._stopping.wait(srv.latency)
            self._serve(srv, body, fault)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing to answer
        except Exception as err:  # a responder bug: say so, as a real server would
            self._json(500, {"error": {"message": f"{type(err).__name__}: {err}"}})
        finally:
            srv._leave()

    def _serve(self, srv: OpenAIServer, body: dict[str, Any], fault: str | None) -> None:
        if fault == "429":
            self._json(
                429,
                {"error": {"message": "rate limited", "type": "rate_limit"}},
                [("Retry-After", srv.retry_after)],
            )
        elif fault is not None and fault.isdigit():
            self._json(int(fault), {"error": {"message": f"injected {fault}", "code": int(fault)}})
        elif fault == "hang":
            srv._stopping.wait(srv.hang_s)
            self._json(200, srv.reply(body))
        elif fault == "drop":
            payload = json.dumps(srv.reply(body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif fault == "disconnect":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "truncated":
            payload = json.dumps(srv.reply(body)).encode()
            self._send(200, payload[: len(payload) // 2])
        elif fault == "empty_choices":
            self._json(200, {**srv.reply(body), "choices": []})
        elif fault == "context":
            prompt, completion = _request_tokens(body)
            self._context_error(prompt, completion, prompt + completion - max(1, prompt // 4))
        elif srv.context_tokens is not None and sum(_request_tokens(body)) > srv.context_tokens:
            self._context_error(*_request_tokens(body), srv.context_tokens)
        elif fault == "garbage":
            self._send(200, b'{"choices": [ this is not json')
        elif fault == "no_usage":
            self._json(200, srv.reply(body, usage=False))
        elif fault is None or fault == "ok":
            self._json(200, srv.reply(body))
        else:
            raise ValueError(f"unknown fault {fault!r}")


class ServerProcess:
    """An `OpenAIServer` with a `ScriptedResponder` in a child process.

    For timing: a server in the client's own process shares its GIL, and its threads slow
    the client down. `hits` and `max_in_flight` are read over HTTP.

    Args:
        tasks: a `deliberation_env.tasks.load_tasks` spec; the responder knows their answers.
        latency: seconds added to every reply.
        accuracy: the responder's accuracy.
        fault_rate, fault_seed, fault_kinds, hang_s, retry_after: fault injection
            (`OpenAIServer`).
        answers_only: the responder's `ScriptedResponder` option.
    """

    def __init__(
        self,
        tasks: str,
        latency: float = 0.0,
        accuracy: float = 0.6,
        *,
        fault_rate: float = 0.0,
        fault_seed: int = 0,
        fault_kinds: Sequence[str] = RATE_FAULTS,
        hang_s: float = 2.0,
        retry_after: str = "0",
        answers_only: bool = False,
    ) -> None:
        self.args = ["--tasks", tasks, "--latency", str(latency), "--accuracy", str(accuracy)]
        self.args += ["--fault-rate", str(fault_rate), "--fault-seed", str(fault_seed)]
        self.args += ["--fault-kinds", ",".join(fault_kinds)]
        self.args += ["--hang-s", str(hang_s), "--retry-after", retry_after]
        self.args += ["--answers-only"] if answers_only else []
        self.url = ""
        self._proc: Any = None

    def __enter__(self) -> ServerProcess:
        repo = Path(__file__).resolve().parents[1]
        self._proc = subprocess.Popen(
            [sys.executable, __file__, *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(repo)},
        )
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.__exit__()
            raise RuntimeError(f"the server process did not start (it printed {line!r})")
        self.url = line
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.stdin.close()  # the child exits when its stdin closes
            self._proc.wait(10)

    def _get(self, route: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + route, timeout=10) as r:
            return json.loads(r.read())

    @property
    def hits(self) -> int:
        return self._get("/_stats")["hits"]

    @property
    def max_in_flight(self) -> int:
        return self._get("/_stats")["max_in_flight"]

    @property
    def injected(self) -> Counter[str]:
        return Counter(self._get("/_stats")["injected"])

    def reset_counts(self) -> None:
        self._get("/_reset")


def main() -> None:
    """``python tests/openai_server.py --tasks arithmetic:50``: serve until stdin closes."""
    import argparse

    from deliberation_env.tasks import load_tasks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="arithmetic:50", help="a load_tasks spec")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per reply")
    parser.add_argument("--accuracy", type=float, default=0.6)
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of faulty replies")
    parser.add_argument("--fault-seed", type=int, default=0)
    parser.add_argument("--fault-kinds", default=",".join(RATE_FAULTS), help="comma-separated")
    parser.add_argument("--hang-s", type=float, default=2.0, help="seconds a 'hang' lasts")
    parser.add_argument("--retry-after", default="0", help="Retry-After of a 429")
    parser.add_argument("--answers-only", action="store_true", help="see ScriptedResponder")
    args = parser.parse_args()
    answers = {t.question.strip(): t.answer for t in load_tasks(args.tasks)}
    responder = ScriptedResponder(answers, args.accuracy, answers_only=args.answers_only)
    with OpenAIServer(
        responder,
        latency=args.latency,
        retry_after=args.retry_after,
        hang_s=args.hang_s,
        fault_rate=args.fault_rate,
        fault_seed=args.fault_seed,
        fault_kinds=args.fault_kinds.split(","),
    ) as srv:
        print(srv.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
