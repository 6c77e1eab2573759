"""Versioned benchmark suites: named tasks (an env configuration each) and the protocol
every method is trained and evaluated under. ``mpdf-bench-v1`` is frozen: a change to a
task or to its protocol makes a new suite (``mpdf-bench-v2``); `tests/test_bench.py` pins
v1's definitions."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from algorithms.common import TRAIN_TASKS
from deliberation_env import EnvConfig
from experiments.budgets import Budget

Signal = Literal["self", "verifier"]
"""How informative the agents' correctness signals are: ``self`` (today's self-judge
profiles, AUROC 0.55-0.62) or ``verifier`` (a trained verifier's score, the profiles'
``/verifier`` variants)."""

PROFILE_VERSION = "v1"
"""The simulator calibration the v1 suite pins (``@v1`` profile suffix): a later
calibration cannot move v1's numbers; a task whose pinned profile is gone fails loudly."""


class ProfileNotRegistered(LookupError):
    """A task's simulator profile is not registered (yet): the task cannot run."""


@dataclass(frozen=True)
class BenchProtocol:
    """How every method is trained and evaluated on every task of a suite."""

    name: str
    train_episodes: int
    """Training deliberations per (task, method, seed): the budget is
    ``train_episodes * N * T`` agent-steps (one agent acting in one round), equal for every
    method. Group methods play `questions_per_update` x `group_size` of them per update,
    PPO as many distinct questions, SFT records them for its dataset
    (`experiments.pipeline.method_config`)."""
    questions_per_update: int
    """Q, questions per update of a group method."""
    group_size: int
    """G, rollouts per question."""
    sft_epochs: int
    """Passes of SFT over its `train_episodes` recorded deliberations."""
    eval_episodes: int
    """Held-out questions per evaluation seed (drawn from the held-out quarter of the
    question pool, `algorithms.common.split_tasks`: never trained on)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Default seeds. Seed s trains with ``seed=s`` and evaluates with evaluation seed s,
    the same episodes for every method, so differences are paired."""
    questions: str = TRAIN_TASKS
    """The question pool (a `load_tasks` spec): the simulator reads a question's id only
    (its latent difficulty), so the built-in generator serves every benchmark profile."""

    def __post_init__(self) -> None:
        per_update = self.questions_per_update * self.group_size
        if self.train_episodes % per_update:
            raise ValueError(
                f"protocol {self.name}: train_episodes={self.train_episodes} is not a multiple "
                f"of questions_per_update x group_size = {per_update}"
            )

    @property
    def updates(self) -> int:
        return self.train_episodes // (self.questions_per_update * self.group_size)

    def budget(self, seeds: Sequence[int]) -> Budget:
        """The `experiments.budgets.Budget` that `method_config` turns into each method's
        config."""
        seeds = tuple(int(s) for s in seeds)
        return Budget(
            updates=self.updates, questions_per_update=self.questions_per_update,
            group_size=self.group_size, sft_episodes=self.train_episodes,
            sft_epochs=self.sft_epochs, eval_episodes=self.eval_episodes,
            eval_seeds=seeds, train_seeds=seeds,
        )  # fmt: skip


