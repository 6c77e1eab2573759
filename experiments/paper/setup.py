"""What every paper experiment shares: the `Setup` (budget, backbone, questions, the
backend that evaluates), the paper's reported figures, and the rows of its tables.

By default everything runs on the *simulated* backend: the numbers come from a calibrated
statistical model of LLM deliberation, not from real LLMs (docs/reproduction.md). With
``backend=`` a real backend evaluates the policies; the learned methods are still trained
on the simulator profile, and the outputs say so.

Seeds: method runs are indexed by the evaluation seeds of the budget. A learned method's
run r uses the policy trained with ``train_seeds[r % len(train_seeds)]`` (`Budget`). Every
method sees the same questions and initial answers in run r (same evaluation seed), so
differences between methods are paired.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from algorithms.common import check_env, train_env
from deliberation_env import EnvConfig
from deliberation_env.config import DEFAULT_PROFILE, TaskSource
from experiments.budgets import BUDGETS, DEFAULT_BUDGET, Budget

BACKBONES = ("llama3.1-8b", "llama3.2-3b", "qwen2.5-7b", "qwen2.5-3b")
"""The paper's four Instruct backbones (simulator profiles ``BACKBONE/BENCHMARK``)."""
BENCHMARKS = ("gsm8k", "math", "aime", "amc", "mmlu", "humaneval")
"""The paper's six benchmarks, in its Table 1 order."""
DEFAULT_BACKBONE, _, DEFAULT_BENCHMARK = DEFAULT_PROFILE.partition("/")
"""The backbone and benchmark of the env's default simulator profile."""
DATA_FOLDERS = {
    "gsm8k": "gsm8k/test.jsonl",
    "math": "minerva_math/test.jsonl",
    "aime": "aime24/test.jsonl",
    "amc": "amc23/test.jsonl",
    "mmlu": "mmlu_stem/test.jsonl",
    "humaneval": "humaneval/HumanEval.jsonl.gz",
}
"""Where `tasks_from_dir` finds each benchmark under a data folder (``../shared/data``)."""

PAPER: dict[str, Any] = {
    "agents": 3,
    "rounds": 3,
    "seeds": 3,
    "best_tau": 0.8,
    "taus": (0.4, 0.6, 0.8, 1.0, 2.0, 5.0),
    "persist_share_sft": 0.191,
    "persist_share_rl": 0.788,
    "tokens_softrankpo": 47_100,
    "tokens_strongest_baseline": 67_200,
    "avg_accuracy_softrankpo": 0.5574,
    "avg_accuracy_strongest_baseline": 0.5160,
}
"""Figures the paper reports (docs/reproduction.md sets ours beside them)."""
PAPER_TAUS: tuple[float, ...] = PAPER["taus"]

HEURISTICS = ("single", "self_consistency", "debate", "reconcile", "progressive_hint",
              "refine_minority")  # fmt: skip
"""The fixed protocols of the main table; ``refine_minority`` is the strongest simple rule
on the simulator, so the learned methods' claims must stand against it."""
TOPOLOGY = ("agentprune", "gptswarm", "dylan")
"""The topology baselines (`algorithms.topology_methods`, docs/baselines.md): a learned
communication graph (AgentPrune, GPTSwarm) or agent selection with early stopping
(DyLAN), everyone REFINEs; trained on the same questions and budget."""
LEARNED = ("sft", "sft+ppo", "sft+grpo", "sft+softrankpo", "softrankpo", *TOPOLOGY)
"""The learned rows: stage-1 SFT, then each RL method started and KL-anchored at it
(MPDF's pipeline); SoftRankPO alone from a fresh policy, which shows what the SFT
stage adds or costs; and the topology baselines (`TOPOLOGY`)."""
ROWS = (*HEURISTICS, *LEARNED, "oracle")
LABELS = {
    "single": "Single agent",
    "self_consistency": "Self-consistency",
    "debate": "LLM-Debate",
    "reconcile": "ReConcile",
    "progressive_hint": "Progressive-hint",
    "refine_minority": "Refine-minority (strongest simple rule)",
    "sft": "SFT",
    "sft+ppo": "SFT+PPO",
    "sft+grpo": "SFT+GRPO",
    "sft+softrankpo": "SFT+SoftRankPO",
    "softrankpo": "SoftRankPO (RL only, no SFT)",
    "agentprune": "AgentPrune",
    "gptswarm": "GPTSwarm",
    "dylan": "DyLAN",
    "oracle": "Oracle (limit, sees correctness)",
}
SIMULATED_NOTE = (
    "Simulated: these numbers come from a calibrated statistical model of LLM deliberation "
    "(agents.simulated), not from real LLMs; agreement with the paper speaks to the "
    "simulator's calibration and the methods, not to the backbone models."
)


