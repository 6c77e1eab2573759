"""The bench report: ``report.json`` (per-task scores, suite aggregates with intervals,
probabilities of improvement, performance profiles, Pareto fronts), ``report.md`` and
the figures (aggregate intervals, performance profiles, probability-of-improvement
matrix, cost-accuracy Pareto fronts per benchmark)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.bench import scores
from experiments.bench.suite import BenchProtocol, BenchTask
from experiments.figures import new_figure
from experiments.report import jsonable, table, write_json
from experiments.stats import pareto_front

Results = Mapping[tuple[str, str, int], Mapping[str, Any]]
"""Cell results keyed by (task name, method name, seed)."""


def build_report(
    suite: str,
    protocol: BenchProtocol,
    tasks: Sequence[BenchTask],
    learned: Sequence[str],
    baselines: Sequence[str],
    seeds: Sequence[int],
    results: Results,
    reps: int = 2000,
    poi_reps: int = 200,
    map_fn: Callable[..., Any] = map,
    skipped: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report of a finished run (shape in docs/benchmark.md).

    A protocol that runs on some tasks only (``verifier_threshold``: verifier tasks) is
    reported per task; the aggregates, probabilities of improvement and profiles compare
    the methods that ran on every ranked task.
    """
    names = [t.name for t in tasks]
    ran = {m for _, m, _ in results}
    learned = [m for m in learned if m in ran]
    baselines = [b for b in baselines if b in ran and b not in learned]
    methods = [*learned, *baselines]
    accuracy = scores.matrices(results, methods, names, seeds, "team_accuracy")
    tokens = scores.matrices(results, methods, names, seeds, "tokens_per_question")
    calls = scores.matrices(results, methods, names, seeds, "llm_calls_per_question")
    normalised = scores.normalise(accuracy)
    gap = scores.headroom(accuracy)
    keep = [k for k, g in enumerate(gap) if np.isfinite(g)]
    ranked = [names[k] for k in keep]
    ranked_scores = {m: s[:, keep] for m, s in normalised.items()}
    complete = [m for m in methods if ranked and np.isfinite(ranked_scores[m]).all()]
    aggregate = scores.aggregates({m: ranked_scores[m] for m in complete}, reps) if complete else {}
    by_iqm = sorted(complete, key=lambda m: -aggregate[m]["iqm"]["mean"])
    by_iqm += [m for m in methods if m not in complete]
    heuristics = [m for m in by_iqm if m in complete and m in baselines and m != scores.ONE]
    best = heuristics[0] if heuristics else None
    contenders = [*learned, *([best] if best else []), scores.ZERO]
    contenders = [c for c in dict.fromkeys(contenders) if c in complete]
    compared = {m: ranked_scores[m] for m in contenders}
    report: dict[str, Any] = {
        "suite": suite,
        "protocol": {**_protocol(protocol), "seeds": [int(s) for s in seeds]},
        "tasks": names,
        "skipped_tasks": dict(skipped or {}),
        "unranked_tasks": [t for t in names if t not in ranked],
        "learned": list(learned),
        "baselines": list(baselines),
        "best_heuristic": best,
        "methods": {},
        "probability_of_improvement": scores.probability_of_improvement(
            compared, contenders, poi_reps, map_fn=map_fn
        ),
        "performance_profiles": scores.performance_profiles(
            {m: ranked_scores[m] for m in [*contenders, scores.ONE] if m in complete},
            min(reps, 500),
        ) if complete else {},
    }  # fmt: skip
    for m in by_iqm:
        per_task = {}
        for k, t in enumerate(names):
            cells = [results[t, m, s] for s in seeds if (t, m, s) in results]
            if not cells:
                continue
            trained = [c["train"] for c in cells if c.get("train")]
            per_task[t] = {
                "normalized": _mean(normalised[m][:, k]),
                "accuracy": _mean(accuracy[m][:, k]),
                "tokens_per_question": _mean(tokens[m][:, k]),
                "llm_calls_per_question": _mean(calls[m][:, k]),
                "train_agent_steps": _mean([c["agent_steps"] for c in trained]),
                "train_llm_calls": _mean([c["llm_calls"] for c in trained]),
                "normalized_per_seed": normalised[m][:, k].tolist(),
            }
        report["methods"][m] = {
            "kind": "learned" if m in learned else "baseline",
            "per_task": per_task,
            "aggregate": aggregate.get(m, {}),
            "budget": {
                "train_agent_steps": _sum([p["train_agent_steps"] for p in per_task.values()]),
                "train_llm_calls": _sum([p["train_llm_calls"] for p in per_task.values()]),
            },
            "accuracy": _mean(accuracy[m][np.isfinite(accuracy[m])]),
            "tokens_per_question": _mean(tokens[m][np.isfinite(tokens[m])]),
        }
    report["pareto"] = _pareto(report, {t.name: t for t in tasks})
    return jsonable(report)