@dataclass(frozen=True)
class BenchTask:
    """One task: a simulated deliberation env. Its profile is resolved when the task runs,
    so a suite can name profiles that are registered later (the ``/verifier`` variants)."""

    name: str
    backbone: str
    benchmark: str
    signal: Signal = "self"
    num_agents: int = 3
    max_rounds: int = 3
    token_cost: float = 0.0
    axis: str = "backbone x benchmark"
    """Which axis of the suite the task covers (the docs' table groups by it)."""

    def profile_candidates(self) -> tuple[str, ...]:
        """Profile names, first registered wins: ``self`` is today's plain
        ``BACKBONE/BENCHMARK`` (by definition equal to ``BACKBONE/BENCHMARK/self``)."""
        base = f"{self.backbone}/{self.benchmark}"
        names = (base, f"{base}/self") if self.signal == "self" else (f"{base}/{self.signal}",)
        return tuple(f"{n}@{PROFILE_VERSION}" for n in names)

    def profile(self) -> str:
        """The simulator profile to run, or `ProfileNotRegistered` saying which is missing."""
        from agents.profiles import get_profile

        for name in self.profile_candidates():
            try:
                get_profile(name)
            except ValueError:
                continue
            return name
        raise ProfileNotRegistered(
            f"task {self.name}: simulator profile {' or '.join(self.profile_candidates())} "
            "is not registered (the /verifier profile variants ship with agents.profiles); "
            "run the other tasks with --tasks, or register the profile first"
        )

    def available(self) -> bool:
        try:
            self.profile()
        except ProfileNotRegistered:
            return False
        return True

    def env(self, protocol: BenchProtocol) -> EnvConfig:
        """The task's env on the protocol's question pool (resolves the profile)."""
        return EnvConfig(
            profile=self.profile(), tasks=protocol.questions, num_agents=self.num_agents,
            max_rounds=self.max_rounds, token_cost=self.token_cost,
            max_peers=max(EnvConfig.max_peers, self.num_agents - 1),
        )  # fmt: skip

    def agent_steps(self, protocol: BenchProtocol) -> int:
        """The training budget in agent-steps."""
        return protocol.train_episodes * self.num_agents * self.max_rounds

    @property
    def slug(self) -> str:
        """The name as one path component (cell files)."""
        return self.name.replace("/", "__")


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    protocol: BenchProtocol
    tasks: tuple[BenchTask, ...]
    description: str = ""
    protocols: dict[str, BenchProtocol] = field(default_factory=dict)
    """Other protocols a run may choose (``smoke``, for tests): their numbers are not the
    suite's and the report says so."""

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"suite {self.name}: task names repeat")

    def task(self, name: str) -> BenchTask:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ValueError(f"suite {self.name} has no task {name!r}; `--list` prints them")

    def select(self, patterns: Sequence[str] = ("*",)) -> list[BenchTask]:
        """Tasks whose name matches any fnmatch pattern, in suite order; a pattern that
        matches nothing is an error (a typo would silently shrink the benchmark)."""
        patterns = list(patterns) or ["*"]
        for p in patterns:
            if not any(fnmatch.fnmatchcase(t.name, p) for t in self.tasks):
                raise ValueError(
                    f"--tasks {p!r} matches no task of {self.name}; `--list` prints them"
                )
        return [t for t in self.tasks if any(fnmatch.fnmatchcase(t.name, p) for p in patterns)]

    def get_protocol(self, name: str | None) -> BenchProtocol:
        if name is None or name == self.protocol.name:
            return self.protocol
        if name not in self.protocols:
            valid = ", ".join([self.protocol.name, *self.protocols])
            raise ValueError(f"suite {self.name} has no protocol {name!r}; valid: {valid}")
        return self.protocols[name]


# --------------------------------------------------------------------------- mpdf-bench-v1
V1_PROTOCOL = BenchProtocol(
    name="v1", train_episodes=2560, questions_per_update=16, group_size=8, sft_epochs=8,
    eval_episodes=1000,
)  # fmt: skip
"""v1: 2,560 training deliberations (20 group updates of 16 questions x 8 rollouts;
23,040 agent-steps at N = T = 3), 1,000 held-out questions per seed, seeds 0, 1, 2."""

SMOKE_PROTOCOL = BenchProtocol(
    name="smoke", train_episodes=32, questions_per_update=4, group_size=4, sft_epochs=1,
    eval_episodes=48, seeds=(0, 1),
)  # fmt: skip
"""Seconds per cell, for tests and for trying a method out; the numbers mean nothing."""


