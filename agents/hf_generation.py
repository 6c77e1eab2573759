"""How `agents.hf.HFBackend` drives ``model.generate``: each row seeded on its own, the raw
log-prob of every generated token recorded, and the answer's tokens located for the
log-prob confidence.

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
values (`neutral_generation_config`), so no default processor runs before ours, and a test
checks the recorded values against ``output_logits=True``. `answer_confidence` =
exp(mean log-prob of the tokens of the answer span), the span located by
`agents.parsing.parse_answer_span`; when it cannot be located, the mean over the whole
completion. This is the white-box token-probability signal of Xiong et al.
(arXiv 2306.13063).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from agents.parsing import parse_answer_span

__all__ = [
    "Generation",
    "SeededSampler",
    "DecodedLength",
    "answer_confidence",
    "generate_batch",
    "neutral_generation_config",
]


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
        # transformers annotates scores as FloatTensor; torch ops are typed to return Tensor.
        return chosen  # type: ignore[return-value]

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


def neutral_generation_config(max_new_tokens: int, eos: list[int], pad: int) -> GenerationConfig:
    """Greedy decoding with every processor-adding value neutral.

    Every value that could let the model's own generation_config.json add a logits
    processor (repetition penalty, n-gram blocking, minimum length) is set to its neutral
    value: the `SeededSampler` must see the raw logits and be the only processor.
    """
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
        eos_token_id=eos,
        pad_token_id=pad,
    )


def generate_batch(
    model: Any,
    tokenizer: Any,
    encoded: list[list[int]],
    sampler: SeededSampler,
    config: GenerationConfig,
    eos: list[int],
    pad: int,
) -> list[Generation]:
    """One left-padded ``model.generate`` call over the token ids `encoded`, one row each;
    a row ends at its first token in `eos` (`pad` fills the left)."""
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):  # left padding: the last prompt token is at -1
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    sequences = model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=attention.to(model.device),
        generation_config=config,
        logits_processor=LogitsProcessorList([sampler]),
    )
    new = sequences[:, width:].cpu()
    logprobs = torch.stack(sampler.logprobs[: new.shape[1]], 1) if new.shape[1] else None
    end_ids = torch.tensor(eos)
    gens = []
    for row, ids in enumerate(encoded):
        is_end = torch.isin(new[row], end_ids).nonzero()
        length = int(is_end[0, 0]) + 1 if len(is_end) else new.shape[1]
        token_ids = tuple(new[row, :length].tolist())
        text = tokenizer.decode(
            token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        lp = () if logprobs is None else tuple(logprobs[row, :length].tolist())
        gens.append(Generation(text, token_ids, lp, len(ids), bool(len(is_end))))
    return gens


# ---------------------------------------------------------------------- answer confidence
DecodedLength = Callable[[Sequence[int]], int]
"""The length of the text that token ids decode to (special tokens skipped)."""


def answer_confidence(kind: str, gen: Generation, decoded_length: DecodedLength) -> float | None:
    """exp(mean log-prob) of the answer's tokens, else of the whole completion, in [0, 1]."""
    if not gen.token_logprobs:
        return None
    logprobs = gen.token_logprobs
    _, span = parse_answer_span(gen.text, kind)
    if span is not None:
        lo = _tokens_before(gen.token_ids, span[0], decoded_length)
        hi = max(lo + 1, _tokens_covering(gen.token_ids, span[1], decoded_length))
        # A span the tokens do not reach (text not decoded from these ids): whole text.
        logprobs = logprobs[lo:hi] or logprobs
    mean = float(np.mean(logprobs))
    return float(min(1.0, max(0.0, np.exp(mean))))


def _tokens_before(ids: Sequence[int], char: int, decoded_length: DecodedLength) -> int:
    """The largest k whose first k tokens decode to at most `char` characters."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if decoded_length(ids[:mid]) <= char:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _tokens_covering(ids: Sequence[int], char: int, decoded_length: DecodedLength) -> int:
    """The smallest k whose first k tokens decode to at least `char` characters."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if decoded_length(ids[:mid]) >= char:
            hi = mid
        else:
            lo = mid + 1
    return lo
