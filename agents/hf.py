"""`HFBackend`: a local Hugging Face causal LM as a deliberation backend (`transformers`).

Every request of a round goes into left-padded, batched ``model.generate`` calls (prompts
sorted by length, `batch_size` at a time). The env sees one `Solution` per request. Each
row samples with its own seed, so a request's text depends only on its prompt and seed,
not on its batch, and the log-prob of every generated token is recorded for the answer's
log-prob confidence: how, in `agents.hf_generation`.

Judge. With ``judge=True`` a second greedy pass shows each solution to the same model with
`agents.prompts.judge_messages` and reads ``P(CORRECT): n``; its tokens are added to the
solution's token counts. Without it (the default) the judge confidence is the verbalised
confidence (0.5 when the completion reports none): cheap, and honest about carrying no
extra signal.

Tokens: `prompt_tokens` is the length of the tokenized prompt; `completion_tokens` counts
the generated tokens up to and including the end-of-sequence token (all `max_new_tokens`
when there is none).

Context window. The context size is read from the model config (``n_positions``,
``max_position_embeddings``, ``n_ctx``, ``seq_length``; else the tokenizer's
``model_max_length``; `context_length` overrides it). A refine or judge prompt that leaves
less than `max_new_tokens` of room is rendered again with every quoted solution cut to the
longest tail that fits (`agents.prompts.fit_messages`: the end of the reasoning and the final
answer are kept, the cut marked ``[...]``). When even the answers-only prompt leaves too
little room, the reply budget of that request is lowered to what is left (requests with
equal budgets are batched together, so a request's text still depends on its prompt and
seed only); when fewer than `agents.prompts.MIN_REPLY_TOKENS` would be left (a question too
long for the model), `agents.prompts.ContextWindowError` says so. A prompt that fits is
sent exactly as before.

Loading: ``model`` is a local path or a hub id; with ``HF_HUB_OFFLINE=1`` (or
``TRANSFORMERS_OFFLINE=1``) only local files are used. The backend pickles without its
weights (``__getstate__``) and reloads them from `model` on first use after unpickling.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import transformers
from packaging.version import Version
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from agents import hf_generation
from agents.cache import cached_batch, open_cache, prompt_version
from agents.hf_generation import Generation, SeededSampler
from agents.parsing import solution_from_text
from agents.prompts import (
    MAX_SOLUTION_CHARS,
    MIN_REPLY_TOKENS,
    ContextWindowError,
    Message,
    fit_messages,
    judge_messages,
    longest_text,
    refine_messages,
    render_chat,
)
from agents.text_backend import check_int, check_sampling, request_messages, with_judge
from agents.verifier import ClassifierVerifier, score_solutions, verifier_groups
from deliberation_env.protocol import RefineRequest, Solution, SolveRequest
from deliberation_env.tasks.task import Task

__all__ = ["Generation", "HFBackend", "SeededSampler"]

_TRUE = ("1", "true", "yes", "on")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length")
"""Model config fields that hold the context size, in the order they are read."""
_NO_LIMIT = 10**8
"""A tokenizer ``model_max_length`` at or above this is transformers' "unset" sentinel."""


# transformers 4.56 renamed from_pretrained's `torch_dtype` to `dtype` (the old name warns).
_DTYPE_KWARG = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


