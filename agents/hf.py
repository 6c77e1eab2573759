"""`HFBackend`: a local Hugging Face causal LM as a deliberation backend (`transformers`).

Every request of a round goes into left-padded, batched ``model.generate`` calls (prompts
sorted by length, `batch_size` at a time). The env sees one `Solution` per request.

How sampling is seeded per request. ``generate`` draws from one global RNG for the whole
batch, so a request's text would depend on what else is in its batch. Instead a
`SeededSampler` logits processor picks every row's next token itself, from one
``torch.Generator`` per row seeded with the request's `seed`, and hands ``generate`` a
one-hot score row that greedy decoding then follows (``do_sample=False``). Each row draws
one uniform per step from its own generator and inverts the CDF of its own distribution in
vocabulary order, so a request's text depends only on its prompt and seed, not on its batch
(up to floating-point differences of padded matmuls, which flip a token only when the
uniform lands within ~1e-6 of a CDF boundary; in float32 on CPU the tests see none).
``temperature=0`` is greedy.

Answer confidence from log-probs. The same processor records, for every generated token,
its log-probability under the *raw* logits (``next_token_logits`` at temperature 1, before
any temperature/top-p): ``generate`` is given a complete `GenerationConfig` with neutral
values, so no default processor runs before ours, and a test checks the recorded values
against ``output_logits=True``. `logprob_confidence` = exp(mean log-prob of the tokens of
the answer span), the span located by `agents.parsing.parse_answer_span`; when it cannot be
located, the mean over the whole completion. This is the white-box token-probability
signal of Xiong et al. (arXiv 2306.13063).

Judge. With ``judge=True`` a second greedy pass shows each solution to the same model with
`agents.prompts.judge_messages` and reads ``P(CORRECT): n``; its tokens are added to the
solution's token counts. Without it (the default) the judge confidence is the verbalised
confidence (0.5 when the completion reports none): cheap, and honest about carrying no
extra signal.

Tokens: `prompt_tokens` is the length of the tokenized prompt; `completion_tokens` counts
the generated tokens up to and including the end-of-sequence token (all `max_new_tokens`
when there is none).

Loading: ``model`` is a local path or a hub id; with ``HF_HUB_OFFLINE=1`` (or
``TRANSFORMERS_OFFLINE=1``) only local files are used. The backend pickles without its
weights (``__getstate__``) and reloads them from `model` on first use after unpickling.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
)

from agents.cache import cached_batch, open_cache
from agents.parsing import parse_answer_span, parse_judge, solution_from_text
from agents.prompts import (
    MAX_SOLUTION_CHARS,
    Message,
    judge_messages,
    refine_messages,
    render_chat,
    solve_messages,
)
from deliberation_env.protocol import RefineRequest, Solution, SolveRequest
from deliberation_env.tasks.task import Task

__all__ = ["Generation", "HFBackend", "SeededSampler"]

_TRUE = ("1", "true", "yes", "on")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@dataclass(frozen=True)
class Generation:
    """One completion with its measurements."""

    text: str
    """Decoded completion, special tokens skipped."""
    token_ids: tuple[int, ...]
    """Generated ids, up to and including the end token."""
    token_logprobs: tuple[float, ...]
    """Log-probability of each generated token under the raw logits (temperature 1)."""
    prompt_tokens: int
    finished: bool
    """True when the model emitted an end token (False: cut at `max_new_tokens`)."""

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


class SeededSampler(LogitsProcessor):
    """Chooses each row's next token with the row's own generator; records its log-prob.

    Must be the only logits processor (it receives the raw logits and returns a one-hot
    row: ``generate`` with ``do_sample=False`` then takes exactly that token).
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float) -> None:
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.logprobs: list[torch.Tensor] = []
        """One ``[batch]`` tensor per generated position."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float()
        token = logits.argmax(-1) if self.temperature == 0 else self._sample(logits)
        logp = torch.log_softmax(logits, -1).gather(1, token[:, None])[:, 0]
        self.logprobs.append(logp.cpu())
        chosen = torch.full_like(scores, -float("inf"))
        chosen.scatter_(1, token[:, None], 0.0)
        return chosen

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.double() / self.temperature, -1)
        if self.top_p < 1.0:
            # Nucleus: keep every token at least as likely as the one that completes the
            # `top_p` mass; a threshold on probabilities keeps the vocabulary order (and
            # keeps all tokens tied at the boundary, whatever order a sort would give).
            ordered = probs.sort(-1, descending=True).values
            k = (ordered.cumsum(-1) < self.top_p).sum(-1, keepdim=True)
            threshold = ordered.gather(-1, k.clamp(max=probs.shape[-1] - 1))
            probs = torch.where(probs >= threshold, probs, 0.0)
        cdf = probs.cumsum(-1)
        u = torch.stack(
            [torch.rand((), generator=g, dtype=torch.float64) for g in self.generators]
        ).to(cdf.device)
        index = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
        return index[:, 0].clamp(max=probs.shape[-1] - 1)


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
    ) -> None:
        for name, value in (
            ("max_new_tokens", max_new_tokens),
            ("batch_size", batch_size),
            ("judge_max_new_tokens", judge_max_new_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
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
        self.cache = open_cache(cache)
        self._model: Any = None
        self._tokenizer: Any = None
        self._load()  # a wrong path or missing weights fail here, when the env is built

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
                self.model_name, dtype=self._resolve_dtype(device), **kwargs
            )
        except OSError as err:
            hint = (
                " (HF_HUB_OFFLINE is set: only local files are used; download the model "
                "first or pass a local folder)"
                if _offline()
                else ""
            )
            raise OSError(f"HFBackend: cannot load model {self.model_name!r}{hint}: {err}") from err
        model.to(device).eval()
        self._eos = self._eos_ids(model, tokenizer)
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos[0]
        self._has_template = bool(getattr(tokenizer, "chat_template", None))
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
        return self._answer(requests, [solve_messages(r.task) for r in requests])

    def refine(self, requests: Sequence[RefineRequest]) -> list[Solution]:
        messages = [
            refine_messages(r.task, r.agent, r.own, r.peers, self.max_solution_chars)
            for r in requests
        ]
        return self._answer(requests, messages)

    def _answer(
        self, requests: Sequence[SolveRequest | RefineRequest], messages: list[list[Message]]
    ) -> list[Solution]:
        if not requests:
            return []
        gens = self.generate([self.render(m) for m in messages], [r.seed for r in requests])
        solutions = [self.build_solution(r.task.kind, g) for r, g in zip(requests, gens)]
        if self.judge:
            solutions = self._judge([r.task for r in requests], solutions)
        return solutions

    def _judge(self, tasks: Sequence[Task], solutions: list[Solution]) -> list[Solution]:
        prompts = [
            self.render(judge_messages(t, s, self.max_solution_chars))
            for t, s in zip(tasks, solutions)
        ]
        gens = self.generate(
            prompts, [0] * len(prompts), max_new_tokens=self.judge_max_new_tokens, temperature=0
        )
        out = []
        for sol, gen in zip(solutions, gens):
            p = parse_judge(gen.text)
            out.append(
                dataclasses.replace(
                    sol,
                    judge_confidence=sol.self_confidence if p is None else p,
                    prompt_tokens=sol.prompt_tokens + gen.prompt_tokens,
                    completion_tokens=sol.completion_tokens + gen.completion_tokens,
                )
            )
        return out

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
        if not gen.token_logprobs:
            return None
        logprobs = gen.token_logprobs
        _, span = parse_answer_span(gen.text, kind)
        if span is not None:
            lo = self._tokens_before(gen.token_ids, span[0])
            hi = max(lo + 1, self._tokens_covering(gen.token_ids, span[1]))
            # A span the tokens do not reach (text not decoded from these ids): whole text.
            logprobs = logprobs[lo:hi] or logprobs
        mean = float(np.mean(logprobs))
        return float(min(1.0, max(0.0, np.exp(mean))))

    def _prefix_length(self, ids: Sequence[int], k: int) -> int:
        return len(
            self.tokenizer.decode(
                ids[:k], skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )

    def _tokens_before(self, ids: Sequence[int], char: int) -> int:
        """The largest k whose first k tokens decode to at most `char` characters."""
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._prefix_length(ids, mid) <= char:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _tokens_covering(self, ids: Sequence[int], char: int) -> int:
        """The smallest k whose first k tokens decode to at least `char` characters."""
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._prefix_length(ids, mid) >= char:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        # Every value that could let the model's own generation_config.json add a logits
        # processor (repetition penalty, n-gram blocking, minimum length) is set to its
        # neutral value: our sampler must see the raw logits and be the only processor.
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            temperature=1.0,
            top_p=1.0,
            top_k=50,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_length=0,
            eos_token_id=self._eos,
            pad_token_id=self._pad,
        )

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
        seed, so the result of a prompt does not depend on the others.
        """
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        max_new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        temp = self.temperature if temperature is None else temperature
        size = self.batch_size if batch_size is None else batch_size
        if self.cache is not None:
            # Only the misses are generated (in one batched pass); fresh and replayed
            # completions both come back through JSON, so a replay is bit-identical.
            fields = [
                {"backend": "hf", "model": self.model_name, "prompt": p, "seed": int(seed),
                 "max_new_tokens": max_new, "temperature": temp, "top_p": self.top_p}
                for p, seed in zip(prompts, seeds)
            ]  # fmt: skip
            dicts = cached_batch(
                self.cache,
                fields,
                lambda idx: [
                    dataclasses.asdict(g)
                    for g in self._generate_uncached(
                        [prompts[i] for i in idx], [seeds[i] for i in idx], max_new, temp, size
                    )
                ],
            )
            return [
                Generation(d["text"], tuple(d["token_ids"]), tuple(d["token_logprobs"]),
                           d["prompt_tokens"], d["finished"])
                for d in dicts
            ]  # fmt: skip
        return self._generate_uncached(prompts, seeds, max_new, temp, size)

    def _generate_uncached(
        self, prompts: Sequence[str], seeds: Sequence[int], max_new: int, temp: float, size: int
    ) -> list[Generation]:
        encoded = self.tokenizer(list(prompts), add_special_tokens=not self._has_template)[
            "input_ids"
        ]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        out: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            gens = self._generate_batch(
                [encoded[i] for i in rows], [seeds[i] for i in rows], max_new, temp
            )
            for i, gen in zip(rows, gens):
                out[i] = gen
        return out  # type: ignore[return-value]

    def _generate_batch(
        self, encoded: list[list[int]], seeds: list[int], max_new: int, temperature: float
    ) -> list[Generation]:
        model, device = self.model, self.model.device
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self._pad, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):  # left padding: the last prompt token is at -1
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        sampler = SeededSampler(seeds, temperature, self.top_p)
        sequences = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            generation_config=self._generation_config(max_new),
            logits_processor=LogitsProcessorList([sampler]),
        )
        new = sequences[:, width:].cpu()
        logprobs = torch.stack(sampler.logprobs[: new.shape[1]], 1) if new.shape[1] else None
        eos = torch.tensor(self._eos)
        gens = []
        for row, ids in enumerate(encoded):
            is_end = torch.isin(new[row], eos).nonzero()
            length = int(is_end[0, 0]) + 1 if len(is_end) else new.shape[1]
            token_ids = tuple(new[row, :length].tolist())
            text = self.tokenizer.decode(
                token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            lp = () if logprobs is None else tuple(logprobs[row, :length].tolist())
            gens.append(Generation(text, token_ids, lp, len(ids), bool(len(is_end))))
        return gens