@dataclass
class Setup:
    """What every experiment shares: the budget, the backbone, the questions, and the
    backend that evaluates (training always runs on the simulator)."""

    budget: Budget = BUDGETS[DEFAULT_BUDGET]
    """Training and evaluation budgets (`experiments.budgets`)."""
    backbone: str = DEFAULT_BACKBONE
    """The backbone of the simulator profiles (``BACKBONE/BENCHMARK``)."""
    benchmark: str = DEFAULT_BENCHMARK
    """The benchmark of the single-profile experiments (all but main-table, backbones)."""
    tasks: Mapping[str, str] = field(default_factory=dict)
    """Benchmark -> `load_tasks` spec; a benchmark not listed gets ``env.tasks`` (by default
    `algorithms.common.TRAIN_TASKS`: the simulator reads a question's id only, for its
    latent difficulty, so the built-in generator serves every benchmark profile)."""
    backend: Any = EnvConfig.backend
    """The backend that *evaluates* (a registered name or an instance)."""
    backend_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Arguments of the evaluating backend (model, base_url, ...)."""
    env: EnvConfig = field(default_factory=train_env)
    """The base env of every cell, for training and evaluation alike: each experiment sets
    its ``profile`` and ``tasks`` (`cell`), some its ``num_agents`` and ``max_rounds``.
    On the simulator: the backend that evaluates is `backend`."""
    episodes: int | None = None
    """Override of the budget's evaluation episodes (a real backend pays per question)."""
    progress: bool = True
    """Print a line per experiment and per trained policy."""

    def __post_init__(self) -> None:
        check_env(self.env, "Setup")
        if self.env.backend != "simulated" or self.env.backend_kwargs:
            raise ValueError(
                f"Setup.env has backend={self.env.backend!r}, backend_kwargs="
                f"{dict(self.env.backend_kwargs)}: training runs on the simulator; pass the "
                "backend that evaluates as Setup(backend=..., backend_kwargs=...)"
            )

    @property
    def simulated(self) -> bool:
        return isinstance(self.backend, str) and self.backend == "simulated"

    @property
    def eval_episodes(self) -> int:
        return self.episodes or self.budget.eval_episodes

    def task_spec(self, benchmark: str | None = None) -> TaskSource:
        return self.tasks.get(benchmark or self.benchmark, self.env.tasks)

    def cell(self, benchmark: str | None = None, backbone: str | None = None) -> EnvConfig:
        """The training env of one cell: `env` with the simulator profile
        ``BACKBONE/BENCHMARK`` and the questions of that benchmark (defaults: `backbone`,
        `benchmark`)."""
        profile = f"{backbone or self.backbone}/{benchmark or self.benchmark}"
        return dataclasses.replace(self.env, profile=profile, tasks=self.task_spec(benchmark))

    def eval_config(self, env: EnvConfig) -> EnvConfig:
        """The training env `env` of a cell on the backend that evaluates."""
        if self.simulated:
            return env
        return dataclasses.replace(
            env, backend=self.backend, backend_kwargs=dict(self.backend_kwargs)
        )

    def notes(self) -> list[str]:
        if self.simulated:
            return [SIMULATED_NOTE]
        name = self.backend if isinstance(self.backend, str) else type(self.backend).__name__
        return [
            f"Evaluated on backend {name!r}. The learned methods were trained on the "
            "simulated profile of each column (the simulator stands in for the LLM during "
            "training), then evaluated on the real backend; the oracle is skipped (its "
            "exact look-ahead is defined for the simulator only)."
        ]

    def log(self, message: str) -> None:
        if self.progress:
            print(message, flush=True)

    def describe(self) -> dict[str, Any]:
        """The setup as JSON-able fields (``results["config"]``; `render` reads it)."""
        return {
            "budget": dataclasses.asdict(self.budget),
            "backbone": self.backbone,
            "benchmark": self.benchmark,
            "tasks": dict(self.tasks),
            "backend": self.backend if isinstance(self.backend, str) else repr(self.backend),
            "backend_kwargs": dict(self.backend_kwargs),
            "env": {f.name: getattr(self.env, f.name) for f in dataclasses.fields(self.env)},
            "eval_episodes": self.eval_episodes,
            "training_backend": "simulated",
        }


def tasks_from_dir(folder: str | Path) -> dict[str, str]:
    """`load_tasks` specs for the six benchmarks found in a data folder laid out like
    ``../shared/data`` (`DATA_FOLDERS`)."""
    folder = Path(folder)
    specs = {b: f"{b}:{folder / rel}" for b, rel in DATA_FOLDERS.items() if (folder / rel).exists()}
    if not specs:
        raise ValueError(
            f"no benchmark files under {folder}: expected e.g. {folder / DATA_FOLDERS['gsm8k']}"
        )
    return specs