def _protocol(p: BenchProtocol) -> dict[str, Any]:
    return {
        "name": p.name, "train_episodes": p.train_episodes, "updates": p.updates,
        "questions_per_update": p.questions_per_update, "group_size": p.group_size,
        "sft_epochs": p.sft_epochs, "eval_episodes": p.eval_episodes, "questions": p.questions,
    }  # fmt: skip


def _mean(values: Any) -> float | None:
    x = np.asarray(values, np.float64)
    return float(x.mean()) if x.size and np.isfinite(x).all() else None


def _sum(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(sum(present)) if present else None


def _pareto(report: Mapping[str, Any], tasks: Mapping[str, BenchTask]) -> dict[str, Any]:
    """Per benchmark: each method's accuracy and tokens per question averaged over the
    benchmark's tasks, and the methods on the cost-accuracy front. The oracle is a
    ceiling, not a method one could run: it is a point, never on the front."""
    out: dict[str, Any] = {}
    for bench in dict.fromkeys(t.benchmark for t in tasks.values()):
        mine = [n for n, t in tasks.items() if t.benchmark == bench]
        points = {
            m: [float(np.mean([r["per_task"][t]["tokens_per_question"] for t in mine])),
                float(np.mean([r["per_task"][t]["accuracy"] for t in mine]))]
            for m, r in report["methods"].items() if all(t in r["per_task"] for t in mine)
        }  # fmt: skip
        names = [m for m in points if m != scores.ONE]
        front = pareto_front([points[m][0] for m in names], [points[m][1] for m in names])
        out[bench] = {"tasks": mine, "points": points, "front": [names[i] for i in front]}
    return out


# --------------------------------------------------------------------------- Markdown
def _ci(metric: Mapping[str, Any] | None, digits: int = 2) -> str:
    if not metric:
        return "n/a"
    lo, hi = metric["ci95"]
    return f"{metric['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)


def markdown(report: Mapping[str, Any], wall_seconds: float | None = None) -> str:
    """``report.md``: the aggregate table with intervals, the probabilities of
    improvement, and per-task tables."""
    p = report["protocol"]
    methods = report["methods"]
    lines = [
        f"# {report['suite']}: bench report\n",
        f"Protocol `{p['name']}`: {p['train_episodes']:,} training deliberations per "
        f"(task, method, seed) ({p['updates']} updates of {p['questions_per_update']} "
        f"questions x {p['group_size']} rollouts), {p['eval_episodes']:,} held-out questions "
        f"per seed, seeds {p['seeds']}; {len(report['tasks'])} tasks.",
    ]
    if p["name"] != "v1":
        lines.append(f"\n> Protocol `{p['name']}` is not the suite's: these numbers are not "
                     "comparable with the leaderboard.")  # fmt: skip
    if wall_seconds is not None:
        lines.append(f"\nWall time of this invocation: {wall_seconds:.0f} s.")
    for name, why in report["skipped_tasks"].items():
        lines.append(f"\n> Skipped `{name}`: {why}")
    if report["unranked_tasks"]:
        lines.append(f"\n> Not in the aggregates (the oracle does not beat self-consistency): "
                     f"{', '.join(report['unranked_tasks'])}")  # fmt: skip
    lines.append(
        "\n## Aggregates\n\nNormalised score (0 = self-consistency, 1 = oracle); point "
        "estimate [95% stratified-bootstrap CI over seeds and tasks] (rliable). Lower "
        "optimality gap is better. Training budget summed over the tasks.\n"
    )
    header = ["method", "kind", "IQM", "mean", "median", "optimality gap", "accuracy",
              "tokens / question", "train agent-steps", "train LLM calls"]  # fmt: skip
    rows = []
    for name, m in methods.items():
        a, b = m["aggregate"], m["budget"]
        rows.append([name, m["kind"], *(_ci(a.get(k)) for k in scores.METRICS),
                     _num(m["accuracy"], ".3f"), _num(m["tokens_per_question"], ",.0f"),
                     _num(b["train_agent_steps"], ",.0f"), _num(b["train_llm_calls"], ",.0f")])  # fmt: skip
    lines.append(table(header, rows))
    poi = report["probability_of_improvement"]
    if poi:
        lines.append("## Probability of improvement\n\nP(A > B): the probability that A beats "
                     "B on a task drawn at random, run against run (rliable).\n")  # fmt: skip
        lines.append(table(["A > B", "P", "95% CI"],
                           [[k, f"{v['mean']:.2f}", f"[{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]"]
                            for k, v in poi.items()]))  # fmt: skip
    names = list(methods)
    lines.append("## Per task: normalised score\n")
    lines.append(table(["task", *names], [
        [t, *(_num(methods[m]["per_task"].get(t, {}).get("normalized"), ".2f") for m in names)]
        for t in report["tasks"]
    ]))  # fmt: skip
    lines.append("## Per task: team accuracy / tokens per question\n")
    lines.append(table(["task", *names], [
        [t, *(_acc_tokens(methods[m]["per_task"].get(t)) for m in names)]
        for t in report["tasks"]
    ]))  # fmt: skip
    lines.append("## Cost-accuracy Pareto fronts\n")
    for bench, front in report["pareto"].items():
        lines.append(f"- {bench}: {' -> '.join(front['front'])}")
    return "\n".join(lines) + "\n"


def _acc_tokens(cell: Mapping[str, Any] | None) -> str:
    if not cell:
        return "-"
    return f"{_num(cell['accuracy'], '.3f')} / {_num(cell['tokens_per_question'], '.0f')}"


# --------------------------------------------------------------------------- figures
def plot_aggregates(report: Mapping[str, Any], path: Path) -> Path:
    """rliable's interval plot of the four aggregates, one row per method."""
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    methods = [m for m, r in report["methods"].items() if r["aggregate"]]
    point = {m: np.array([report["methods"][m]["aggregate"][k]["mean"] for k in scores.METRICS])
             for m in methods}  # fmt: skip
    interval = {
        m: np.array([report["methods"][m]["aggregate"][k]["ci95"] for k in scores.METRICS]).T
        for m in methods
    }
    fig, _ = plot_utils.plot_interval_estimates(
        point, interval, metric_names=["IQM", "Mean", "Median", "Optimality gap"],
        algorithms=methods[::-1], xlabel="Normalised score (0 = SC, 1 = oracle)",
        row_height=0.45, subfigure_width=3.6,
    )  # fmt: skip
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_profiles(report: Mapping[str, Any], path: Path) -> Path:
    from rliable import plot_utils

    profiles = report["performance_profiles"]
    fig, ax = new_figure(7.0, 4.5)
    plot_utils.plot_performance_profiles(
        {m: np.array(p["fraction"]) for m, p in profiles.items()}, np.array(scores.TAUS),
        performance_profile_cis={m: np.array(p["ci95"]) for m, p in profiles.items()},
        ax=ax, xlabel="normalised score (tau)", ylabel="fraction of runs with score > tau",
        labelsize="medium", ticklabelsize="medium",
    )  # fmt: skip
    ax.legend(fontsize="small", loc="lower left")
    fig.savefig(path, dpi=110)
    return path


def plot_poi(report: Mapping[str, Any], path: Path) -> Path:
    """The probability-of-improvement matrix: P(row > column)."""
    poi = report["probability_of_improvement"]
    names = list(dict.fromkeys(k.split(">")[0] for k in poi))
    fig, ax = new_figure(1.0 + 0.9 * len(names), 0.8 + 0.7 * len(names))
    grid = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a != b:
                grid[i, j] = poi[f"{a}>{b}"]["mean"]
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdBu")
    for i in range(len(names)):
        for j in range(len(names)):
            if i != j:
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize="small")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_title("P(row > column)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=110)
    return path


def plot_pareto(report: Mapping[str, Any], path: Path) -> Path:
    """Accuracy against tokens per question, one panel per benchmark, the front joined
    (the oracle a star); methods at the same point share a label."""
    fronts = report["pareto"]
    fig, axes = new_figure(4.6 * len(fronts), 4.2, ncols=len(fronts))
    for ax, (bench, f) in zip(np.atleast_1d(axes), fronts.items()):
        shared: dict[tuple[float, float], list[str]] = {}
        for m, (tok, acc) in f["points"].items():
            shared.setdefault((round(tok, 3), round(acc, 4)), []).append(m)
        for k, ((tok, acc), names) in enumerate(sorted(shared.items())):
            on_front = any(m in f["front"] for m in names)
            marker = "*" if scores.ONE in names else "o"
            ax.scatter(tok, acc, s=40 if marker == "*" else 16, marker=marker,
                       color="tab:red" if on_front else "tab:gray")  # fmt: skip
            ax.annotate(", ".join(names), (tok, acc), xytext=(3, 3 if k % 2 else -8),
                        textcoords="offset points", fontsize=6)  # fmt: skip
        line = np.array([f["points"][m] for m in f["front"]])
        ax.plot(line[:, 0], line[:, 1], color="tab:red", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("tokens per question (log)")
        ax.set_ylabel("team accuracy")
        ax.set_title(f"{bench} ({len(f['tasks'])} tasks)")
    fig.savefig(path, dpi=110)
    return path


def write_report(
    report: Mapping[str, Any], out: Path | str, wall_seconds: float | None = None
) -> list[Path]:
    """``report.json``, ``report.md`` and the PNGs into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "report.json", report), out / "report.md"]
    written[1].write_text(markdown(report, wall_seconds))
    if report["methods"] and any(r["aggregate"] for r in report["methods"].values()):
        written.append(plot_aggregates(report, out / "aggregate_intervals.png"))
        written.append(plot_profiles(report, out / "performance_profiles.png"))
    if report["probability_of_improvement"]:
        written.append(plot_poi(report, out / "probability_of_improvement.png"))
    written.append(plot_pareto(report, out / "pareto.png"))
    return written
