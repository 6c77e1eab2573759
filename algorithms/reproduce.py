"""The MPDF paper's experiments (Yang & Thomason, arXiv 2509.03817), reproduced:
``deliberate reproduce EXPERIMENT --out DIR``. Each writes ``results.json``, ``results.md``
and PNG figures; every number is a mean over seeds with a Student-t 95% interval.

By default everything runs on the *simulated* backend: the numbers come from a calibrated
statistical model of LLM deliberation, not from real LLMs (docs/reproduction.md). With
``backend=`` a real backend evaluates the policies; the learned methods are still trained
on the simulator profile, and the outputs say so.

Seeds: method runs are indexed by the evaluation seeds of the budget. A learned method's
run r uses the policy trained with ``train_seeds[r % len(train_seeds)]``; with one training
seed the interval covers evaluation noise only, with as many training seeds as evaluation
seeds it covers training variance too. Every method sees the same questions and initial
answers in run r (same evaluation seed), so differences between methods are paired.

Experiments (`EXPERIMENTS`): ``main-table``, ``backbones``, ``reward-scale``,
``tau-sweep``, ``rounds-agents``, ``action-shift``, ``tokens``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from algorithms.common import TrainConfig, Trainer, grouped_advantages, policy_gradient_update
from algorithms.evaluate import (
    aggregate,
    episode_seeds,
    evaluate,
    jsonable,
    mean_ci,
    new_figure,
    train_eval_split,
)
from algorithms.experiments import Preset, learning_curve, method_config
from algorithms.grpo import grpo_advantages
from algorithms.heuristics import make_protocol
from algorithms.policy import MetaPolicy, Policy
from algorithms.registry import get_algorithm
from algorithms.softrankpo import softrank_advantages
from deliberation_env import VectorDeliberationEnv, load_tasks, voting
from deliberation_env.core import Action

BACKBONES = ("llama3.1-8b", "llama3.2-3b", "qwen2.5-7b", "qwen2.5-3b")
"""The paper's four Instruct backbones (simulator profiles ``BACKBONE/BENCHMARK``)."""
BENCHMARKS = ("gsm8k", "math", "aime", "amc", "mmlu", "humaneval")
"""The paper's six benchmarks, in its Table 1 order."""
DEFAULT_TASKS = "arithmetic:2000"
"""Questions for every profile: the simulator uses a question's id only (for its latent
difficulty), so the built-in generator serves every benchmark profile."""
DATA_FOLDERS = {
    "gsm8k": "gsm8k/test.jsonl",
    "math": "minerva_math/test.jsonl",
    "aime": "aime24/test.jsonl",
    "amc": "amc23/test.jsonl",
    "mmlu": "mmlu_stem/test.jsonl",
    "humaneval": "humaneval/HumanEval.jsonl.gz",
}
"""Where `tasks_from_dir` finds each benchmark under a data folder (``../shared/data``)."""

PAPER = {
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
"""Figures the paper reports (DESIGN section 9), printed beside ours."""

HEURISTICS = ("single", "self_consistency", "debate", "reconcile", "progressive_hint",
              "refine_minority")  # fmt: skip
"""The fixed protocols of the main table; ``refine_minority`` is the strongest simple rule
on the simulator, so the learned methods' claims must stand against it."""
LEARNED = ("sft", "sft+ppo", "sft+grpo", "sft+softrankpo", "softrankpo")
"""The learned rows: stage-1 SFT, then each RL method started and KL-anchored at it
(MPDF's pipeline); and SoftRankPO alone from a fresh policy, which shows what the SFT
stage adds or costs."""
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
    "oracle": "Oracle (limit, sees correctness)",
}
SIMULATED_NOTE = (
    "Simulated: these numbers come from a calibrated statistical model of LLM deliberation "
    "(agents.simulated), not from real LLMs; agreement with the paper speaks to the "
    "simulator's calibration and the methods, not to the backbone models."
)


# --------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class Budget:
    """How much training and evaluation an experiment gets."""

    updates: int
    """Updates of each group RL method (PPO gets the same episodes per update)."""
    questions_per_update: int
    group_size: int
    sft_episodes: int
    """Deliberations recorded for the SFT dataset."""
    sft_epochs: int
    eval_episodes: int
    """Held-out questions per evaluation seed."""
    eval_seeds: tuple[int, ...]
    train_seeds: tuple[int, ...]
    """Training seeds of the learned methods (see the module docstring)."""

    def preset(self) -> Preset:
        return Preset(
            updates=self.updates,
            questions_per_update=self.questions_per_update,
            group_size=self.group_size,
            sft_episodes=self.sft_episodes,
            sft_epochs=self.sft_epochs,
            eval_episodes=self.eval_episodes,
            seeds=self.eval_seeds,
        )


BUDGETS: dict[str, Budget] = {
    # Seconds per experiment; for the test suite only (the numbers mean nothing).
    "tiny": Budget(updates=2, questions_per_update=4, group_size=4, sft_episodes=64,
                   sft_epochs=1, eval_episodes=40, eval_seeds=(0, 1), train_seeds=(0,)),
    # Minutes per experiment on 2 CPU cores; one training seed, three evaluation seeds.
    "quick": Budget(updates=40, questions_per_update=32, group_size=8, sft_episodes=2048,
                    sft_epochs=8, eval_episodes=1000, eval_seeds=(0, 1, 2), train_seeds=(0,)),
    # The paper's protocol: three training seeds, each evaluated on its own seed.
    "full": Budget(updates=200, questions_per_update=64, group_size=8, sft_episodes=8192,
                   sft_epochs=20, eval_episodes=2000, eval_seeds=(0, 1, 2),
                   train_seeds=(0, 1, 2)),
}  # fmt: skip


@dataclass
class Setup:
    """What every experiment shares: the budget, the backbone, the questions, and the
    backend that evaluates (training always runs on the simulator)."""

    budget: Budget = BUDGETS["quick"]
    backbone: str = "llama3.1-8b"
    benchmark: str = "gsm8k"
    """The benchmark of the single-profile experiments (all but main-table, backbones)."""
    tasks: Mapping[str, str] = field(default_factory=dict)
    """Benchmark -> `load_tasks` spec; a benchmark not listed gets `DEFAULT_TASKS`."""
    backend: Any = "simulated"
    """The backend that *evaluates* (a registered name or an instance)."""
    backend_kwargs: Mapping[str, Any] = field(default_factory=dict)
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Other `EnvConfig` fields, for training and evaluation alike."""
    episodes: int | None = None
    """Override of the budget's evaluation episodes (a real backend pays per question)."""
    progress: bool = True

    @property
    def simulated(self) -> bool:
        return isinstance(self.backend, str) and self.backend == "simulated"

    @property
    def eval_episodes(self) -> int:
        return self.episodes or self.budget.eval_episodes

    def profile(self, benchmark: str | None = None, backbone: str | None = None) -> str:
        return f"{backbone or self.backbone}/{benchmark or self.benchmark}"

    def task_spec(self, benchmark: str | None = None) -> str:
        return self.tasks.get(benchmark or self.benchmark, DEFAULT_TASKS)

    def eval_config(self, profile: str, num_agents: int = 3, max_rounds: int = 3) -> dict:
        cfg = {
            "num_agents": num_agents,
            "max_rounds": max_rounds,
            "profile": profile,
            **self.env_kwargs,
        }
        if not self.simulated:
            cfg.update(backend=self.backend, backend_kwargs=dict(self.backend_kwargs))
        return cfg

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
        return {
            "budget": dataclasses.asdict(self.budget),
            "backbone": self.backbone,
            "benchmark": self.benchmark,
            "tasks": dict(self.tasks),
            "backend": self.backend if isinstance(self.backend, str) else repr(self.backend),
            "backend_kwargs": dict(self.backend_kwargs),
            "env_kwargs": dict(self.env_kwargs),
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


# --------------------------------------------------------------------------- training
_CACHE: dict[str, Any] = {}
"""Trained policies by configuration, so experiments run in one process (the benchmark)
share them; every run seeds torch itself, so a cached policy equals a fresh one."""


def _key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=repr)


