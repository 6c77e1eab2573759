"""Calibrated profiles of the simulated backend: backbone x benchmark, plus ``toy``.

Every number comes from ``shared/data/calibration.md`` (published figures gathered with
their sources; section letters below refer to it). Values marked DERIVED are not
published: they are extrapolated or chosen to match published aggregates, as that file
explains. Nothing here was tuned to make a method win.

Two versions (``docs/simulator.md``). The default profiles (``"llama3.1-8b/gsm8k"``, also
reachable as ``"...@v1"``) use the REFINE model of ``Deliberation-v1``, calibrated on the
measured debate transcripts of section H (`section_h_rates`). Their ``@v0`` twins
(``"llama3.1-8b/gsm8k@v0"``) keep ``Deliberation-v0``'s literature-derived model, number
for number, so published results can be reproduced. ``toy`` is the same in both.

The correctness signal is an axis. Every backbone x benchmark comes in two named variants:
``"llama3.1-8b/gsm8k/self"`` (the same profile as ``"llama3.1-8b/gsm8k"``: the only
correctness signals are the model's own, judge AUROC 0.62) and
``"llama3.1-8b/gsm8k/verifier"`` (plus a trained verifier's score of every solution, with
the AUROC `verifier_auroc_from_best_of_n` derives from a published Best-of-N gain,
`VERIFIER_AUROC`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri
from scipy.stats import beta as beta_dist

from deliberation_env.config import check_profile

RefineModel = Literal["v0", "v1"]
"""`SimProfile.refine_model`: which REFINE transition model the simulator plays."""
VERSIONS: tuple[RefineModel, ...] = ("v0", "v1")
LATEST: RefineModel = "v1"
"""The version of the unsuffixed profile names (and of ``Deliberation-v1``)."""

SOURCES_V0: dict[str, str] = {
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
"""The sources of the ``@v0`` profiles (``Deliberation-v0``), as they were."""

# ---------------------------------------------------------------------- section H (v1)
SECTION_H_POOLED: dict[str, tuple[int, int]] = {
    "fix_0of2": (4, 153),
    "fix_1of2": (28, 74),
    "fix_2of2": (53, 58),
    "break_0of2": (23, 37),
    "break_1of2": (20, 116),
    "break_2of2": (0, 762),
    "adopt_agreeing_pair": (72, 84),
}
"""calibration.md H2 and H3, ``(k, n)`` summed over the four debate sources (Q1.5, Q3, Q7,
G35s: Qwen2.5-1.5B/3B/7B-Instruct and gpt-3.5-turbo on GSM8K, N = 3, one round, 100
questions each). Cell ``fix_JofM``: a wrong agent with J of its M = 2 peers right is right
after the round; ``break_JofM``: a right agent is wrong after it; ``adopt_agreeing_pair``:
an agent whose two peers agree on another answer holds that answer after it."""
SECTION_H_SELF_REFINE: dict[str, tuple[int, int]] = {"fix": (12, 101), "break": (27, 399)}
"""calibration.md H2, row SR: one gpt-3.5-turbo agent asked to double-check its answer."""


def jeffreys(k: int, n: int) -> float:
    """The Jeffreys posterior mean ``(k + 1/2) / (n + 1)`` of a rate seen k times in n: the
    estimate of every section-H rate (it keeps 0/762 off an impossible 0)."""
    return (k + 0.5) / (n + 1)


def wrong_pair_agreement(distractors: int, decay: float, unparsed: float) -> tuple[float, float]:
    """``(a_right, a_wrong)`` of the simulator's distractor model, for initial answers.

    ``a_right``: two wrong peers hold the same parsed answer (a right agent then faces a
    wrong majority); ``a_wrong``: they do and it is not my own wrong answer (a wrong agent
    then faces one). Wrong answers are independent draws of weights ``decay**k``, and
    unparseable with probability `unparsed`.
    """
    w = decay ** np.arange(distractors)
    w = w / w.sum()
    parsed = 1.0 - unparsed
    return float(parsed**2 * (w**2).sum()), float(parsed**2 * (w**2 * (1 - parsed * w)).sum())


def section_h_rates(distractors: int = 4, decay: float = 0.5, unparsed: float = 0.1) -> dict:
    """The REFINE parameters of ``Deliberation-v1`` from the section-H counts.

    The model (`agents.simulated`): a refiner facing a strict peer majority on another answer
    adopts it with probability ``conformity``; otherwise it is fixed / broken with the rates
    by share of right peers. So each measured cell mixes the two, and is unmixed here:

    - ``conformity``: the adoption rate of dissenters whose agreeing pair is *wrong*, where
      only conformity adopts (H3 adoptions minus the H2 fix_2of2 fixes, which are the
      dissenters whose pair is right): (72 - 53) / (84 - 58) = 19 / 26.
    - ``fix_rate[2] = (F2 - c) / (1 - c)``: two right peers are always a majority.
    - ``fix_rate[1]``, ``break_rate[1]``, ``break_rate[2]``: the cells as measured (no
      majority against me in those situations with N = 3).
    - ``fix_rate[0] = F0 / (1 - c a_wrong)`` and ``break_rate[0] = (B0 - c a_right) /
      (1 - c a_right)``: with two wrong peers only those that agree pull (`wrong_pair_agreement`
      of the GSM8K distractor model: DERIVED).
    - ``solo_rate``: (fix, break) of one agent refining alone (H2, row SR).
    """
    h = {k: jeffreys(*v) for k, v in SECTION_H_POOLED.items()}
    k_adopt, n_adopt = SECTION_H_POOLED["adopt_agreeing_pair"]
    k_fix, n_fix = SECTION_H_POOLED["fix_2of2"]
    c = jeffreys(k_adopt - k_fix, n_adopt - n_fix)
    a_right, a_wrong = wrong_pair_agreement(distractors, decay, unparsed)
    return {
        "conformity": c,
        "fix_rate": (
            h["fix_0of2"] / (1 - c * a_wrong),
            h["fix_1of2"],
            (h["fix_2of2"] - c) / (1 - c),
        ),
        "break_rate": (
            (h["break_0of2"] - c * a_right) / (1 - c * a_right),
            h["break_1of2"],
            h["break_2of2"],
        ),
        "solo_rate": tuple(jeffreys(*SECTION_H_SELF_REFINE[k]) for k in ("fix", "break")),
    }


GSM8K_REFINE = section_h_rates()
"""The v1 REFINE parameters on GSM8K (every backbone: section H spans round-0 accuracies
0.63-0.88 and one pooled set of rates lands inside the intervals of all four sources)."""

SOURCES: dict[str, str] = {
    **{
        k: v for k, v in SOURCES_V0.items() if k not in ("fix_rate", "break_rates", "conform_wrong")
    },
    "refine_model": "v1: conformity to a strict peer majority, then fix/break by share of right "
    "peers (docs/simulator.md); parameters from calibration.md section H (measured debate "
    "transcripts), see agents.profiles.section_h_rates",
    "conformity": "calibration.md H2+H3 pooled over Q1.5/Q3/Q7/G35s: dissenters facing an "
    "agreeing *wrong* pair adopt it 19/26 (H3 adopt 72/84 minus H2 fix_2of2 53/58); Jeffreys "
    "estimate 0.72 (D: modal adoption up to 85.5% on GSM-Hard/MMLU-Hard)",
    "fix_rate": "calibration.md H2 pooled, net of conformity: 0 right peers 4/153 (DERIVED: "
    "/(1 - c a_wrong), the GSM8K distractors' wrong-pair agreement), 1: 28/74, 2: 53/58 "
    "(DERIVED: (F2 - c)/(1 - c)); other benchmarks: DERIVED, scaled by p0(benchmark) / "
    "p0(GSM8K) of the backbone",
    "break_rate": "calibration.md H2 pooled, net of conformity: 0 right peers 23/37 (DERIVED: "
    "(B0 - c a_right)/(1 - c a_right)), 1: 20/116, 2: 0/762 (Jeffreys: 0.0007); kept on other "
    "benchmarks (DERIVED: D reports the same vulnerability, up to 70%, on GSM-Hard/MMLU-Hard)",
    "solo_rate": "calibration.md H2 row SR (gpt-3.5 self-refine, N = 1): fix 12/101, break "
    "27/399; fix scaled as fix_rate on other benchmarks (DERIVED)",
    "conform_break": "DERIVED (v0's value 0.7): a broken answer is the peers' modal wrong answer",
    "redraw_wrong": "DERIVED (v0's value 0.15): a wrong refiner that stays wrong rewrites it",
}
"""The sources of the default (v1) profiles."""

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
    """Parameters of the simulated LLM for one backbone on one benchmark.

    REFINE follows `refine_model`. ``"v1"`` (the default): facing a strict majority of its
    peers on another answer, a refiner adopts that answer with probability `conformity`;
    otherwise it is fixed or broken with `fix_rate` / `break_rate` by its share of right
    peers (`solo_rate` with no peers). ``"v0"`` (``Deliberation-v0``): `fix_rate` and the
    four ``break_*`` rates by peer situation, `conform_wrong` pulling wrong refiners to the
    peers' common wrong answer. Field defaults are v1's GSM8K values (`GSM8K_REFINE`).
    """

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
    refine_model: RefineModel = "v1"
    """The REFINE transition model: ``"v1"`` (conformity, then fix/break; calibration.md H)
    or ``"v0"`` (the literature-derived model of ``Deliberation-v0``)."""
    fix_rate: tuple[float, float, float] = GSM8K_REFINE["fix_rate"]
    """P(wrong->right | REFINE) when 0, half, all peers are right (linear in between); in
    v1, when the refiner does not conform to a peer majority."""
    break_rate: tuple[float, float, float] = GSM8K_REFINE["break_rate"]
    """v1: P(right->wrong | REFINE, not conforming) when 0, half, all peers are right."""
    conformity: float = GSM8K_REFINE["conformity"]
    """v1: P(a refiner facing a strict majority of its peers on another answer adopts it),
    right or wrong."""
    solo_rate: tuple[float, float] = GSM8K_REFINE["solo_rate"]
    """v1: (P(wrong->right), P(right->wrong)) of a REFINE with no peers (N = 1)."""
    break_all_right: float = 0.02
    """v0: P(right->wrong | REFINE) with every peer right."""
    break_mixed: float = 0.12
    """v0: ... with some peers right (and with no peers)."""
    break_wrong_agree: float = 0.50
    """v0: ... with every peer wrong and agreeing (linear in their agreement down to split)."""
    break_wrong_split: float = 0.13
    """v0: ... with every peer wrong and no two agreeing."""
    conform_wrong: float = 0.5
    """v0: P(a wrong refiner adopts the peers' common wrong answer), scaled by its share."""
    conform_break: float = 0.7
    """DERIVED: P(a broken answer is the peers' modal wrong answer, when there is one)."""
    redraw_wrong: float = 0.15
    """DERIVED: P(a wrong refiner that stays wrong writes a new wrong answer)."""
    self_auroc: float = 0.55
    self_mean: float = 0.9
    judge_auroc: float = 0.62
    logprob_auroc: float = 0.60
    verifier_auroc: float | None = None
    """AUROC of a trained verifier's score of each solution (``verifier_score``); None: no
    verifier (the observation has no verifier features). The ``.../verifier`` profiles set
    `VERIFIER_AUROC` (DERIVED from Best-of-N gains, `verifier_auroc_from_best_of_n`)."""
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

    def __post_init__(self) -> None:
        if self.refine_model not in VERSIONS:
            raise ValueError(
                f"profile {self.name!r}: refine_model={self.refine_model!r} is not one of "
                f"{VERSIONS}"
            )
        if self.verifier_auroc is not None and not 0.5 <= self.verifier_auroc < 1.0:
            raise ValueError(
                f"profile {self.name!r}: verifier_auroc={self.verifier_auroc} must lie in "
                "[0.5, 1) (or be None: no verifier)"
            )
        check_profile(self)

    def with_(self, **changes: Any) -> SimProfile:
        """A copy with some parameters changed (for ablations and `fit`)."""
        return replace(self, **changes)


def _make(backbone: str, benchmark: str) -> SimProfile:
    """The v1 profile: section H's GSM8K rates; on other benchmarks the fix rates scaled by
    the backbone's accuracy there relative to GSM8K (DERIVED, docs/simulator.md)."""
    t = BENCHMARK_TRAITS[benchmark]
    acc = ACCURACY[backbone][BENCHMARKS.index(benchmark)]
    scale = min(1.0, acc / ACCURACY[backbone][0])
    fix, brk = GSM8K_REFINE["solo_rate"]
    return SimProfile(
        name=f"{backbone}/{benchmark}",
        accuracy=acc,
        distractors=t.distractors,
        distractor_decay=t.distractor_decay,
        fix_rate=tuple(scale * f for f in GSM8K_REFINE["fix_rate"]),  # type: ignore[arg-type]
        solo_rate=(scale * fix, brk),
        completion_tokens=t.completion_tokens,
        question_tokens=t.question_tokens,
        steps=t.steps,
    )


def _make_v0(backbone: str, benchmark: str) -> SimProfile:
    """The ``@v0`` twin: ``Deliberation-v0``'s profile, value for value."""
    t = BENCHMARK_TRAITS[benchmark]
    acc = ACCURACY[backbone][BENCHMARKS.index(benchmark)]
    return SimProfile(
        name=f"{backbone}/{benchmark}@v0",
        accuracy=acc,
        distractors=t.distractors,
        distractor_decay=t.distractor_decay,
        refine_model="v0",
        fix_rate=(t.fix_rate_no_peer, 0.22, 0.58),
        completion_tokens=t.completion_tokens,
        question_tokens=t.question_tokens,
        steps=t.steps,
        sources=dict(SOURCES_V0),
    )


# ---------------------------------------------------------------------- verifier (signal axis)
def best_of_n_accuracy(
    auroc: float, base_acc: float, n: int, concentration: float | None = 2.0
) -> float:
    """Accuracy of picking the top-scored of `n` sampled solutions (Best-of-N).

    The model the simulator plays: per question a correctness probability ``p ~
    Beta(base_acc * concentration, (1 - base_acc) * concentration)`` (a fixed ``p =
    base_acc`` when `concentration` is None), `n` solutions each right with probability
    ``p``, and scores drawn independently given correctness from the binormal model of
    AUROC `auroc` (right ~ N(d, 1), wrong ~ N(0, 1), ``auroc = Phi(d / sqrt 2)``). The
    highest of `n` iid scores is a right one with probability ``int n p phi(x - d) F(x)^(n-1)
    dx``, ``F = p Phi(x - d) + (1 - p) Phi(x)``; computed by quadrature (midpoint in the
    Beta's quantiles, trapezoid in x).
    """
    d = float(np.sqrt(2.0) * ndtri(auroc))
    if concentration is None:
        p = np.array([base_acc])
    else:
        u = (np.arange(256) + 0.5) / 256
        p = beta_dist.ppf(u, base_acc * concentration, (1 - base_acc) * concentration)
    x = np.linspace(-7.0, 7.0 + d, 1201)[None, :]
    q = p[:, None]
    mix = q * ndtr(x - d) + (1 - q) * ndtr(x)
    density = n * q * np.exp(-0.5 * (x - d) ** 2) / np.sqrt(2 * np.pi) * mix ** (n - 1)
    return float(np.trapezoid(density, x, axis=1).mean())


def verifier_auroc_from_best_of_n(
    base_acc: float, best_acc: float, n: int, concentration: float | None = 2.0
) -> float:
    """The verifier AUROC at which Best-of-`n` selection turns single-sample accuracy
    `base_acc` into `best_acc` (`best_of_n_accuracy`, root found with Brent's method).

    Verifier papers report Best-of-N gains, not AUROCs (calibration.md E); this inverts the
    selection model. With `concentration` the questions differ in difficulty as in the
    simulator (the profiles' Beta concentration, 2), so some have no right solution among
    `n` and `best_acc` must stay below that ceiling, ``1 - E[(1 - p)^n]``.
    """
    ceiling = best_of_n_accuracy(0.99999, base_acc, n, concentration)
    if not base_acc < best_acc < ceiling:
        raise ValueError(
            f"Best-of-{n} accuracy {best_acc} must lie between the single-sample accuracy "
            f"{base_acc} and the ceiling {ceiling:.4f} (a question with no right solution "
            "stays wrong)"
        )
    return float(
        brentq(
            lambda a: best_of_n_accuracy(a, base_acc, n, concentration) - best_acc,
            0.5,
            0.99999,
            xtol=1e-6,
        )
    )


BEST_OF_N: dict[str, tuple[float, float, int]] = {
    "gsm8k": (0.730, 0.934, 32),
    "math": (0.280, 0.446, 32),
}
"""Published Best-of-N gains of a trained verifier, ``(single-sample accuracy, Best-of-N
accuracy, N)``: GenRM on GSM8K 73.0% -> 93.4% and on MATH (easy-to-hard transfer) 28.0% ->
44.6%, Best-of-32 (Zhang et al., "Generative Verifiers", arXiv 2408.15240; calibration.md E)."""

VERIFIER_SOURCE: dict[str, str] = {
    "gsm8k": "gsm8k",
    "math": "math",
    "aime": "math",
    "amc": "math",
    "mmlu": "gsm8k",
    "humaneval": "gsm8k",
}
"""The `BEST_OF_N` figure each benchmark's verifier is derived from: its own where one is
published (GSM8K, MATH), else the nearest (DERIVED): competition maths (AIME, AMC) take
MATH's; MMLU and HumanEval take GSM8K's, an in-distribution verifier's."""

VERIFIER_AUROC: dict[str, float] = {"gsm8k": 0.777, "math": 0.655}
"""DERIVED: ``verifier_auroc_from_best_of_n(*BEST_OF_N[b], concentration=2.0)`` rounded to
3 decimals (tests/test_simulated.py recomputes them): the AUROC at which Best-of-32 over the
simulator's questions (Beta concentration 2, as every profile) reproduces the published gain.
Without difficulty heterogeneity (a fixed p) the same gains need only 0.699 / 0.600."""


def _with_verifier(profile: SimProfile, benchmark: str) -> SimProfile:
    src = VERIFIER_SOURCE[benchmark]
    base, best, n = BEST_OF_N[src]
    note = (
        "" if src == benchmark else f"; no published figure for {benchmark}: {src}'s, the nearest"
    )
    return profile.with_(
        name=f"{profile.name}/verifier",
        verifier_auroc=VERIFIER_AUROC[src],
        sources={
            **profile.sources,
            "verifier_auroc": f"DERIVED {VERIFIER_AUROC[src]}: the AUROC at which Best-of-{n} "
            f"selection over simulated solutions (concentration 2) turns {base:.1%} into "
            f"{best:.1%}, GenRM's published gain on {src} (calibration.md E, arXiv 2408.15240; "
            f"agents.profiles.verifier_auroc_from_best_of_n){note}",
        },
    )


PROFILES: dict[str, SimProfile] = {
    f"{bb}/{bm}": _make(bb, bm) for bb in BACKBONES for bm in BENCHMARKS
}
PROFILES.update({f"{bb}/{bm}@v0": _make_v0(bb, bm) for bb in BACKBONES for bm in BENCHMARKS})
# The signal axis: `/self` is the profile as it is (own signals only), `/verifier` adds one.
PROFILES.update(
    {
        f"{bb}/{bm}/self": PROFILES[f"{bb}/{bm}"].with_(name=f"{bb}/{bm}/self")
        for bb in BACKBONES
        for bm in BENCHMARKS
    }
)
PROFILES.update(
    {
        f"{bb}/{bm}/verifier": _with_verifier(PROFILES[f"{bb}/{bm}"], bm)
        for bb in BACKBONES
        for bm in BENCHMARKS
    }
)

PROFILES["toy"] = SimProfile(
    name="toy",
    accuracy=0.6,
    concentration=4.0,
    distractors=3,
    distractor_decay=0.5,
    refine_model="v0",
    fix_rate=(0.03, 0.22, 0.58),
    self_auroc=0.75,
    judge_auroc=0.85,
    logprob_auroc=0.8,
    completion_tokens=100.0,
    question_tokens=40.0,
    sources={
        "all": "NOT CALIBRATED: a teaching profile with informative confidences, so that "
        "learning is visible in seconds; use a backbone/benchmark profile for claims; the "
        "same in Deliberation-v0 and v1 (the v0 REFINE model)"
    },
)


def register_profile(profile: SimProfile) -> None:
    """Make a profile available by name (``parallel_env(profile=profile.name)``)."""
    PROFILES[profile.name] = profile


def split_version(name: str) -> tuple[str, str | None]:
    """``"llama3.1-8b/gsm8k@v0"`` -> ``("llama3.1-8b/gsm8k", "v0")``; no suffix -> None."""
    base, sep, version = name.rpartition("@")
    return (base, version) if sep and version in VERSIONS else (name, None)


def pin_version(name: str, version: str) -> str:
    """The name of `name`'s twin in `version`: ``"x@v0"`` where that profile exists, else
    `name` (a name that already carries a version, ``toy``, profiles registered later)."""
    base, given = split_version(name)
    if given is not None or version == LATEST:
        return name
    pinned = f"{base}@{version}"
    return pinned if pinned in PROFILES else name


def get_profile(name: str | SimProfile) -> SimProfile:
    """A profile by name: ``"backbone/benchmark"`` (the latest version, v1), with an
    optional version suffix (``"...@v0"``, ``"...@v1"``), ``"toy"``, or a registered one."""
    if isinstance(name, SimProfile):
        return name
    if name in PROFILES:
        return PROFILES[name]
    base, version = split_version(name)
    if version is not None and base in PROFILES and pin_version(base, version) == base:
        # The latest version, or a profile with one version only (toy): the same profile.
        return PROFILES[base].with_(name=name) if version == LATEST else PROFILES[base]
    raise ValueError(
        f"unknown simulator profile {name!r}; valid profiles: {sorted(PROFILES)} (a "
        f"backbone/benchmark name takes a version suffix, @v0 or @v1)"
    )