class HFBackend:
    """A local causal LM (implements `deliberation_env.protocol.Backend`).

    Args:
        model: a local folder (``save_pretrained`` layout) or a hub id.
        max_new_tokens: generation limit per solution.
        temperature: sampling temperature; 0 is greedy. Default 0.7, a common setting
            for multi-agent debate so agents differ.
        top_p: nucleus sampling mass (1.0 = off).
        batch_size: rows per ``generate`` call.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:0"`` ...
        dtype: ``"auto"`` (float32 on CPU, bfloat16 on CUDA), ``"float32"``,
            ``"float16"``, ``"bfloat16"`` or a ``torch.dtype``.
        judge: run the judge pass (see the module docstring).
        judge_max_new_tokens: generation limit of a judge reply.
        max_solution_chars: quoted solutions are cut to this many characters.
        trust_remote_code: passed to ``from_pretrained``.
        cache: a path or `agents.cache.ResponseCache`: record completions and replay them.
        context_length: the model's context in tokens (prompt + reply); None reads it
            from the model config (see the module docstring).
        verifier: a sequence-classification / reward model (folder or hub id) that scores
            every solution (`agents.verifier.ClassifierVerifier`; H8); None: no verifier.
    """

    def __init__(
        self,
        model: str,
        *,
        max_new_tokens: int = 512,
        temperature: float = 0.7,
        top_p: float = 1.0,
        batch_size: int = 16,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        judge: bool = False,
        judge_max_new_tokens: int = 128,
        max_solution_chars: int = MAX_SOLUTION_CHARS,
        trust_remote_code: bool = False,
        cache: Any = None,
        context_length: int | None = None,
        verifier: str | None = None,
    ) -> None:
        if context_length is not None:
            check_int("context_length", context_length, 1)
        for name, value in (
            ("max_new_tokens", max_new_tokens),
            ("batch_size", batch_size),
            ("judge_max_new_tokens", judge_max_new_tokens),
        ):
            check_int(name, value, 1)
        check_sampling(temperature, top_p)
        if isinstance(dtype, str) and dtype != "auto" and dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} is not 'auto' or one of {sorted(_DTYPES)}")
        self.model_name = str(model)
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.judge = judge
        self.judge_max_new_tokens = judge_max_new_tokens
        self.max_solution_chars = max_solution_chars
        self.trust_remote_code = trust_remote_code
        self.cache = open_cache(cache, model=self.model_name, prompts=prompt_version())
        self.context_length = context_length
        self._context: int | None = context_length
        self._model: Any = None
        self._tokenizer: Any = None
        self._load()  # a wrong path or missing weights fail here, when the env is built
        self.verifier = ClassifierVerifier(verifier, device=device) if verifier else None
        self.observation_groups = verifier_groups(self.verifier)

    def __repr__(self) -> str:
        return (
            f"HFBackend(model={self.model_name!r}, temperature={self.temperature}, "
            f"max_new_tokens={self.max_new_tokens}, judge={self.judge})"
        )

    # ------------------------------------------------------------------ loading
    def _resolve_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def _resolve_dtype(self, device: torch.device) -> torch.dtype:
        if isinstance(self.dtype, torch.dtype):
            return self.dtype
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return _DTYPES[self.dtype]

    def _load(self) -> None:
        device = self._resolve_device()
        kwargs = {"local_files_only": _offline(), "trust_remote_code": self.trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_name, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                self.model_name, **{_DTYPE_KWARG: self._resolve_dtype(device)}, **kwargs
            )
        # transformers 4.56-4.57 raise HFValidationError (a ValueError) for a missing folder.
        except (OSError, ValueError) as err:
            hint = (
                " (HF_HUB_OFFLINE is set: only local files are used; download the model "
                "first or pass a local folder)"
                if _offline()
                else ""
            )
            raise OSError(f"HFBackend: cannot load model {self.model_name!r}{hint}: {err}") from err
        # transformers types `.to` of a loaded model as taking a model; it takes a device.
        model.to(device).eval()  # type: ignore[arg-type]
        self._eos = self._eos_ids(model, tokenizer)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos[0]
        self._has_template = bool(getattr(tokenizer, "chat_template", None))
        self._context = self.context_length or _context_size(model.config, tokenizer)
        self._model, self._tokenizer = model, tokenizer

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
        ids = model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
            ids.append(tokenizer.eos_token_id)
        if not ids:
            raise ValueError(
                f"model {model.name_or_path!r} defines no end-of-sequence token "
                "(generation_config.eos_token_id and tokenizer.eos_token are both unset)"
            )
        return ids

    @property
    def model(self) -> Any:
        if self._model is None:
            self._load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_model"] = state["_tokenizer"] = None
        return state

    def close(self) -> None:
        """Free the weights (a later call reloads them)."""
        on_cuda = self._model is not None and self._model.device.type == "cuda"
        self._model = self._tokenizer = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ Backend
    def solve(self, requests: Sequence[SolveRequest]) -> list[Solution]:
        return self._answer(requests)

    def refine(self, requests: Sequence[RefineRequest]) -> list[Solution]:
        return self._answer(requests)

    def _answer(self, requests: Sequence[SolveRequest | RefineRequest]) -> list[Solution]:
        if not requests:
            return []
        prompts = [self._prompt(r) for r in requests]
        gens = self.generate(prompts, [r.seed for r in requests])
        solutions = [self.build_solution(r.task.kind, g) for r, g in zip(requests, gens)]
        if self.judge:
            solutions = self._judge([r.task for r in requests], solutions)
        return score_solutions(self.verifier, requests, solutions)

    def _judge(self, tasks: Sequence[Task], solutions: list[Solution]) -> list[Solution]:
        prompts = [
            self._fitted(
                functools.partial(judge_messages, t, s, self.max_solution_chars),
                longest_text([s]),
                self.judge_max_new_tokens,
                f"the judge prompt of task {t.id!r}",
            )
            for t, s in zip(tasks, solutions)
        ]
        gens = self.generate(
            prompts, [0] * len(prompts), max_new_tokens=self.judge_max_new_tokens, temperature=0
        )
        return [
            with_judge(s, g.text, g.prompt_tokens, g.completion_tokens)
            for s, g in zip(solutions, gens)
        ]

    # ------------------------------------------------------------------ context window
    @property
    def context_size(self) -> int | None:
        """Tokens the model attends to (prompt + reply); None when unknown (no limit)."""
        if self._model is None:
            self._load()
        return self._context

    def count_tokens(self, prompt: str) -> int:
        """Tokens of a rendered prompt, as `generate` encodes it."""
        return len(self.tokenizer(prompt, add_special_tokens=not self._has_template)["input_ids"])

    def _prompt(self, r: SolveRequest | RefineRequest) -> str:
        """The rendered prompt of `r`, its quoted solutions cut when the context needs it."""
        what = f"the prompt of task {r.task.id!r}"
        if isinstance(r, RefineRequest):
            return self._fitted(
                lambda keep: refine_messages(
                    r.task, r.agent, r.own, r.peers, self.max_solution_chars, keep
                ),
                longest_text([r.own, *r.peers]),
                self.max_new_tokens,
                what,
            )
        return self._fitted(
            lambda keep: request_messages(r, self.max_solution_chars), 0, self.max_new_tokens, what
        )

    def _fitted(
        self, build: Callable[[int | None], list[Message]], longest: int, max_new: int, what: str
    ) -> str:
        """``render(build(keep))`` with quoted solutions cut (keep) to leave `max_new`
        tokens of room; checks that at least `MIN_REPLY_TOKENS` (or `max_new`) remain."""
        context = self.context_size
        if context is None:
            return self.render(build(None))
        room = context - max_new
        messages, _ = fit_messages(
            build, lambda m: self.count_tokens(self.render(m)) <= room, longest
        )
        prompt = self.render(messages)
        left = context - self.count_tokens(prompt)
        if left < min(max_new, MIN_REPLY_TOKENS):
            raise ContextWindowError(
                f"{what} takes {context - left} tokens"
                f"{' with every quoted solution cut to its final answer' if longest else ''}"
                f", but {self.model_name!r} has a context of {context} tokens: that leaves "
                f"{max(left, 0)} for the reply (at least {min(max_new, MIN_REPLY_TOKENS)} "
                "needed). Use a model with a longer context or shorter questions "
                "(context_length= overrides a wrong config value)"
            )
        return prompt

    # ------------------------------------------------------------------ building blocks
    def render(self, messages: Sequence[Message]) -> str:
        """The prompt string of chat `messages` (the model's chat template, if any)."""
        return render_chat(messages, self.tokenizer)

    def build_solution(self, kind: str, gen: Generation) -> Solution:
        """A `Solution` from a completion: parsed answer and self-report, log-prob confidence."""
        return solution_from_text(
            gen.text,
            kind,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            logprob_confidence=self.answer_confidence(kind, gen),
        )

    def answer_confidence(self, kind: str, gen: Generation) -> float | None:
        """exp(mean log-prob) of the answer's tokens, else of the whole completion, in [0, 1]."""
        return hf_generation.answer_confidence(kind, gen, self._decoded_length)

    def _decoded_length(self, ids: Sequence[int]) -> int:
        return len(
            self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        return hf_generation.neutral_generation_config(max_new_tokens, self._eos, self._pad)

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        batch_size: int | None = None,
    ) -> list[Generation]:
        """Complete every prompt (rendered strings), `batch_size` rows per ``generate`` call.

        Prompts are sorted by length so batches pad little; each row samples with its own
        seed, so the result of a prompt does not depend on the others. A prompt too long
        to leave `max_new_tokens` within the context gets what is left (rows of equal
        budgets share batches); one that leaves none raises `ContextWindowError`.
        """
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        max_new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        temp = self.temperature if temperature is None else temperature
        size = self.batch_size if batch_size is None else batch_size
        budgets = self._budgets(prompts, max_new)
        if self.cache is None:
            return self._generate_uncached(prompts, seeds, budgets, temp, size)
        # Only the misses are generated (in one batched pass); fresh and replayed
        # completions both come back through JSON, so a replay is bit-identical.
        fields = [
            {"backend": "hf", "model": self.model_name, "prompt": p, "seed": int(seed),
             "max_new_tokens": budget, "temperature": temp, "top_p": self.top_p}
            for p, seed, budget in zip(prompts, seeds, budgets)
        ]  # fmt: skip
        dicts = cached_batch(
            self.cache,
            fields,
            lambda idx: [
                dataclasses.asdict(g)
                for g in self._generate_uncached(
                    [prompts[i] for i in idx],
                    [seeds[i] for i in idx],
                    [budgets[i] for i in idx],
                    temp,
                    size,
                )
            ],
        )
        return [
            Generation(d["text"], tuple(d["token_ids"]), tuple(d["token_logprobs"]),
                       d["prompt_tokens"], d["finished"])
            for d in dicts
        ]  # fmt: skip

    def _budgets(self, prompts: Sequence[str], max_new: int) -> list[int]:
        """Each prompt's reply budget: `max_new`, or what the context leaves of it."""
        context = self.context_size
        if context is None:
            return [max_new] * len(prompts)
        budgets = []
        for prompt in prompts:
            n = self.count_tokens(prompt)
            if n >= context:
                raise ContextWindowError(
                    f"a prompt of {n} tokens leaves no room for a reply in the {context}-token "
                    f"context of {self.model_name!r}: shorten it"
                )
            budgets.append(min(max_new, context - n))
        return budgets

    def _generate_uncached(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        budgets: Sequence[int],
        temp: float,
        size: int,
    ) -> list[Generation]:
        encoded = self.tokenizer(list(prompts), add_special_tokens=not self._has_template)[
            "input_ids"
        ]
        # Longest budget first, then shortest prompt: a batch holds one budget, so each
        # row's positions stay inside the context (finished rows keep stepping until the
        # batch ends) and no row's length depends on its batch.
        order = sorted(range(len(prompts)), key=lambda i: (-budgets[i], len(encoded[i])))
        out: list[Generation | None] = [None] * len(prompts)
        for _, group in itertools.groupby(order, key=lambda i: budgets[i]):
            same = list(group)
            for start in range(0, len(same), size):
                rows = same[start : start + size]
                sampler = SeededSampler([seeds[i] for i in rows], temp, self.top_p)
                gens = hf_generation.generate_batch(
                    self.model,
                    self.tokenizer,
                    [encoded[i] for i in rows],
                    sampler,
                    self._generation_config(budgets[rows[0]]),
                    self._eos,
                    self._pad,
                )
                for i, gen in zip(rows, gens):
                    out[i] = gen
        return cast("list[Generation]", out)  # every row is in one batch


def _context_size(config: Any, tokenizer: Any) -> int | None:
    """The context size a model config (else its tokenizer) declares; None if neither does."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in _CONTEXT_KEYS:
        value = getattr(text_config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _NO_LIMIT:
        return limit
    return None