@functools.lru_cache(maxsize=32)
def _split(spec: str) -> tuple[list, list]:
    """(train, held-out) questions, as the trainers split them (`common.split_tasks`)."""
    return train_eval_split(load_tasks(spec), 0.25, seed=0)


def _base(
    setup: Setup, profile: str, tasks: str, num_agents: int, max_rounds: int, seed: int
) -> dict[str, Any]:
    env_kwargs = {k: v for k, v in setup.env_kwargs.items() if k not in ("backend",)}
    return {
        "profile": profile,
        "tasks": tasks,
        "num_agents": num_agents,
        "max_rounds": max_rounds,
        "seed": seed,
        "env_kwargs": env_kwargs,
    }


def train_sft(
    setup: Setup, profile: str, tasks: str, num_agents: int = 3, max_rounds: int = 3, seed: int = 0
) -> MetaPolicy:
    """Stage 1 (behaviour cloning on hindsight labels) on the simulator; cached."""
    base = _base(setup, profile, tasks, num_agents, max_rounds, seed)
    key = _key("sft", base, dataclasses.asdict(setup.budget))
    if key not in _CACHE:
        _, train = get_algorithm("sft").load()
        start = time.perf_counter()
        policy, _ = train(method_config("sft", setup.budget.preset(), base), progress=False)
        _CACHE[key] = policy
        setup.log(
            f"  trained sft on {profile} (N={num_agents}, T={max_rounds}, seed {seed}) "
            f"in {time.perf_counter() - start:.0f} s"
        )
    return _CACHE[key]


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "x0.1": lambda r: 0.1 * r,
    "x1": lambda r: r,
    "x10": lambda r: 10.0 * r,
    "exp": np.exp,
}
"""Strictly increasing reward transforms of the reward-scale experiment, applied to the
group returns before the advantage function."""


def transformed_update(method: str, transform: str) -> Callable[..., dict[str, float]]:
    """A group update whose advantages are ``advantage_fn(transform(R))`` on the group
    returns R: SoftRankPO's or GRPO's own advantage function and the shared surrogate."""
    fn = TRANSFORMS[transform]

    def update(policy, ref, optimizer, roll, cfg) -> dict[str, float]:
        if method == "softrankpo":
            advantage = partial(softrank_advantages, tau=cfg.tau)
        else:
            advantage = partial(grpo_advantages, scale_rewards=cfg.scale_rewards)
        adv = grouped_advantages(roll, lambda r: advantage(fn(r)))
        stats = policy_gradient_update(policy, ref, optimizer, roll, adv, cfg, clip=cfg.clip)
        return {**stats, "adv_std": float(adv.std())}

    return update


def train_rl(
    setup: Setup,
    method: str,
    profile: str,
    tasks: str,
    num_agents: int = 3,
    max_rounds: int = 3,
    seed: int = 0,
    from_sft: bool = True,
    transform: str | None = None,
    **overrides: Any,
) -> tuple[MetaPolicy, list[dict[str, Any]]]:
    """`method` (softrankpo, grpo, ppo) on the simulator, started from and KL-anchored at
    the SFT policy when `from_sft` (MPDF's two-stage pipeline); cached. `transform`
    (a `TRANSFORMS` name) wraps the group returns before the advantage function."""
    base = _base(setup, profile, tasks, num_agents, max_rounds, seed)
    key = _key(method, base, dataclasses.asdict(setup.budget), from_sft, transform, overrides)
    if key in _CACHE:
        return _CACHE[key]
    cfg = method_config(method, setup.budget.preset(), base)
    if method == "ppo":
        cfg = dataclasses.replace(cfg, beta=TrainConfig.beta)  # the pipeline's KL anchor
    cfg = dataclasses.replace(cfg, **overrides)
    start_policy = ref = None
    if from_sft:
        ref = train_sft(setup, profile, tasks, num_agents, max_rounds, seed)
        start_policy = copy.deepcopy(ref)
    # The trainers draw actions and minibatches from torch's global generator: seed it
    # here so a run depends on its own seed only (and runs under different transforms
    # see the same random numbers).
    torch.manual_seed(seed)
    start = time.perf_counter()
    if transform is None:
        _, train = get_algorithm(method).load()
        policy, history = train(cfg, policy=start_policy, ref=ref, progress=False)
    else:
        trainer = Trainer(
            method, cfg, transformed_update(method, transform), start_policy, ref, progress=False
        )
        policy, history = trainer.run()
    label = f"{'sft+' if from_sft else ''}{method}" + (f" [{transform}]" if transform else "")
    extra = "".join(f", {k}={v}" for k, v in overrides.items())
    setup.log(
        f"  trained {label} on {profile} (N={num_agents}, T={max_rounds}, seed {seed}"
        f"{extra}) in {time.perf_counter() - start:.0f} s"
    )
    _CACHE[key] = (policy, history)
    return policy, history


def learned(
    setup: Setup,
    name: str,
    profile: str,
    tasks: str,
    num_agents: int = 3,
    max_rounds: int = 3,
    **overrides: Any,
) -> list[MetaPolicy]:
    """One policy per training seed of the budget for a learned row name: ``sft``,
    ``sft+METHOD`` (the two-stage pipeline) or ``METHOD`` (RL from a fresh policy)."""
    policies = []
    for seed in setup.budget.train_seeds:
        if name == "sft":
            policies.append(train_sft(setup, profile, tasks, num_agents, max_rounds, seed))
        else:
            method = name.removeprefix("sft+")
            policy, _ = train_rl(
                setup, method, profile, tasks, num_agents, max_rounds, seed,
                from_sft=name.startswith("sft+"), **overrides,
            )  # fmt: skip
            policies.append(policy)
    return policies


# --------------------------------------------------------------------------- evaluation
def evaluate_runs(
    setup: Setup, policy: Policy | Sequence[Policy], env_config: Mapping[str, Any], tasks: list
) -> list[dict[str, Any]]:
    """One `evaluate` run per evaluation seed; a list of policies (one per training seed)
    is cycled over the seeds (the module docstring)."""
    seeds = setup.budget.eval_seeds
    policies = list(policy) if isinstance(policy, (list, tuple)) else [policy]
    runs: list[dict[str, Any] | None] = [None] * len(seeds)
    for k, p in enumerate(policies):
        mine = [r for r in range(len(seeds)) if r % len(policies) == k]
        if not mine:
            continue
        out = evaluate(p, env_config, tasks, [seeds[r] for r in mine], setup.eval_episodes)
        for r, run in zip(mine, out):
            runs[r] = run
    return [r for r in runs if r is not None]


def protocol(name: str) -> Policy:
    return make_protocol(name, seed=0) if name == "random" else make_protocol(name)


