"""A real OpenAI-compatible HTTP server on 127.0.0.1 for the backend tests and benchmark.

`OpenAIServer` serves ``POST /v1/chat/completions`` (and ``GET /v1/models``) from a
`ThreadingHTTPServer` bound to a free loopback port. Replies come from a *responder*:
`ScriptedResponder` (deterministic text from the request: the task's gold answer or a wrong
one, chosen by a hash of the request and its seed) or `ModelResponder` (``transformers``
generation on a local model folder, e.g. the tiny random-weight model of
``tests/tiny_model.py``). Fault injection for the retry tests: queue fault names in
`OpenAIServer.faults`; each request takes the next one:

============  =========================================================================
fault         what the server does
============  =========================================================================
``429``       HTTP 429 with ``Retry-After: <retry_after>``
``500``       HTTP 500 (any ``"5xx"``/``"4xx"`` code string works the same way)
``hang``      sleeps `hang_s` seconds before answering (past the client's timeout)
``drop``      sends the headers and half the body, then closes the socket
``garbage``   HTTP 200 with a body that is not JSON
``no_usage``  a normal reply without the ``usage`` field
``ok``        a normal reply (to place a fault after some good requests)
============  =========================================================================

The server counts requests (`hits`), tracks the most requests in flight at once
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
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Completion = dict[str, Any]
"""What a responder returns: ``text``, optional ``tokens``, ``logprobs`` and
``token_bytes`` (lists of the same length), ``prompt_tokens``, ``completion_tokens``."""
Responder = Callable[[Mapping[str, Any]], Completion]


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
    """

    def __init__(
        self, answers: Mapping[str, str], accuracy: float = 0.6, logprobs: bool = True
    ) -> None:
        self.answers = dict(answers)
        self.accuracy = accuracy
        self.logprobs = logprobs

    def __call__(self, body: Mapping[str, Any]) -> Completion:
        messages = body["messages"]
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
    ) -> None:
        self.responder = responder
        self.latency = latency
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.model_name = model_name
        self.faults: deque[str] = deque()
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

    # ------------------------------------------------------------------ per request
    def _enter(self, body: dict[str, Any], headers: dict[str, str]) -> str | None:
        with self._lock:
            self.hits += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.bodies.append(body)
            self.headers.append(headers)
            return self.faults.popleft() if self.faults else None

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


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connections of a concurrent burst


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

    def do_GET(self) -> None:
        srv = self.server_ref
        path = self.path.rstrip("/")
        if path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": srv.model_name, "object": "model"}]})
        elif path == "/_stats":  # for a server in another process (`ServerProcess`)
            self._json(200, {"hits": srv.hits, "max_in_flight": srv.max_in_flight})
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
    """

    def __init__(self, tasks: str, latency: float = 0.0, accuracy: float = 0.6) -> None:
        self.args = ["--tasks", tasks, "--latency", str(latency), "--accuracy", str(accuracy)]
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
    args = parser.parse_args()
    answers = {t.question.strip(): t.answer for t in load_tasks(args.tasks)}
    with OpenAIServer(ScriptedResponder(answers, args.accuracy), latency=args.latency) as srv:
        print(srv.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
