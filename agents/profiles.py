"""Calibrated profiles of the simulated backend: backbone x benchmark, plus ``toy``.

Every number comes from ``shared/data/calibration.md`` (published figures gathered with
their sources; section letters below refer to it). Values marked DERIVED are not
published: they are extrapolated or chosen to match published aggregates, as that file
explains. Nothing here was tuned to make a method win.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

SOURCES: dict[str, str] = {
    "accuracy": "calibration.md, 'Suggested simulator defaults' table 1: model-card / Qwen2.5 "
    "tech-report single-sample accuracies (section A), shaded 0-3 points for 0-shot use; "
    "cells marked DERIVED (extrapolated) in ACCURACY_DERIVED",
    "concentration": "DERIVED: Beta(mean p0, concentration 2) per-question correctness, from "
    "Huang et al.'s 74.7% unchanged answers (calibration.md C and defaults 1)",
    "fix_rate": "DERIVED: P(wrong->right | refine) for 0/1/2 of 2 peers right = 0.03/0.22/0.58, "
    "anchored on Huang et al. self-correction (C), conformity (D), debate ~ vote (B)",
    "break_rates": "DERIVED: P(right->wrong | refine) = 0.02 (peers right), 0.12 (mixed), 0.50 "
    "(peers agree on a wrong answer), 0.13 (peers wrong, split) (calibration.md defaults 2)",
    "conform_wrong": "DERIVED: a wrong agent facing peers agreeing on a wrong answer adopts it "
    "with p = 0.5 (calibration.md defaults 2; modal adoption <= 85.5%, arXiv 2605.00914)",
    "confidence": "verbalised AUROC 0.55, mean ~0.9 (Xiong et al. arXiv 2306.13063: 0.522 "
    "black-box); judge AUROC 0.62; token-prob AUROC 0.60 (0.605 white-box) (calibration.md E, "
    "defaults 4)",
    "tokens": "completion tokens per call, lognormal sigma 0.4: GSM8K 250, MATH 500, AIME/AMC "
    "900, MMLU 200, HumanEval 250 (calibration.md F, defaults 5: DERIVED from ZeroEval lengths)",
    "concede_tokens": "DERIVED: ~30 tokens of bookkeeping (calibration.md defaults 3)",
    "distractors": "DERIVED: wrong answers drawn from exponentially weighted distractors (the "
    "toy check in calibration.md defaults 2); AIME-like answers rarely coincide",
    "reasoning_profile": "DERIVED: steps and operators per benchmark, wrong answers ~20% longer",
}

BACKBONES = ("llama3.1-8b", "llama3.2-3b", "qwen2.5-7b", "qwen2.5-3b")
BENCHMARKS = ("gsm8k", "math", "aime", "amc", "mmlu", "humaneval")

# calibration.md 'Suggested simulator defaults', table 1 (p0, 0-shot CoT).
ACCURACY: dict[str, tuple[float, ...]] = {
    #              gsm8k  math  aime  amc   mmlu  humaneval
    "llama3.1-8b": (0.84, 0.48, 0.05, 0.20, 0.62, 0.72),
    "llama3.2-3b": (0.76, 0.44, 0.03, 0.12, 0.55, 0.60),
    "qwen2.5-7b": (0.91, 0.72, 0.10, 0.45, 0.74, 0.84),
    "qwen2.5-3b": (0.86, 0.62, 0.05, 0.30, 0.63, 0.74),
}
ACCURACY_DERIVED = {
    "llama3.1-8b/aime", "llama3.1-8b/amc", "llama3.1-8b/mmlu",
    "llama3.2-3b/aime", "llama3.2-3b/amc", "llama3.2-3b/mmlu", "llama3.2-3b/humaneval",
    "qwen2.5-7b/amc", "qwen2.5-7b/mmlu",
    "qwen2.5-3b/aime", "qwen2.5-3b/amc", "qwen2.5-3b/mmlu",
}  # fmt: skip


@dataclass(frozen=True)
class BenchmarkTraits:
    """What a benchmark sets, whatever the backbone (all DERIVED except tokens, see SOURCES)."""

    completion_tokens: float
    question_tokens: float  # used when a task's text is empty
    distractors: int
    distractor_decay: float
    steps: float
    fix_rate_no_peer: float = 0.03


BENCHMARK_TRAITS: dict[str, BenchmarkTraits] = {
    "gsm8k": BenchmarkTraits(250, 60, 4, 0.5, 4.0),
    "math": BenchmarkTraits(500, 80, 6, 0.6, 6.0),
    "aime": BenchmarkTraits(900, 120, 20, 0.9, 10.0, fix_rate_no_peer=0.01),
    "amc": BenchmarkTraits(900, 110, 10, 0.8, 8.0, fix_rate_no_peer=0.01),
    "mmlu": BenchmarkTraits(200, 90, 3, 0.6, 3.0),
    "humaneval": BenchmarkTraits(250, 130, 10, 0.85, 5.0),
}


@dataclass(frozen=True)
class SimProfile:
    """Parameters of the simulated LLM for one backbone on one benchmark."""

    name: str
    accuracy: float
    """p0: mean single-sample accuracy of the initial answer."""
    concentration: float = 2.0
    """Beta concentration of per-question correctness (low = questions are easy or hard)."""
    distractors: int = 4
    """Number of distinct wrong answers per question."""
    distractor_decay: float = 0.5
    """Weight ratio of successive wrong answers; the first is the popular misconception."""
    unparsed_wrong: float = 0.1
    """DERIVED: share of wrong outputs whose answer cannot be parsed (an unparseable answer
    is one way of being wrong, so accuracy and transition rates stay as calibrated)."""
    fix_rate: tuple[float, float, float] = (0.03, 0.22, 0.58)
    """P(wrong->right | REFINE) when 0, half, all peers are right (linear in between)."""
    break_all_right: float = 0.02
    break_mixed: float = 0.12
    break_wrong_agree: float = 0.50
    break_wrong_split: float = 0.13
    conform_wrong: float = 0.5
    """P(a wrong refiner adopts the peers' common wrong answer), scaled by its share."""
    conform_break: float = 0.7
    """DERIVED: P(a broken answer is the peers' modal wrong answer, when there is one)."""
    redraw_wrong: float = 0.15
    """DERIVED: P(a wrong refiner that stays wrong writes a new wrong answer)."""
    self_auroc: float = 0.55
    self_mean: float = 0.9
    judge_auroc: float = 0.62
    logprob_auroc: float = 0.60
    completion_tokens: float = 250.0
    token_sigma: float = 0.4
    question_tokens: float = 60.0
    solve_instruction_tokens: float = 60.0
    refine_instruction_tokens: float = 100.0
    concede_tokens: int = 30
    steps: float = 4.0
    operators_per_step: float = 1.5
    wrong_length_factor: float = 1.2
    sources: dict[str, str] = field(default_factory=lambda: dict(SOURCES), compare=False)

    def with_(self, **changes) -> SimProfile:
        """A copy with some parameters changed (for ablations and `fit`)."""
        return replace(self, **changes)


def _make(backbone: str, benchmark: str) -> SimProfile:
    t = BENCHMARK_TRAITS[benchmark]
    acc = ACCURACY[backbone][BENCHMARKS.index(benchmark)]
    return SimProfile(
        name=f"{backbone}/{benchmark}",
        accuracy=acc,
        distractors=t.distractors,
        distractor_decay=t.distractor_decay,
        fix_rate=(t.fix_rate_no_peer, 0.22, 0.58),
        completion_tokens=t.completion_tokens,
        question_tokens=t.question_tokens,
        steps=t.steps,
    )


PROFILES: dict[str, SimProfile] = {
    f"{bb}/{bm}": _make(bb, bm) for bb in BACKBONES for bm in BENCHMARKS
}

PROFILES["toy"] = SimProfile(
    name="toy",
    accuracy=0.6,
    concentration=4.0,
    distractors=3,
    distractor_decay=0.5,
    self_auroc=0.75,
    judge_auroc=0.85,
    logprob_auroc=0.8,
    completion_tokens=100.0,
    question_tokens=40.0,
    sources={
        "all": "NOT CALIBRATED: a teaching profile with informative confidences, so that "
        "learning is visible in seconds; use a backbone/benchmark profile for claims"
    },
)


def register_profile(profile: SimProfile) -> None:
    """Make a profile available by name (``parallel_env(profile=profile.name)``)."""
    PROFILES[profile.name] = profile


def get_profile(name: str | SimProfile) -> SimProfile:
    if isinstance(name, SimProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown simulator profile {name!r}; valid profiles: {sorted(PROFILES)}"
        ) from None