def _v1_tasks() -> tuple[BenchTask, ...]:
    grid = [
        ("llama3.1-8b", "gsm8k"), ("llama3.1-8b", "math"), ("llama3.1-8b", "aime"),
        ("llama3.1-8b", "mmlu"), ("llama3.2-3b", "gsm8k"), ("llama3.2-3b", "math"),
        ("qwen2.5-7b", "gsm8k"), ("qwen2.5-7b", "math"), ("qwen2.5-7b", "aime"),
        ("qwen2.5-7b", "mmlu"), ("qwen2.5-3b", "gsm8k"), ("qwen2.5-3b", "mmlu"),
    ]  # fmt: skip
    verifier = [
        ("llama3.1-8b", "gsm8k"), ("llama3.1-8b", "math"), ("llama3.2-3b", "gsm8k"),
        ("qwen2.5-7b", "math"), ("qwen2.5-7b", "mmlu"), ("qwen2.5-3b", "gsm8k"),
    ]  # fmt: skip
    tasks = [BenchTask(f"{b}/{m}/self", b, m) for b, m in grid]
    tasks += [BenchTask(f"{b}/{m}/verifier", b, m, "verifier", axis="signal") for b, m in verifier]
    tasks += [
        BenchTask("llama3.1-8b/gsm8k/self/n5", "llama3.1-8b", "gsm8k", num_agents=5,
                  axis="team size"),
        BenchTask("qwen2.5-7b/math/verifier/n5", "qwen2.5-7b", "math", "verifier", num_agents=5,
                  axis="team size"),
        BenchTask("llama3.1-8b/gsm8k/self/t5", "llama3.1-8b", "gsm8k", max_rounds=5,
                  axis="rounds"),
        BenchTask("qwen2.5-7b/mmlu/verifier/t5", "qwen2.5-7b", "mmlu", "verifier", max_rounds=5,
                  axis="rounds"),
        BenchTask("llama3.1-8b/gsm8k/self/cost", "llama3.1-8b", "gsm8k", token_cost=0.1,
                  axis="token cost"),
        BenchTask("llama3.1-8b/gsm8k/verifier/cost", "llama3.1-8b", "gsm8k", "verifier",
                  token_cost=0.1, axis="token cost"),
    ]  # fmt: skip
    return tuple(tasks)


MPDF_BENCH_V1 = Suite(
    name="mpdf-bench-v1",
    version=1,
    protocol=V1_PROTOCOL,
    tasks=_v1_tasks(),
    description=(
        "24 simulated MPDF deliberation tasks: the four paper backbones x GSM8K, MATH, AIME, "
        "MMLU with self-judge signals, six verifier-signal twins, and N = 5, T = 5 and "
        "token-cost variants"
    ),
    protocols={"smoke": SMOKE_PROTOCOL},
)

SUITES: dict[str, Suite] = {}
"""Registered suites by name (`register_suite`)."""

DEFAULT_SUITE = "mpdf-bench-v1"


def register_suite(suite: Suite) -> None:
    """Make a suite runnable by name. A released name is never redefined: version it."""
    if suite.name in SUITES:
        raise ValueError(f"a suite named {suite.name!r} is already registered; version yours")
    SUITES[suite.name] = suite


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; registered suites: {', '.join(SUITES)}")
    return SUITES[name]


register_suite(MPDF_BENCH_V1)


def suite_table(suite: Suite) -> str:
    """The suite as a Markdown table (docs/benchmark.md carries v1's verbatim)."""
    from experiments.report import table

    p = suite.protocol
    rows = [
        [f"`{t.name}`", t.axis, t.backbone, t.benchmark, t.signal, t.num_agents, t.max_rounds,
         f"{t.token_cost:g}", f"{t.agent_steps(p):,}"]
        for t in suite.tasks
    ]  # fmt: skip
    header = ["task", "axis", "backbone", "benchmark", "signal", "N", "T", "token_cost",
              "train agent-steps"]  # fmt: skip
    return table(header, rows)
