"""Evaluation and comparison of meta-policies: per-seed metrics on the vector env, means
with Student-t 95% intervals over seeds, and ``results.json``, ``results.md`` and plots.

Every method (learned or heuristic) runs through one harness, `evaluate`: the same
questions, the same seeds, hence the same initial answers for equal ``num_agents``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from algorithms.policy import Policy
from deliberation_env import voting
from deliberation_env.core import NUM_ACTIONS, Action, EnvConfig
from deliberation_env.tasks import Task
from deliberation_env.vector import VectorDeliberationEnv

ACTION_KEYS = tuple(a.name.lower() for a in Action)
"""``("persist", "refine", "concede")``, in action-id order."""

RUN_INFO = ("seed", "episodes", "num_agents", "max_rounds")
"""Keys of a run that describe it rather than measure it (not aggregated)."""


# --------------------------------------------------------------------------- splitting
def _normalise_question(text: str) -> str:
    return " ".join(text.split()).casefold()


def train_eval_split(
    tasks: Sequence[Task], eval_fraction: float = 0.25, seed: int = 0
) -> tuple[list[Task], list[Task]]:
    """Split `tasks` into (train, eval) by a hash of ``(seed, task.id)``.

    Deterministic and order-independent: a task's side depends on its id and `seed`
    only. The sides share no id, and eval tasks whose question text (whitespace and case
    normalised) also appears in train are dropped, so duplicated questions cannot leak.
    """
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must lie in [0, 1]")

    def in_eval(task: Task) -> bool:
        digest = hashlib.blake2b(f"{seed}\x00{task.id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") < eval_fraction * 2.0**64

    sides = [in_eval(t) for t in tasks]
    train = [t for t, e in zip(tasks, sides) if not e]
    seen = {_normalise_question(t.question) for t in train if t.question.strip()}
    held_out = [
        t for t, e in zip(tasks, sides) if e and _normalise_question(t.question) not in seen
    ]
    return train, held_out


# --------------------------------------------------------------------------- evaluation
def _config_dict(env_config: Mapping[str, Any] | EnvConfig) -> dict[str, Any]:
    if isinstance(env_config, EnvConfig):
        return {f.name: getattr(env_config, f.name) for f in dataclasses.fields(env_config)}
    return dict(env_config)


def evaluate(
    policy: Policy,
    env_config: Mapping[str, Any] | EnvConfig,
    tasks: Sequence[Task] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    episodes: int = 1000,
    deterministic: bool = True,
) -> list[dict[str, Any]]:
    """Run `episodes` questions at once per seed; one metrics dict per seed.

    The env is ``VectorDeliberationEnv(episodes, autoreset=False, tasks=tasks,
    **{**env_config, **policy.env_overrides})``, reset with ``episode_seeds(seed,
    episodes)``; ``policy.bind(env)`` is called after each reset when the policy has it.
    Stochastic policies acting with ``deterministic=False`` are reproducible only if they
    seed themselves (the heuristics' `random` does, through `bind`). Metrics: ``team_accuracy``,
    ``agent_accuracy`` (mean final agent correctness), ``consensus_rate`` (all agents hold
    one parsed answer at the end), ``tokens_per_question``, ``rounds_per_question``,
    ``action_shares`` and ``{persist,refine,concede}_share`` (over the agent-rounds
    played), ``action_shares_per_round``, and ``accuracy_per_round`` (team accuracy of the
    initial answers, then after each round; finished episodes keep their final value).
    """
    cfg = {**_config_dict(env_config), **dict(getattr(policy, "env_overrides", {}) or {})}
    if tasks is not None:
        cfg["tasks"] = list(tasks)
    env = VectorDeliberationEnv(episodes, autoreset=False, **cfg)
    try:
        return [_run(policy, env, int(seed), deterministic) for seed in seeds]
    finally:
        env.close()


def episode_seeds(seed: int, episodes: int) -> np.ndarray:
    """The per-env reset seeds of evaluation seed `seed`: `episodes` 64-bit seeds drawn
    from ``SeedSequence(seed)``.

    Why not ``reset(seed=seed)``: the vector env gives env b the seed ``seed + b``, so
    evaluation seeds 0 and 1 would share all episodes but one and the interval over seeds
    would be meaningless. These blocks are independent across seeds and far from the
    small integers trainers reset with.
    """
    return np.random.SeedSequence(int(seed)).generate_state(episodes, np.uint64)


def _shares(counts: np.ndarray) -> dict[str, float]:
    total = counts.sum()
    return {k: float(c / total) if total else 0.0 for k, c in zip(ACTION_KEYS, counts)}


def _run(policy: Policy, env: VectorDeliberationEnv, seed: int, deterministic: bool) -> dict:
    obs, infos = env.reset(seed=episode_seeds(seed, env.num_envs))
    bind = getattr(policy, "bind", None)
    if callable(bind):
        bind(env)
    core = env.core
    B, T = env.num_envs, env.config.max_rounds
    team = voting.winner_correct(core.state.correct, core.team_winner())
    accuracy = [float(team.mean())]
    per_round: list[dict[str, float]] = []
    total = np.zeros(NUM_ACTIONS, np.int64)
    active = np.ones(B, bool)
    while active.any():
        actions = np.asarray(policy.act(obs, infos["action_mask"], deterministic=deterministic))
        # The env counts the actions submitted in live envs (a masked CONCEDE included).
        counts = np.bincount(actions[active].ravel(), minlength=NUM_ACTIONS)[:NUM_ACTIONS]
        obs, _, _, _, infos = env.step(actions)
        team = np.where(active, infos["team_correct"], team)
        accuracy.append(float(team.mean()))
        per_round.append(_shares(counts))
        total += counts
        active = infos["active"]
    # stop_on_consensus can end every episode early: later rounds keep the final value.
    accuracy += accuracy[-1:] * (T + 1 - len(accuracy))
    shares = _shares(total)
    s = core.state
    return {
        "seed": seed,
        "episodes": B,
        "num_agents": env.num_agents,
        "max_rounds": T,
        "team_accuracy": float(team.mean()),
        "agent_accuracy": float(s.correct.mean()),
        "consensus_rate": float(voting.agreement(s.answer).all(axis=(1, 2)).mean()),
        "tokens_per_question": float(s.tokens.mean()),
        "rounds_per_question": float(s.round.mean()),
        **{f"{k}_share": v for k, v in shares.items()},
        "action_shares": shares,
        "action_shares_per_round": per_round,
        "accuracy_per_round": accuracy,
    }


# --------------------------------------------------------------------------- aggregation
def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the Student-t interval of the mean over seeds (lo = hi = mean for
    one value or identical values)."""
    x = np.asarray(values, np.float64)
    mean = float(x.mean())
    if len(x) < 2 or np.ptp(x) == 0:
        mean = float(x[0])  # exact, where summing could move the last bit
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def _summary(values: Sequence[float]) -> dict[str, Any]:
    mean, lo, hi = mean_ci(values)
    return {"mean": mean, "ci95": [lo, hi], "values": [float(v) for v in values]}


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine per-seed runs of `evaluate`: every scalar metric becomes ``{"mean", "ci95":
    [lo, hi], "values"}`` (Student-t over seeds), ``action_shares`` (also per round) are
    averaged, ``accuracy_per_round`` gets a mean and interval per round."""
    if not runs:
        raise ValueError("aggregate() needs at least one run (pass evaluate()'s output)")
    first = runs[0]
    out: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    out.update({k: first[k] for k in RUN_INFO if k != "seed"})
    for key, value in first.items():
        if key in RUN_INFO:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = _summary([r[key] for r in runs])
    out["action_shares"] = {
        k: float(np.mean([r["action_shares"][k] for r in runs])) for k in ACTION_KEYS
    }
    out["action_shares_per_round"] = []
    for t in range(max(len(r["action_shares_per_round"]) for r in runs)):
        played = [
            r["action_shares_per_round"][t] for r in runs if len(r["action_shares_per_round"]) > t
        ]
        out["action_shares_per_round"].append(
            {k: float(np.mean([p[k] for p in played])) for k in ACTION_KEYS}
        )
    per_round = np.array([r["accuracy_per_round"] for r in runs], np.float64)
    cis = [mean_ci(per_round[:, t]) for t in range(per_round.shape[1])]
    out["accuracy_per_round"] = {
        "mean": [m for m, _, _ in cis],
        "ci95": [[lo, hi] for _, lo, hi in cis],
    }
    return out


# --------------------------------------------------------------------------- comparison
def jsonable(value: Any) -> Any:
    """A JSON-safe copy: tasks by id, arrays as lists, NaN as null, objects by repr."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Task):
        return value.id
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _tasks_digest(tasks: Sequence[Task]) -> str:
    return hashlib.sha1("\n".join(t.id for t in tasks).encode()).hexdigest()[:12]


def compare(
    methods: Mapping[str, Policy],
    env_config: Mapping[str, Any] | EnvConfig,
    tasks: Sequence[Task],
    seeds: Sequence[int] = (0, 1, 2),
    episodes: int = 1000,
    out: Path | str | None = None,
    config: Mapping[str, Any] | None = None,
    learning_curves: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
) -> dict[str, Any]:
    """Evaluate every method on the same questions and seeds and aggregate.

    Returns ``{"config": {...}, "methods": {NAME: aggregate(...)}}`` and, when `out` is
    given, writes there ``results.json`` (that dict), ``results.md`` (`markdown_table`),
    ``action_shares.png``, ``accuracy_vs_tokens.png`` and, when `learning_curves` (name
    -> ``[{"step", "team_accuracy"}, ...]``) is given, ``learning_curves.png``.
    """
    env = {k: v for k, v in _config_dict(env_config).items() if k != "tasks"}
    run_config = {
        **dict(config or {}),
        "env": env,
        "seeds": [int(s) for s in seeds],
        "episodes": int(episodes),
        "num_tasks": len(tasks),
        "tasks_digest": _tasks_digest(tasks),
    }
    results: dict[str, Any] = {"config": jsonable(run_config), "methods": {}}
    for name, policy in methods.items():
        summary = aggregate(evaluate(policy, env_config, tasks, seeds, episodes))
        summary["env_overrides"] = dict(getattr(policy, "env_overrides", {}) or {})
        results["methods"][name] = jsonable(summary)
    if out is not None:
        write_results(results, out, learning_curves)
    return results


def write_results(
    results: Mapping[str, Any],
    out: Path | str,
    learning_curves: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
) -> list[Path]:
    """Write ``results.json``, ``results.md`` and the plots of `compare` into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(jsonable(results), indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(results))
    written = [out / "results.json", out / "results.md"]
    written.append(plot_action_shares(results, out / "action_shares.png"))
    written.append(plot_accuracy_vs_tokens(results, out / "accuracy_vs_tokens.png"))
    if learning_curves:
        written.append(plot_learning_curves(learning_curves, out / "learning_curves.png"))
    return written


def _half(metric: Mapping[str, Any]) -> float:
    lo, hi = metric["ci95"]
    return (hi - lo) / 2


def _by_accuracy(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    methods = results["methods"]
    return sorted(methods.items(), key=lambda kv: -kv[1]["team_accuracy"]["mean"])


def markdown_table(results: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table, best team accuracy first (± half the 95% CI)."""
    lines = [
        "| method | team accuracy | agent accuracy | consensus | tokens / question "
        "| persist | refine | concede |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in _by_accuracy(results):
        shares = m["action_shares"]
        lines.append(
            f"| {name} "
            f"| {m['team_accuracy']['mean']:.3f} ± {_half(m['team_accuracy']):.3f} "
            f"| {m['agent_accuracy']['mean']:.3f} ± {_half(m['agent_accuracy']):.3f} "
            f"| {m['consensus_rate']['mean']:.3f} "
            f"| {m['tokens_per_question']['mean']:.0f} ± {_half(m['tokens_per_question']):.0f} "
            f"| {shares['persist']:.1%} | {shares['refine']:.1%} | {shares['concede']:.1%} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots
# matplotlib's object API on the Agg canvas: no pyplot, no global backend switch.
def new_figure(width: float, height: float, ncols: int = 1):
    """A matplotlib figure through the object API: no pyplot, no global backend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols)


def plot_action_shares(results: Mapping[str, Any], path: Path | str) -> Path:
    """Stacked bars of PERSIST / REFINE / CONCEDE shares per method."""
    ranked = _by_accuracy(results)
    fig, ax = new_figure(max(6.0, 0.8 * len(ranked) + 2), 4.0)
    x = np.arange(len(ranked))
    bottom = np.zeros(len(ranked))
    for key, colour in zip(ACTION_KEYS, ("tab:blue", "tab:orange", "tab:green")):
        heights = np.array([m["action_shares"][key] for _, m in ranked])
        ax.bar(x, heights, bottom=bottom, label=key.upper(), color=colour)
        bottom += heights
    ax.set_xticks(x, [name for name, _ in ranked], rotation=30, ha="right")
    ax.set_ylabel("share of agent-rounds")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.set_title("Meta-actions per method")
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_accuracy_vs_tokens(results: Mapping[str, Any], path: Path | str) -> Path:
    """Team accuracy against tokens per question (log scale), with 95% CI error bars and
    one labelled point per method (methods with identical results share a label)."""
    fig, ax = new_figure(7.0, 4.8)
    points: dict[tuple[float, float], list[str]] = {}
    for name, m in results["methods"].items():
        acc, tok = m["team_accuracy"], m["tokens_per_question"]
        key = (round(tok["mean"], 6), round(acc["mean"], 6))
        if key not in points:
            ax.errorbar(
                tok["mean"], acc["mean"], xerr=_half(tok), yerr=_half(acc), fmt="o", capsize=3
            )
        points.setdefault(key, []).append(name)
    for k, ((tok, acc), names) in enumerate(sorted(points.items())):
        # Alternate label sides so neighbours do not print over each other.
        offset = (5, 5) if k % 2 == 0 else (5, -11)
        ax.annotate(", ".join(names), (tok, acc), xytext=offset, textcoords="offset points",
                    fontsize="small")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("tokens per question (log scale)")
    ax.set_ylabel("team accuracy")
    ax.set_title("Accuracy vs cost (95% CI over seeds)")
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_learning_curves(
    curves: Mapping[str, Sequence[Mapping[str, float]]], path: Path | str
) -> Path:
    """Team accuracy of the training rollouts against agent steps, one line per algorithm
    (a moving average over `window` points: one batch of questions is noisy)."""
    window = 5
    fig, ax = new_figure(6.5, 4.5)
    for name, points in curves.items():
        steps = np.array([p["step"] for p in points])
        acc = np.array([p["team_accuracy"] for p in points])
        if len(acc) >= window:
            acc = np.convolve(acc, np.ones(window) / window, mode="valid")
            steps = steps[window - 1 :]
        ax.plot(steps, acc, label=name)
    ax.set_xlabel("agent steps of training")
    ax.set_ylabel(f"team accuracy, training rollouts (mean of {window})")
    ax.legend(fontsize="small")
    ax.set_title("Learning curves")
    fig.savefig(path, dpi=120)
    return Path(path)
