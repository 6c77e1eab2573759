"""Verifiers: models that score how likely each solution is to be correct, for the optional
``"verifier"`` observation group (`Solution.verifier_score`, `deliberation_env.observation`).

What a verifier adds is a correctness signal stronger than the agents' own (their judge
confidence has AUROC ~0.62): the axis along which a meta-policy's headroom grows
(``docs/simulator.md``). Two kinds, one per real backend:

- `ClassifierVerifier` (``HFBackend(verifier=PATH_OR_ID)``): a sequence-classification or
  reward model through ``transformers``. The input is the problem and the solution, as a
  chat (user: problem, assistant: solution) when the tokenizer has a chat template (reward
  models are trained on those), else as a text pair (cross-encoders). The score is
  ``sigmoid(logit)`` for a one-logit head (a reward model), else the softmax probability of
  the last label (by convention ``1 = correct``).
- `JudgeVerifier` (``OpenAIBackend(verifier_model=NAME)``): a judge model served by the
  backend's endpoints, asked greedily with `agents.prompts.judge_messages`; its
  ``P(CORRECT)`` is the score (0.5, no information, when the reply has none). Its requests go
  through the backend's transport, so they are retried, load-balanced and cached alike.

Verifier calls are not counted in the agents' tokens (``token_cost`` prices deliberation;
a verifier's cost depends on what serves it). The simulator's verifier is
`agents.simulated.SimulatedBackend` with a ``.../verifier`` profile.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any, Protocol

from deliberation_env.protocol import RefineRequest, Solution, SolveRequest
from deliberation_env.tasks.task import Task

Request = SolveRequest | RefineRequest

GROUPS = frozenset({"verifier"})
"""The observation groups a backend with a verifier fills."""

UNREADABLE = 0.5
"""The score of a judge reply without a readable ``P(CORRECT)``: no information."""


class Verifier(Protocol):
    """Scores a batch of solutions (one per request) with values in [0, 1]."""

    def scores(
        self, requests: Sequence[Request], solutions: Sequence[Solution], backend: Any
    ) -> list[float]: ...


def verifier_groups(verifier: Verifier | None) -> frozenset[str]:
    """The observation groups of a backend with `verifier` (none without one)."""
    return GROUPS if verifier is not None else frozenset()


def score_solutions(
    verifier: Verifier | None,
    requests: Sequence[Request],
    solutions: list[Solution],
    backend: Any = None,
) -> list[Solution]:
    """`solutions` with their `verifier_score` set by `verifier` (unchanged without one)."""
    if verifier is None or not solutions:
        return solutions
    values = verifier.scores(requests, solutions, backend)
    if len(values) != len(solutions):
        raise RuntimeError(
            f"{type(verifier).__name__} returned {len(values)} scores for {len(solutions)} "
            "solutions; a verifier scores every solution in order"
        )
    return [
        dataclasses.replace(s, verifier_score=min(1.0, max(0.0, float(v))))
        for s, v in zip(solutions, values)
    ]


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


class ClassifierVerifier:
    """A sequence-classification / reward model as a verifier (see the module docstring).

    Args:
        model: a local folder (``save_pretrained`` layout) or a hub id; with
            ``HF_HUB_OFFLINE=1`` only local files are used.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:0"`` ...
        batch_size: solutions per forward pass.
        max_length: inputs are truncated to this many tokens.
        trust_remote_code: passed to ``from_pretrained``.

    Pickles without its weights and reloads them on first use (as `agents.hf.HFBackend`).
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        batch_size: int = 16,
        max_length: int = 2048,
        trust_remote_code: bool = False,
    ) -> None:
        if batch_size < 1 or max_length < 1:
            raise ValueError(
                f"batch_size and max_length must be >= 1, got {batch_size} and {max_length}"
            )
        self.model_name = str(model)
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
        self._model: Any = None
        self._tokenizer: Any = None
        self._load()  # a wrong path fails when the backend is built

    def __repr__(self) -> str:
        return f"ClassifierVerifier(model={self.model_name!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = state["_tokenizer"] = None
        return state

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        kw = {"local_files_only": _offline(), "trust_remote_code": self.trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_name, **kw)
            model = AutoModelForSequenceClassification.from_pretrained(self.model_name, **kw)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"verifier {self.model_name!r} could not be loaded as a sequence-classification "
                f"model ({type(err).__name__}: {err}); pass a local folder or hub id of a "
                "reward / classifier model (AutoModelForSequenceClassification)"
            ) from err
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = model.to(device).eval()
        self._tokenizer = tokenizer

    def text(self, task: Task, solution: Solution) -> str | tuple[str, str]:
        """The model's input for one solution: a rendered chat, or a (problem, solution)
        pair for a tokenizer without a chat template."""
        from agents.prompts import format_question

        problem = format_question(task)
        if getattr(self._tokenizer, "chat_template", None):
            chat = [
                {"role": "user", "content": problem},
                {"role": "assistant", "content": solution.text},
            ]
            return str(self._tokenizer.apply_chat_template(chat, tokenize=False))
        return problem, solution.text

    def scores(
        self, requests: Sequence[Request], solutions: Sequence[Solution], backend: Any = None
    ) -> list[float]:
        import torch

        if self._model is None:
            self._load()
        inputs = [self.text(r.task, s) for r, s in zip(requests, solutions)]
        out: list[float] = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            if isinstance(chunk[0], tuple):
                firsts, seconds = zip(*chunk)
                enc = self._tokenizer(
                    list(firsts), list(seconds), padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                )  # fmt: skip
            else:
                enc = self._tokenizer(
                    list(chunk), padding=True, truncation=True, max_length=self.max_length,
                    return_tensors="pt", add_special_tokens=False,
                )  # fmt: skip
            enc = {k: v.to(self._model.device) for k, v in enc.items()}
            with torch.no_grad():
                logits = self._model(**enc).logits.float()
            if logits.shape[-1] == 1:
                values = torch.sigmoid(logits[:, 0])
            else:
                values = logits.softmax(-1)[:, -1]
            out += values.cpu().tolist()
        return out


class JudgeVerifier:
    """A judge model on the OpenAI-compatible server(s) of an `agents.openai_compat.
    OpenAIBackend` as a verifier (see the module docstring).

    Args:
        model: the judge's model name on the server (it may be the agents' own model).
        max_tokens: `max_tokens` of a judge request.
    """

    def __init__(self, model: str, max_tokens: int = 256) -> None:
        if not model:
            raise ValueError("verifier_model must name a model the server serves")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.model = model
        self.max_tokens = max_tokens

    def __repr__(self) -> str:
        return f"JudgeVerifier(model={self.model!r})"

    def scores(
        self, requests: Sequence[Request], solutions: Sequence[Solution], backend: Any
    ) -> list[float]:
        from agents.cache import request_key
        from agents.parsing import parse_judge
        from agents.prompts import judge_messages

        chars = backend.max_solution_chars
        bodies = []
        for r, s in zip(requests, solutions):
            body = backend.body(judge_messages(r.task, s, chars), r.seed, self.max_tokens, 0.0)
            bodies.append({**body, "model": self.model})
        builders = [
            (functools.partial(judge_messages, r.task, s, chars), len(s.text))
            for r, s in zip(requests, solutions)
        ]
        graded = backend._complete(bodies, [request_key(b) for b in bodies], builders)
        values = [parse_judge(g["text"]) for g in graded]
        return [UNREADABLE if v is None else v for v in values]