def _row_policies(
    setup: Setup,
    rows: Sequence[str],
    profile: str,
    tasks: str,
    num_agents: int = 3,
    max_rounds: int = 3,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in rows:
        if row in LEARNED:
            out[row] = learned(setup, row, profile, tasks, num_agents, max_rounds)
        elif row == "oracle" and not setup.simulated:
            continue
        else:
            out[row] = protocol(row)
    return out


def evaluate_rows(
    setup: Setup,
    rows: Sequence[str],
    profile: str,
    tasks: str,
    num_agents: int = 3,
    max_rounds: int = 3,
) -> dict[str, list[dict]]:
    """Train (cached) and evaluate each row on held-out questions: row -> runs."""
    policies = _row_policies(setup, rows, profile, tasks, num_agents, max_rounds)
    _, eval_tasks = _split(tasks)
    env_config = setup.eval_config(profile, num_agents, max_rounds)
    return {row: evaluate_runs(setup, p, env_config, eval_tasks) for row, p in policies.items()}


def _metric(runs: Sequence[Mapping[str, Any]], key: str = "team_accuracy") -> dict[str, Any]:
    values = [float(r[key]) for r in runs]
    mean, lo, hi = mean_ci(values)
    return {"mean": mean, "ci95": [lo, hi], "values": values}


def best_heuristic(by_row: Mapping[str, Mapping[str, Any]], candidates: Sequence[str]) -> str:
    """The candidate with the highest mean team accuracy. It is picked on the evaluation
    itself, which favours the baseline: a conservative comparison for the learned rows."""
    present = [c for c in candidates if c in by_row]
    return max(present, key=lambda c: by_row[c]["team_accuracy"]["mean"])


# --------------------------------------------------------------------------- effective actions
def effective_action_counts(
    actions: np.ndarray,
    answer_before: np.ndarray,
    answer_after: np.ndarray,
    active: np.ndarray | None = None,
) -> dict[str, int]:
    """Count one round's actions ``[B, N]`` by what they did.

    A CONCEDE changes nothing when the peer it copies already holds my answer (the env
    then treats it as PERSIST): it is counted as ``concede_noop``, not ``concede``. Since a
    real CONCEDE always changes the answer (it copies a peer holding another one), a
    CONCEDE is a no-op exactly when the agent's answer is unchanged. ``concede_all_agree``
    counts the no-ops where every peer already shared my answer (a subset of
    ``concede_noop``). Answers are the env's answer ids (-1 unparseable); `active` ([B])
    keeps the envs that played the round.
    """
    actions = np.asarray(actions)
    before, after = np.asarray(answer_before), np.asarray(answer_after)
    live = np.ones(actions.shape, bool)
    if active is not None:
        live &= np.asarray(active, bool)[:, None]
    n = actions.shape[-1]
    same = voting.agreement(before)
    peers_agree = same.sum(-1) - same[:, np.arange(n), np.arange(n)]
    all_agree = (before >= 0) & (peers_agree == n - 1) & (n > 1)
    concede = (actions == Action.CONCEDE) & live
    noop = concede & (after == before)
    return {
        "persist": int(((actions == Action.PERSIST) & live).sum()),
        "refine": int(((actions == Action.REFINE) & live).sum()),
        "concede": int((concede & ~noop).sum()),
        "concede_noop": int(noop.sum()),
        "concede_all_agree": int((concede & all_agree).sum()),
    }


EFFECTIVE_KEYS = ("persist", "refine", "concede", "concede_noop")


def effective_shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Shares of persist / refine / real concede / no-op concede (they sum to 1), plus
    ``concede_all_agree`` and ``keeps_answer_without_llm`` (persist + no-op concede)."""
    total = sum(counts[k] for k in EFFECTIVE_KEYS)
    share = {k: counts[k] / total if total else 0.0 for k in (*EFFECTIVE_KEYS, "concede_all_agree")}
    share["keeps_answer_without_llm"] = share["persist"] + share["concede_noop"]
    return share


def evaluate_effective(
    policy: Policy, env_config: Mapping[str, Any], tasks: list, seeds: Sequence[int], episodes: int
) -> list[dict[str, Any]]:
    """Per seed: effective action counts per round and overall, on exactly the episodes
    `evaluate` plays (same env, reset seeds and deterministic actions)."""
    cfg = {**env_config, **dict(getattr(policy, "env_overrides", {}) or {}), "tasks": list(tasks)}
    env = VectorDeliberationEnv(episodes, autoreset=False, **cfg)
    out = []
    try:
        for seed in seeds:
            obs, infos = env.reset(seed=episode_seeds(int(seed), episodes))
            bind = getattr(policy, "bind", None)
            if callable(bind):
                bind(env)
            active = np.ones(episodes, bool)
            per_round = []
            while active.any():
                actions = np.asarray(policy.act(obs, infos["action_mask"], deterministic=True))
                before = env.core.state.answer.copy()
                obs, _, _, _, infos = env.step(actions)
                per_round.append(
                    effective_action_counts(actions, before, env.core.state.answer, active)
                )
                active = infos["active"]
            total = {k: sum(r[k] for r in per_round) for k in per_round[0]}
            out.append({"seed": int(seed), "per_round": per_round, "total": total})
    finally:
        env.close()
    return out


# --------------------------------------------------------------------------- output
def _pm(metric: Mapping[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    lo, hi = metric["ci95"]
    return f"{metric['mean'] * scale:.{digits}f} ± {(hi - lo) / 2 * scale:.{digits}f}"


def _write(out: Path, results: dict[str, Any], markdown: str, figures: Sequence[Path]) -> None:
    results["files"] = ["results.json", "results.md", *(p.name for p in figures)]
    (out / "results.json").write_text(json.dumps(jsonable(results), indent=2) + "\n")
    (out / "results.md").write_text(markdown)


def _header(title: str, setup: Setup, results: Mapping[str, Any]) -> str:
    b = setup.budget
    seeds = (
        f"{len(b.eval_seeds)} evaluation seeds x {setup.eval_episodes} held-out questions; "
        f"training seeds {list(b.train_seeds)}"
    )
    notes = "\n".join(f"> {n}" for n in results["notes"])
    return (
        f"# {title}\n\n{notes}\n\nMean ± half of the 95% CI over seeds ({seeds}); "
        f"{results['wall_seconds']:.0f} s wall, {results['cpu_seconds']:.0f} s CPU.\n\n"
    )


def _start(name: str, setup: Setup, out: str | Path) -> tuple[Path, tuple, dict[str, Any]]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    setup.log(f"[{name}] budget {dataclasses.asdict(setup.budget)}")
    return (
        out,
        (time.perf_counter(), time.process_time()),
        {"experiment": name, "config": setup.describe(), "notes": setup.notes(), "paper": PAPER},
    )


def _clock(start: tuple[float, float]) -> dict[str, float]:
    """Wall and CPU seconds since `start`: on a shared machine the CPU time is the
    steadier measure of an experiment's cost."""
    return {
        "wall_seconds": time.perf_counter() - start[0],
        "cpu_seconds": time.process_time() - start[1],
    }


# --------------------------------------------------------------------------- main-table
def main_table(
    setup: Setup,
    out: str | Path,
    benchmarks: Sequence[str] = BENCHMARKS,
    rows: Sequence[str] = ROWS,
) -> dict[str, Any]:
    """The paper's Table 1: every row on the six benchmark profiles of one backbone, and
    the average; plus the paired difference of SFT+SoftRankPO to the strongest baseline."""
    out, t0, results = _start("main-table", setup, out)
    runs: dict[str, dict[str, list]] = {row: {} for row in rows}
    columns = []
    for bench in benchmarks:
        if bench == "humaneval" and not setup.simulated:
            results["notes"].append(
                "HumanEval skipped: text backends cannot verify code answers yet "
                "(the sandboxed test runner is planned)."
            )
            setup.log("  humaneval skipped on a real backend (code answers cannot be verified)")
            continue
        profile = setup.profile(bench)
        setup.log(f"  {profile}")
        for row, r in evaluate_rows(setup, rows, profile, setup.task_spec(bench)).items():
            runs[row][bench] = r
        columns.append(bench)
    runs = {row: r for row, r in runs.items() if r}
    table: dict[str, dict[str, Any]] = {}
    for row, by_bench in runs.items():
        cells = {b: _metric(by_bench[b]) for b in columns}
        n_runs = min(len(by_bench[b]) for b in columns)
        avg = [
            float(np.mean([by_bench[b][r]["team_accuracy"] for b in columns]))
            for r in range(n_runs)
        ]
        tokens = [
            float(np.mean([by_bench[b][r]["tokens_per_question"] for b in columns]))
            for r in range(n_runs)
        ]
        m, lo, hi = mean_ci(avg)
        tm, tlo, thi = mean_ci(tokens)
        table[row] = {
            "benchmarks": cells,
            "average": {"mean": m, "ci95": [lo, hi], "values": avg},
            "tokens_per_question_average": {"mean": tm, "ci95": [tlo, thi], "values": tokens},
            "persist_share": float(
                np.mean([r["persist_share"] for b in columns for r in by_bench[b]])
            ),
        }
    averages = {row: {"team_accuracy": t["average"]} for row, t in table.items()}
    best = best_heuristic(averages, [h for h in HEURISTICS if h in table])
    claims: dict[str, Any] = {}
    if "sft+softrankpo" in table:
        claims = {
            "strongest_baseline": best,
            "minus_strongest": {},
            "paper_softrankpo_minus_strongest": PAPER["avg_accuracy_softrankpo"]
            - PAPER["avg_accuracy_strongest_baseline"],
        }
        for row in ("sft+softrankpo", "softrankpo"):
            if row in table:
                diff = np.subtract(
                    table[row]["average"]["values"], table[best]["average"]["values"]
                )
                m, lo, hi = mean_ci(diff)
                claims["minus_strongest"][row] = {"mean": m, "ci95": [lo, hi]}
        claims["softrankpo_minus_strongest"] = claims["minus_strongest"]["sft+softrankpo"]
    results.update(
        columns=columns,
        table=table,
        claims=claims,
        per_run={
            row: {b: [summary_row(r) for r in rs] for b, rs in by.items()}
            for row, by in runs.items()
        },
    )
    results.update(_clock(t0))
    if claims:
        d = claims["softrankpo_minus_strongest"]
        results["headline"] = (
            f"avg accuracy SFT+SoftRankPO {table['sft+softrankpo']['average']['mean']:.1%} vs "
            f"strongest baseline {best} {table[best]['average']['mean']:.1%} "
            f"(diff {d['mean'] * 100:+.1f} pts, CI [{d['ci95'][0] * 100:+.1f}, "
            f"{d['ci95'][1] * 100:+.1f}])"
            + (
                f"; SoftRankPO without SFT {table['softrankpo']['average']['mean']:.1%}"
                if "softrankpo" in table
                else ""
            )
            + (f"; oracle {table['oracle']['average']['mean']:.1%}" if "oracle" in table else "")
        )
    figures = [_plot_main_table(results, out / "main_table.png")]
    md = _header(f"Main table ({setup.backbone}, N=3, T=3)", setup, results)
    md += "Team accuracy (%) per benchmark profile; tokens per question averaged over them.\n\n"
    md += "| method | " + " | ".join(columns) + " | average | tokens |\n"
    md += "|---|" + "---|" * (len(columns) + 2) + "\n"
    for row, t in table.items():
        cells = " | ".join(_pm(t["benchmarks"][b]) for b in columns)
        md += (
            f"| {LABELS.get(row, row)} | {cells} | **{_pm(t['average'])}** "
            f"| {t['tokens_per_question_average']['mean']:.0f} |\n"
        )
    if claims:
        md += f"\nAverage minus the strongest baseline ({LABELS[best]}), paired over seeds:\n\n"
        for row, d in claims["minus_strongest"].items():
            md += (
                f"- {LABELS[row]}: {d['mean'] * 100:+.2f} points (95% CI "
                f"{d['ci95'][0] * 100:+.2f} to {d['ci95'][1] * 100:+.2f})\n"
            )
        md += "\nPaper: SoftRankPO 55.74% vs the strongest baseline 51.60% (+4.14 points).\n"
    _write(out, results, md, figures)
    return results


def summary_row(run: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar metrics of one evaluation run (per-round detail dropped)."""
    return {k: v for k, v in run.items() if isinstance(v, (int, float))}


def _plot_main_table(results: Mapping[str, Any], path: Path) -> Path:
    table, columns = results["table"], [*results["columns"], "average"]
    fig, ax = new_figure(max(8.0, 1.6 * len(columns)), 4.8)
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(columns))
    cmap = __import__("matplotlib").colormaps["tab20"]
    for k, (row, t) in enumerate(table.items()):
        cells = [t["benchmarks"][c] if c != "average" else t["average"] for c in columns]
        means = np.array([c["mean"] for c in cells])
        err = np.array([(c["ci95"][1] - c["ci95"][0]) / 2 for c in cells])
        ax.bar(
            x + (k - len(table) / 2 + 0.5) * width,
            means,
            width,
            yerr=err,
            capsize=1.5,
            label=LABELS.get(row, row),
            color=cmap(k % 20),
        )
    ax.set_xticks(x, columns)
    ax.set_ylabel("team accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Main table: team accuracy per benchmark profile (95% CI over seeds)")
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------- backbones
def backbones(setup: Setup, out: str | Path, backbones: Sequence[str] = BACKBONES) -> dict:
    """The four backbones on one benchmark: the best heuristic vs SFT+SoftRankPO."""
    out, t0, results = _start("backbones", setup, out)
    rows = (*HEURISTICS, "sft+softrankpo", "oracle")
    per: dict[str, Any] = {}
    for bb in backbones:
        profile = setup.profile(backbone=bb)
        setup.log(f"  {profile}")
        runs = evaluate_rows(setup, rows, profile, setup.task_spec())
        agg = {
            row: {
                "team_accuracy": _metric(r),
                "tokens_per_question": _metric(r, "tokens_per_question"),
            }
            for row, r in runs.items()
        }
        best = best_heuristic(agg, HEURISTICS)
        diff = np.subtract(
            [r["team_accuracy"] for r in runs["sft+softrankpo"]],
            [r["team_accuracy"] for r in runs[best]],
        )
        m, lo, hi = mean_ci(diff)
        per[bb] = {
            "profile": profile,
            "best_heuristic": best,
            "methods": agg,
            "softrankpo_minus_best": {"mean": m, "ci95": [lo, hi]},
        }
    results.update(backbones=per, **_clock(t0))
    results["headline"] = "; ".join(
        f"{bb}: {p['methods']['sft+softrankpo']['team_accuracy']['mean']:.1%} vs "
        f"{p['best_heuristic']} {p['methods'][p['best_heuristic']]['team_accuracy']['mean']:.1%}"
        for bb, p in per.items()
    )
    figures = [_plot_backbones(per, out / "backbones.png")]
    md = _header(f"Backbones ({setup.benchmark}, N=3, T=3)", setup, results)
    md += (
        "| backbone | best heuristic | its accuracy (%) | SFT+SoftRankPO (%) | difference "
        "(points, 95% CI) | oracle (%) | tokens: heuristic / SoftRankPO |\n"
    )
    md += "|---|---|---|---|---|---|---|\n"
    for bb, p in per.items():
        m, d = p["methods"], p["softrankpo_minus_best"]
        oracle = _pm(m["oracle"]["team_accuracy"]) if "oracle" in m else "n/a"
        md += (
            f"| {bb} | {p['best_heuristic']} | {_pm(m[p['best_heuristic']]['team_accuracy'])} "
            f"| {_pm(m['sft+softrankpo']['team_accuracy'])} | {d['mean'] * 100:+.1f} "
            f"[{d['ci95'][0] * 100:+.1f}, {d['ci95'][1] * 100:+.1f}] | {oracle} "
            f"| {m[p['best_heuristic']]['tokens_per_question']['mean']:.0f} / "
            f"{m['sft+softrankpo']['tokens_per_question']['mean']:.0f} |\n"
        )
    _write(out, results, md, figures)
    return results


def _plot_backbones(per: Mapping[str, Any], path: Path) -> Path:
    fig, ax = new_figure(7.5, 4.5)
    x = np.arange(len(per))
    series = [
        ("best heuristic", lambda p: p["best_heuristic"]),
        ("SFT+SoftRankPO", lambda p: "sft+softrankpo"),
        ("oracle", lambda p: "oracle"),
    ]
    for k, (label, pick) in enumerate(series):
        cells = [p["methods"].get(pick(p)) for p in per.values()]
        if any(c is None for c in cells):
            continue
        means = np.array([c["team_accuracy"]["mean"] for c in cells])
        err = np.array([np.diff(c["team_accuracy"]["ci95"])[0] / 2 for c in cells])
        ax.bar(x + (k - 1) * 0.27, means, 0.27, yerr=err, capsize=3, label=label)
    ax.set_xticks(x, list(per))
    ax.set_ylabel("team accuracy")
    low = min(m["team_accuracy"]["ci95"][0] for p in per.values() for m in p["methods"].values())
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.legend(fontsize="small")
    ax.set_title("Backbones: best heuristic vs SFT+SoftRankPO (95% CI)")
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------- reward-scale
REWARD_SCALE_METHODS = {
    "softrankpo": ("softrankpo", {}),
    "grpo": ("grpo", {"scale_rewards": "group"}),
    "grpo_unscaled": ("grpo", {"scale_rewards": "none"}),
}
"""SoftRankPO; GRPO as in DeepSeekMath/TRL (rewards divided by the group std, so a pure
rescaling changes only the 1e-4 in the denominator); and Dr. GRPO (``scale_rewards=
"none"``), where the reward scale sets the advantage scale against the KL term."""


def _param_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


def reward_scale(
    setup: Setup,
    out: str | Path,
    transforms: Sequence[str] = tuple(TRANSFORMS),
    from_sft: bool = False,
) -> dict[str, Any]:
    """Rewards x0.1, x1, x10 and exp: the transform is applied to the group returns before
    the advantage function (not to the env's rewards). SoftRankPO is exactly invariant:
    with one seed its runs under every transform give identical parameters (asserted).

    RL starts from a fresh policy (KL-anchored at it) unless `from_sft`, so the learning
    curves show the algorithms learning rather than staying near an SFT policy."""
    out, t0, results = _start("reward-scale", setup, out)
    profile, tasks = setup.profile(), setup.task_spec()
    _, eval_tasks = _split(tasks)
    env_config = setup.eval_config(profile)
    ref = "x1" if "x1" in transforms else transforms[0]
    methods: dict[str, Any] = {}
    curves: dict[str, dict[str, list]] = {}
    for name, (method, overrides) in REWARD_SCALE_METHODS.items():
        trained = {
            tf: [
                train_rl(setup, method, profile, tasks, seed=s, from_sft=from_sft,
                         transform=tf, **overrides)
                for s in setup.budget.train_seeds
            ]
            for tf in transforms
        }  # fmt: skip
        methods[name], curves[name] = {}, {}
        for tf, runs_of_tf in trained.items():
            runs = evaluate_runs(setup, [p for p, _ in runs_of_tf], env_config, eval_tasks)
            methods[name][tf] = {
                "team_accuracy": _metric(runs),
                "tokens_per_question": _metric(runs, "tokens_per_question"),
            }
            curves[name][tf] = [learning_curve(h) for _, h in runs_of_tf]
            if tf != ref:
                pairs = list(zip(runs_of_tf, trained[ref]))
                methods[name][tf]["max_abs_param_diff_vs_" + ref] = max(
                    _param_diff(p, q) for (p, _), (q, _) in pairs
                )
                methods[name][tf]["max_abs_curve_diff_vs_" + ref] = max(
                    abs(a["team_accuracy"] - b["team_accuracy"])
                    for (_, h), (_, g) in pairs
                    for a, b in zip(learning_curve(h), learning_curve(g))
                )
    key = "max_abs_param_diff_vs_" + ref
    invariance = {
        name: {tf: m[key] for tf, m in by.items() if key in m} for name, by in methods.items()
    }
    results.update(
        transform_applied_to="group returns, before the advantage function (env rewards unchanged)",
        from_sft=from_sft,
        methods=methods,
        learning_curves=curves,
        invariance=invariance,
        softrankpo_identical=all(v == 0.0 for v in invariance["softrankpo"].values()),
        **_clock(t0),
    )
    inv = invariance
    results["headline"] = (
        "SoftRankPO max abs param diff vs x1: "
        + ", ".join(f"{tf} {d:.0e}" if d else f"{tf} 0" for tf, d in inv["softrankpo"].items())
        + "; GRPO: "
        + ", ".join(f"{tf} {d:.1e}" for tf, d in inv["grpo"].items())
    )
    figures = [_plot_reward_scale(curves, out / "reward_scale_curves.png")]
    md = _header(f"Reward scale ({profile})", setup, results)
    md += (
        "The transform is applied to each group's returns before the advantage function "
        f"(`advantage_fn(transform(R))`); training starts {'from SFT' if from_sft else 'from scratch'}"
        " with the same seed for every transform.\n\n"
    )
    md += (
        "| method | "
        + " | ".join(f"{tf} accuracy (%)" for tf in transforms)
        + f" | max abs parameter difference vs {ref} |\n"
    )
    md += "|---|" + "---|" * (len(transforms) + 1) + "\n"
    for name, by in methods.items():
        diffs = ", ".join(f"{tf}: {d:.3g}" for tf, d in invariance[name].items())
        md += (
            f"| {name} | "
            + " | ".join(_pm(by[tf]["team_accuracy"]) for tf in transforms)
            + f" | {diffs} |\n"
        )
    md += (
        "\nSoftRankPO's runs are bit-identical under every strictly increasing transform "
        f"({'confirmed' if results['softrankpo_identical'] else 'NOT confirmed'}): its "
        "advantages depend on the ranks only. GRPO's depend on the values.\n"
    )
    _write(out, results, md, figures)
    if not results["softrankpo_identical"]:
        raise AssertionError(f"SoftRankPO changed under a reward transform: {invariance}")
    return results


def _plot_reward_scale(curves: Mapping[str, Mapping[str, list]], path: Path) -> Path:
    fig, axes = new_figure(4.2 * len(curves), 3.8, ncols=len(curves))
    axes = np.atleast_1d(axes)
    for ax, (name, by) in zip(axes, curves.items()):
        for k, (tf, per_seed) in enumerate(by.items()):
            acc = np.mean([[p["team_accuracy"] for p in c] for c in per_seed], axis=0)
            steps = [p["step"] for p in per_seed[0]]
            w = min(5, len(acc))
            smooth = np.convolve(acc, np.ones(w) / w, mode="valid")
            ax.plot(
                steps[w - 1 :],
                smooth,
                label=tf,
                linestyle=("-", "--", ":", "-.")[k % 4],
                linewidth=2.5 - 0.4 * k,
            )
        ax.set_title(name)
        ax.set_xlabel("agent steps")
        ax.legend(fontsize="small", title="reward")
    axes[0].set_ylabel("team accuracy, training rollouts (mean of 5)")
    fig.suptitle("Reward scale: learning curves (same seed per transform)")
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------- tau-sweep
TAU_VARIANTS = ("sft+softrankpo", "softrankpo")
"""The tau sweep runs the pipeline (SFT then SoftRankPO) and SoftRankPO alone: when the
KL anchor keeps the pipeline near its SFT start, tau can only show in the second."""


def tau_sweep(
    setup: Setup,
    out: str | Path,
    taus: Sequence[float] = PAPER["taus"],
    variants: Sequence[str] = TAU_VARIANTS,
) -> dict[str, Any]:
    """SoftRankPO at each temperature tau (the paper's best: 0.8), after SFT and alone."""
    out, t0, results = _start("tau-sweep", setup, out)
    profile, tasks = setup.profile(), setup.task_spec()
    _, eval_tasks = _split(tasks)
    env_config = setup.eval_config(profile)
    per: dict[str, dict[str, Any]] = {}
    for variant in variants:
        per[variant] = {}
        for tau in taus:
            policies = learned(setup, variant, profile, tasks, tau=float(tau))
            runs = evaluate_runs(setup, policies, env_config, eval_tasks)
            per[variant][str(tau)] = {
                "tau": float(tau),
                "team_accuracy": _metric(runs),
                "tokens_per_question": _metric(runs, "tokens_per_question"),
                "persist_share": float(np.mean([r["persist_share"] for r in runs])),
            }
    sft_runs = evaluate_runs(setup, learned(setup, "sft", profile, tasks), env_config, eval_tasks)
    best = {
        v: max(by.values(), key=lambda p: p["team_accuracy"]["mean"])["tau"]
        for v, by in per.items()
    }
    results.update(taus=per, sft=_metric(sft_runs), best_tau=best, **_clock(t0))
    parts = []
    for v, by in per.items():
        acc = [p["team_accuracy"]["mean"] for p in by.values()]
        parts.append(f"{LABELS[v]}: best tau {best[v]}, range {min(acc):.1%}-{max(acc):.1%}")
    results["headline"] = "; ".join(parts) + " (paper: 0.8 best)"
    figures = [_plot_tau(per, results["sft"], out / "tau_sweep.png")]
    md = _header(f"Temperature sweep ({profile})", setup, results)
    md += (
        "| tau | "
        + " | ".join(f"{LABELS[v]}: accuracy (%) | tokens | persist" for v in per)
        + " |\n"
    )
    md += "|---|" + "---|---|---|" * len(per) + "\n"
    for tau in taus:
        cells = []
        for by in per.values():
            p = by[str(tau)]
            cells.append(
                f"{_pm(p['team_accuracy'])} | {p['tokens_per_question']['mean']:.0f} "
                f"| {p['persist_share']:.1%}"
            )
        md += f"| {tau} | " + " | ".join(cells) + " |\n"
    md += f"\nSFT alone: {_pm(results['sft'])}. Best tau here: "
    md += ", ".join(f"{best[v]} ({LABELS[v]})" for v in per) + "; the paper's: 0.8.\n"
    _write(out, results, md, figures)
    return results


def _plot_tau(per: Mapping[str, Any], sft: Mapping[str, Any], path: Path) -> Path:
    from matplotlib.ticker import NullFormatter

    fig, ax = new_figure(6.5, 4.2)
    for k, (variant, by) in enumerate(per.items()):
        taus = [p["tau"] for p in by.values()]
        means = [p["team_accuracy"]["mean"] for p in by.values()]
        err = [np.diff(p["team_accuracy"]["ci95"])[0] / 2 for p in by.values()]
        shift = 1.0 + 0.03 * (k - (len(per) - 1) / 2)  # side by side, error bars apart
        ax.errorbar(np.multiply(taus, shift), means, yerr=err, fmt="o-", capsize=3,
                    label=LABELS[variant])  # fmt: skip
    ax.axhline(sft["mean"], color="grey", linestyle="--", label="SFT alone")
    ax.axvline(PAPER["best_tau"], color="tab:red", linestyle=":", label="paper's best (0.8)")
    ax.set_xscale("log")
    ax.set_xticks(taus, [str(t) for t in taus])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("tau")
    ax.set_ylabel("team accuracy")
    ax.legend(fontsize="small")
    ax.set_title("SoftRankPO temperature (95% CI over seeds)")
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------- rounds-agents
SWEEP_HEURISTICS = (
    "self_consistency",
    "debate",
    "reconcile",
    "progressive_hint",
    "refine_minority",
    "concede_to_plurality",
    "confidence_threshold",
)
"""Candidates for the best heuristic at each setting (single ignores N and T)."""


def rounds_agents(
    setup: Setup,
    out: str | Path,
    rounds: Sequence[int] = (1, 2, 3, 4, 5),
    agents: Sequence[int] = (2, 3, 4, 5),
) -> dict[str, Any]:
    """T = 1..5 rounds with N = 3, and N = 2..5 agents with T = 3 (``max_peers`` stays 4):
    the best heuristic at each setting, debate, SFT+SoftRankPO trained at that setting,
    and the oracle."""
    out, t0, results = _start("rounds-agents", setup, out)
    profile, tasks = setup.profile(), setup.task_spec()
    settings = [("rounds", 3, t) for t in rounds] + [("agents", n, 3) for n in agents]
    sweeps: dict[str, list] = {"rounds": [], "agents": []}
    for axis, n, t in settings:
        rows = (*SWEEP_HEURISTICS, "sft+softrankpo", "oracle")
        runs = evaluate_rows(setup, rows, profile, tasks, num_agents=n, max_rounds=t)
        agg = {
            row: {
                "team_accuracy": _metric(r),
                "tokens_per_question": _metric(r, "tokens_per_question"),
            }
            for row, r in runs.items()
        }
        best = best_heuristic(agg, SWEEP_HEURISTICS)
        sweeps[axis].append(
            {"num_agents": n, "max_rounds": t, "best_heuristic": best, "methods": agg}
        )
    results.update(sweeps=sweeps, **_clock(t0))
    by_t = {
        p["max_rounds"]: p["methods"]["sft+softrankpo"]["team_accuracy"]["mean"]
        for p in sweeps["rounds"]
    }
    results["headline"] = "SFT+SoftRankPO by T: " + ", ".join(
        f"T={t} {a:.1%}" for t, a in by_t.items()
    )
    figures = [_plot_sweeps(sweeps, out / "rounds_agents.png")]
    md = _header(f"Rounds and agents ({profile})", setup, results)
    for axis, label in (("rounds", "T (N = 3)"), ("agents", "N (T = 3)")):
        md += (
            f"\n### {label}\n\n| {label} | best heuristic | its accuracy (%) | debate (%) "
            "| SFT+SoftRankPO (%) | oracle (%) | tokens: best heuristic / SoftRankPO |\n"
            "|---|---|---|---|---|---|---|\n"
        )
        for p in sweeps[axis]:
            m, b = p["methods"], p["best_heuristic"]
            value = p["max_rounds"] if axis == "rounds" else p["num_agents"]
            oracle = _pm(m["oracle"]["team_accuracy"]) if "oracle" in m else "n/a"
            md += (
                f"| {value} | {b} | {_pm(m[b]['team_accuracy'])} "
                f"| {_pm(m['debate']['team_accuracy'])} "
                f"| {_pm(m['sft+softrankpo']['team_accuracy'])} | {oracle} "
                f"| {m[b]['tokens_per_question']['mean']:.0f} / "
                f"{m['sft+softrankpo']['tokens_per_question']['mean']:.0f} |\n"
            )
    md += "\nThe paper finds accuracy falls at 5 rounds.\n"
    _write(out, results, md, figures)
    return results


def _plot_sweeps(sweeps: Mapping[str, list], path: Path) -> Path:
    fig, axes = new_figure(10.0, 4.0, ncols=2)
    for ax, (axis, points) in zip(axes, sweeps.items()):
        if not points:
            continue
        xs = [p["max_rounds"] if axis == "rounds" else p["num_agents"] for p in points]
        series = {
            "best heuristic": [p["methods"][p["best_heuristic"]] for p in points],
            "debate": [p["methods"]["debate"] for p in points],
            "SFT+SoftRankPO": [p["methods"]["sft+softrankpo"] for p in points],
        }
        if all("oracle" in p["methods"] for p in points):
            series["oracle"] = [p["methods"]["oracle"] for p in points]
        for label, cells in series.items():
            means = np.array([c["team_accuracy"]["mean"] for c in cells])
            lo = np.array([c["team_accuracy"]["ci95"][0] for c in cells])
            hi = np.array([c["team_accuracy"]["ci95"][1] for c in cells])
            style = "--" if label == "oracle" else "-"
            ax.plot(xs, means, style, marker="o", label=label)
            ax.fill_between(xs, lo, hi, alpha=0.2)
        ax.set_xticks(xs)
        ax.set_xlabel("rounds T (N = 3)" if axis == "rounds" else "agents N (T = 3)")
        ax.set_ylabel("team accuracy")
        ax.legend(fontsize="small")
    fig.suptitle("Rounds and agents (95% CI over seeds)")
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------- action-shift
SHIFT_STAGES = ("sft", "sft+softrankpo", "softrankpo")


def action_shift(
    setup: Setup, out: str | Path, stages_: Sequence[str] = SHIFT_STAGES
) -> dict[str, Any]:
    """PERSIST / REFINE / CONCEDE shares after SFT and after RL (SFT+SoftRankPO; and
    SoftRankPO alone, for reference), overall and per round, with the effective shares (a
    CONCEDE that copies my own answer is a no-op, counted apart)."""
    out, t0, results = _start("action-shift", setup, out)
    profile, tasks = setup.profile(), setup.task_spec()
    _, eval_tasks = _split(tasks)
    env_config = setup.eval_config(profile)
    stages: dict[str, Any] = {}
    for name in stages_:
        policies = learned(setup, name, profile, tasks)
        runs = evaluate_runs(setup, policies, env_config, eval_tasks)
        eff: list[dict[str, Any]] = []
        seeds = setup.budget.eval_seeds
        for k, p in enumerate(policies):
            mine = [seeds[r] for r in range(len(seeds)) if r % len(policies) == k]
            eff += evaluate_effective(p, env_config, eval_tasks, mine, setup.eval_episodes)
        agg = aggregate(runs)
        rounds = len(eff[0]["per_round"])
        stages[name] = {
            "team_accuracy": agg["team_accuracy"],
            "tokens_per_question": agg["tokens_per_question"],
            "action_shares": agg["action_shares"],
            "action_shares_per_round": agg["action_shares_per_round"],
            "effective_shares": _mean_shares([effective_shares(e["total"]) for e in eff]),
            "effective_shares_per_round": [
                _mean_shares([effective_shares(e["per_round"][t]) for e in eff])
                for t in range(rounds)
            ],
        }
    results.update(stages=stages, **_clock(t0))
    s, r = stages["sft"], stages["sft+softrankpo"]
    results["headline"] = (
        f"PERSIST {s['action_shares']['persist']:.1%} after SFT -> "
        f"{r['action_shares']['persist']:.1%} after RL (paper 19.1% -> 78.8%); kept answer "
        f"without an LLM call {s['effective_shares']['keeps_answer_without_llm']:.1%} -> "
        f"{r['effective_shares']['keeps_answer_without_llm']:.1%}"
    )
    if "softrankpo" in stages:
        alone = stages["softrankpo"]
        results["headline"] += (
            f"; SoftRankPO without SFT: PERSIST {alone['action_shares']['persist']:.1%}, "
            f"no-op CONCEDE {alone['effective_shares']['concede_noop']:.1%}"
        )
    figures = [_plot_action_shift(stages, out / "action_shift.png")]
    md = _header(f"Action shift ({profile})", setup, results)
    md += (
        "| stage | accuracy (%) | tokens | persist | refine | concede | effective: persist "
        "| refine | concede (changes answer) | concede no-op | of which all peers agree |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for name, st in stages.items():
        a, e = st["action_shares"], st["effective_shares"]
        md += (
            f"| {LABELS[name]} | {_pm(st['team_accuracy'])} "
            f"| {st['tokens_per_question']['mean']:.0f} | {a['persist']:.1%} "
            f"| {a['refine']:.1%} | {a['concede']:.1%} | {e['persist']:.1%} "
            f"| {e['refine']:.1%} | {e['concede']:.1%} | {e['concede_noop']:.1%} "
            f"| {e['concede_all_agree']:.1%} |\n"
        )
    md += "\nPer round (persist / refine / concede; effective no-op concede in brackets):\n\n"
    md += "| round | " + " | ".join(LABELS[n] for n in stages) + " |\n"
    md += "|---|" + "---|" * len(stages) + "\n"
    for t in range(len(s["action_shares_per_round"])):
        cells = []
        for st in stages.values():
            a, e = st["action_shares_per_round"][t], st["effective_shares_per_round"][t]
            cells.append(
                f"{a['persist']:.0%} / {a['refine']:.0%} / {a['concede']:.0%} "
                f"[{e['concede_noop']:.0%}]"
            )
        md += f"| {t + 1} | " + " | ".join(cells) + " |\n"
    md += "\nPaper: PERSIST 19.1% after SFT -> 78.8% after RL.\n"
    _write(out, results, md, figures)
    return results


def _mean_shares(shares: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([s[k] for s in shares])) for k in shares[0]}


def _plot_action_shift(stages: Mapping[str, Any], path: Path) -> Path:
    fig, axes = new_figure(11.0, 5.0, ncols=2)
    colours = {
        "persist": "tab:blue",
        "refine": "tab:orange",
        "concede": "tab:green",
        "concede_noop": "palegreen",
    }
    labels, bars = [], []
    for name, st in stages.items():
        short = {"sft": "SFT", "sft+softrankpo": "SFT+SRPO", "softrankpo": "SRPO only"}
        labels += [f"{short.get(name, name)}\nlabelled", f"{short.get(name, name)}\neffective"]
        bars += [dict(st["action_shares"], concede_noop=0.0), st["effective_shares"]]
    ax = axes[0]
    bottom = np.zeros(len(bars))
    for key, colour in colours.items():
        h = np.array([b[key] for b in bars])
        ax.bar(
            np.arange(len(bars)),
            h,
            bottom=bottom,
            color=colour,
            label=key.upper().replace("_NOOP", " (no-op)"),
        )
        bottom += h
    ax.set_xticks(np.arange(len(bars)), labels, fontsize="small")
    ax.set_ylabel("share of agent-rounds")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="x-small")
    ax.set_title("Overall")
    ax = axes[1]
    for name, st in stages.items():
        persist = [p["persist"] for p in st["action_shares_per_round"]]
        keeps = [p["keeps_answer_without_llm"] for p in st["effective_shares_per_round"]]
        x = np.arange(1, len(persist) + 1)
        line = ax.plot(x, persist, marker="o", label=f"{LABELS[name]}: PERSIST")[0]
        ax.plot(
            x,
            keeps,
            marker="s",
            linestyle="--",
            color=line.get_color(),
            label=f"{LABELS[name]}: PERSIST + no-op CONCEDE",
        )
        ax.set_xticks(x)
    ax.set_xlabel("round")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    ax.set_title("Per round")
    fig.suptitle("Meta-actions after SFT and after RL")
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------- tokens
def pareto_front(tokens: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both axes (fewer or equal tokens and
    higher or equal accuracy, one strictly), by increasing tokens."""
    order = sorted(range(len(tokens)), key=lambda i: (tokens[i], -accuracy[i]))
    front, best = [], -math.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


TOKEN_ROWS = (
    *HEURISTICS,
    "always_persist",
    "concede_to_plurality",
    "confidence_threshold",
    "random",
    *LEARNED,
    "oracle",
)


def tokens(setup: Setup, out: str | Path, rows: Sequence[str] = TOKEN_ROWS) -> dict[str, Any]:
    """Tokens per question against team accuracy for every method, with the Pareto front
    (the oracle is drawn but not on the front: no meta-policy can see correctness)."""
    out, t0, results = _start("tokens", setup, out)
    profile, tasks = setup.profile(), setup.task_spec()
    runs = evaluate_rows(setup, rows, profile, tasks)
    methods = {
        row: {"team_accuracy": _metric(r), "tokens_per_question": _metric(r, "tokens_per_question")}
        for row, r in runs.items()
    }
    names = [n for n in methods if n != "oracle"]
    front = [
        names[i]
        for i in pareto_front(
            [methods[n]["tokens_per_question"]["mean"] for n in names],
            [methods[n]["team_accuracy"]["mean"] for n in names],
        )
    ]
    strongest = best_heuristic(
        methods, [h for h in TOKEN_ROWS if h in methods and h not in LEARNED and h != "oracle"]
    )
    srpo = methods["sft+softrankpo"]["tokens_per_question"]["mean"]
    results.update(
        methods=methods,
        pareto_front=front,
        strongest_baseline=strongest,
        **_clock(t0),
        ratios={
            "softrankpo_over_debate": srpo / methods["debate"]["tokens_per_question"]["mean"],
            "softrankpo_over_strongest": srpo / methods[strongest]["tokens_per_question"]["mean"],
            "paper_softrankpo_over_strongest": PAPER["tokens_softrankpo"]
            / PAPER["tokens_strongest_baseline"],
        },
    )
    results["headline"] = (
        f"SFT+SoftRankPO {srpo:.0f} tokens/question vs debate "
        f"{methods['debate']['tokens_per_question']['mean']:.0f} "
        f"({results['ratios']['softrankpo_over_debate']:.2f}x) and strongest baseline "
        f"{strongest} {methods[strongest]['tokens_per_question']['mean']:.0f} "
        f"({results['ratios']['softrankpo_over_strongest']:.2f}x; paper 0.70x)"
    )
    if "softrankpo" in methods:
        alone = methods["softrankpo"]["tokens_per_question"]["mean"]
        results["ratios"]["rl_only_softrankpo_over_debate"] = (
            alone / methods["debate"]["tokens_per_question"]["mean"]
        )
        results["ratios"]["rl_only_softrankpo_over_strongest"] = (
            alone / methods[strongest]["tokens_per_question"]["mean"]
        )
        results["headline"] += f"; SoftRankPO without SFT {alone:.0f}"
    figures = [_plot_pareto(methods, front, out / "tokens_pareto.png")]
    md = _header(f"Tokens vs accuracy ({profile})", setup, results)
    md += "| method | team accuracy (%) | tokens / question | on the Pareto front |\n"
    md += "|---|---|---|---|\n"
    for name, m in sorted(methods.items(), key=lambda kv: kv[1]["tokens_per_question"]["mean"]):
        on = "yes" if name in front else ("(limit)" if name == "oracle" else "")
        md += (
            f"| {LABELS.get(name, name)} | {_pm(m['team_accuracy'])} "
            f"| {_pm(m['tokens_per_question'], 1.0, 0)} | {on} |\n"
        )
    md += (
        f"\nSFT+SoftRankPO uses {results['ratios']['softrankpo_over_debate']:.2f}x the "
        f"tokens of debate and {results['ratios']['softrankpo_over_strongest']:.2f}x those "
        f"of the strongest baseline ({strongest}). Paper: 47.1k vs 67.2k tokens (0.70x).\n"
    )
    _write(out, results, md, figures)
    return results


def _plot_pareto(methods: Mapping[str, Any], front: Sequence[str], path: Path) -> Path:
    fig, ax = new_figure(8.0, 5.0)
    for name, m in methods.items():
        tok, acc = m["tokens_per_question"], m["team_accuracy"]
        marker = "*" if name == "oracle" else ("s" if name in LEARNED else "o")
        ax.errorbar(
            tok["mean"],
            acc["mean"],
            xerr=np.diff(tok["ci95"])[0] / 2,
            yerr=np.diff(acc["ci95"])[0] / 2,
            fmt=marker,
            capsize=2,
            color="tab:red" if name in front else "tab:grey",
        )
    # One label per cluster of near-identical points (cheap protocols pile up at the
    # cost of N initial answers), listed top to bottom beside the cluster.
    clusters: list[list[str]] = []
    for name in sorted(methods, key=lambda n: methods[n]["tokens_per_question"]["mean"]):
        tok = methods[name]["tokens_per_question"]["mean"]
        acc = methods[name]["team_accuracy"]["mean"]
        for cluster in clusters:
            head = methods[cluster[0]]
            if (
                abs(math.log(tok / head["tokens_per_question"]["mean"])) < 0.05
                and abs(acc - head["team_accuracy"]["mean"]) < 0.006
            ):
                cluster.append(name)
                break
        else:
            clusters.append([name])
    for k, cluster in enumerate(clusters):
        head = methods[cluster[0]]
        big = len(cluster) > 2  # a long list goes to the left, where the axis is emptier
        ax.annotate(
            "\n".join(cluster),
            (head["tokens_per_question"]["mean"], head["team_accuracy"]["mean"]),
            xytext=(-8, 0) if big else (6, -4 if k % 2 else 4),
            textcoords="offset points",
            fontsize="x-small",
            ha="right" if big else "left",
            va="center" if big else ("top" if k % 2 else "bottom"),
        )
    xs = [methods[n]["tokens_per_question"]["mean"] for n in front]
    ys = [methods[n]["team_accuracy"]["mean"] for n in front]
    ax.step(xs, ys, where="post", color="tab:red", label="Pareto front (oracle excluded)")
    ax.set_xscale("log")
    ax.set_xlabel("tokens per question (log scale)")
    ax.set_ylabel("team accuracy")
    ax.legend(fontsize="small", loc="lower right")
    ax.set_title("Cost vs accuracy (squares: learned; star: oracle)")
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------- registry
EXPERIMENTS: dict[str, Callable[..., dict[str, Any]]] = {
    "main-table": main_table,
    "backbones": backbones,
    "reward-scale": reward_scale,
    "tau-sweep": tau_sweep,
    "rounds-agents": rounds_agents,
    "action-shift": action_shift,
    "tokens": tokens,
}


def run_experiment(
    name: str, out: str | Path | None = None, budget: str | Budget = "quick", **setup: Any
) -> dict[str, Any]:
    """Run experiment `name` into `out` (default ``runs/reproduce/NAME``) with `budget`
    (``"quick"``, ``"full"`` or a `Budget`); `setup` holds `Setup` fields."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; valid budgets: {', '.join(BUDGETS)}")
        budget = BUDGETS[budget]
    torch.set_num_threads(1)  # the meta-policy is tiny: threads only add synchronisation
    return EXPERIMENTS[name](Setup(budget=budget, **setup), out or f"runs/reproduce/{name}")
