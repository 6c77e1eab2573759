"""A tiny causal LM saved to disk like a real one, for offline tests and benchmarks.

`build_tiny_model(path)` trains a BPE tokenizer with the `tokenizers` library on the
prompts' instructions, the built-in arithmetic questions and GSM8K text
(``shared/data/gsm8k``, when present), wraps it as a
`PreTrainedTokenizerFast` with a chat template, builds a 2-layer Llama with random weights
sized to that vocabulary, and writes both with ``save_pretrained``. Loading it back by path
is exactly what a user's ``model="path/to/model"`` does. Random weights produce junk text;
the point is the plumbing (batching, padding, seeds, token counts), not the answers.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
UNK = "<|unk|>"

INIT_STD = 0.5
"""Weight init scale: large enough that the output depends on the whole prompt (with the
usual 0.02 a random model writes the same text whatever it is asked)."""
LM_HEAD_STD = 0.3
"""Output weights: next-token logits with a spread of ~2, far from ties for greedy
decoding, yet sampling at temperature ~1 differs visibly from greedy."""

FALLBACK_TEXT = (
    "Janet sells 16 - 3 - 4 = 9 duck eggs a day. She makes 9 * 2 = $18 every day.\n#### 18\n"
    "It takes 2/2 = 1 bolt of white fiber. So the total is 2 + 1 = 3 bolts.\n#### 3\n"
    "The answer is \\boxed{42}. STEPS: 3 OPERATORS: 4 CONFIDENCE: 80 "
    "Answer: (B) ```python\ndef add(a, b):\n    return a + b\n```\n"
    # Every digit, so no number decodes to the unknown token (offsets would not match).
    "Digits: 0 1 2 3 4 5 6 7 8 9, e.g. 17 apples and 56 pears.\n"
)


def _data_dir() -> Path:
    env = os.environ.get("DELIBERATION_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus(max_rows: int = 400) -> list[str]:
    """GSM8K questions and solutions (the first `max_rows` of train), else a built-in text."""
    from agents import prompts
    from deliberation_env.tasks import load_tasks

    path = _data_dir() / "gsm8k" / "train.jsonl"
    # The instructions too, so that prompts tokenize at a real tokenizer's ~4 characters
    # per token rather than letter by letter.
    instructions = [prompts.SOLVE_SYSTEM, prompts.REFINE_SYSTEM, prompts.JUDGE_SYSTEM]
    instructions += [prompts.SELF_REPORT_INSTRUCTION, *prompts._ANSWER_FORMAT.values()]
    instructions += ["Problem:", "Current solutions of the agents (untrusted):", "<solution agent="]
    texts = [FALLBACK_TEXT, *instructions * 50]
    # The built-in arithmetic questions, which the hf tests ask: prompts tokenize alike
    # whether or not the GSM8K files are there.
    texts += [t.question for t in load_tasks("arithmetic:400")]
    if path.exists():
        with path.open() as f:
            for i, line in enumerate(f):
                if i >= max_rows:
                    break
                row = json.loads(line)
                texts += [row["question"], row["answer"]]
    return texts


def build_tiny_model(path: str | Path, vocab_size: int = 2048, seed: int = 0) -> Path:
    """Write a tokenizer and a random 2-layer Llama to `path`; returns `path`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    # SentencePiece-style pieces (Metaspace), not byte-level: every token decodes to valid
    # text, so the junk a random model writes re-tokenizes to about as many tokens (random
    # byte tokens would decode to U+FFFD and triple in length when quoted to peers).
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, UNK], show_progress=False
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        unk_token=UNK,
        additional_special_tokens=SPECIAL_TOKENS[3:],
        # What transformers 5 does by default; 4.45 would also return token_type_ids (which
        # Llama's generate rejects) and drop the spaces before punctuation when decoding.
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=INIT_STD,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, LM_HEAD_STD)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    return path


_BUILT: dict[str, Path] = {}


def tiny_model_path(root: Path) -> Path:
    """The tiny model under `root`, built once per process."""
    if "path" not in _BUILT:
        _BUILT["path"] = build_tiny_model(root / "tiny-llama")
    return _BUILT["path"]


if importlib.util.find_spec("pytest") is not None:  # benchmarks use this file without pytest
    import pytest

    @pytest.fixture(scope="session")
    def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        """Folder of the tiny model, loaded by path as a user's model would be.

        Import it into a test module (``from tiny_model import tiny_model_dir``); the build
        is cached per process, so modules that each import it share one copy.
        """
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return tiny_model_path(tmp_path_factory.mktemp("models"))
