"""Every figure of the experiments, drawn with matplotlib's object API on the Agg canvas
(no pyplot, no global backend switch): the comparison's plots and the paper experiments'."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from algorithms.evaluate import ACTION_KEYS
from experiments.paper.setup import LABELS, LEARNED, PAPER
from experiments.stats import by_accuracy, half_width


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    """A matplotlib figure through the object API: no pyplot, no global backend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols)


def _save(fig: Any, path: Path | str) -> Path:
    fig.savefig(path, dpi=120)
    return Path(path)


# --------------------------------------------------------------------------- comparison
def plot_action_shares(results: Mapping[str, Any], path: Path | str) -> Path:
    """Stacked bars of PERSIST / REFINE / CONCEDE shares per method."""
    ranked = by_accuracy(results)
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
    return _save(fig, path)


def plot_accuracy_vs_tokens(results: Mapping[str, Any], path: Path | str) -> Path:
    """Team accuracy against tokens per question (log scale), with 95% CI error bars and
    one labelled point per method (methods with identical results share a label)."""
    fig, ax = new_figure(7.0, 4.8)
    points: dict[tuple[float, float], list[str]] = {}
    for name, m in results["methods"].items():
        acc, tok = m["team_accuracy"], m["tokens_per_question"]
        key = (round(tok["mean"], 6), round(acc["mean"], 6))
        if key not in points:
            ax.errorbar(tok["mean"], acc["mean"], xerr=half_width(tok), yerr=half_width(acc),
                        fmt="o", capsize=3)  # fmt: skip
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
    return _save(fig, path)


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
    return _save(fig, path)


# --------------------------------------------------------------------------- paper experiments
def plot_main_table(results: Mapping[str, Any], path: Path) -> Path:
    table, columns = results["table"], [*results["columns"], "average"]
    fig, ax = new_figure(max(8.0, 1.6 * len(columns)), 4.8)
    width = 0.8 / max(len(table), 1)
    x = np.arange(len(columns))
    cmap = __import__("matplotlib").colormaps["tab20"]
    for k, (row, t) in enumerate(table.items()):
        cells = [t["benchmarks"][c] if c != "average" else t["average"] for c in columns]
        means = np.array([c["mean"] for c in cells])
        err = np.array([half_width(c) for c in cells])
        ax.bar(x + (k - len(table) / 2 + 0.5) * width, means, width, yerr=err, capsize=1.5,
               label=LABELS.get(row, row), color=cmap(k % 20))  # fmt: skip
    ax.set_xticks(x, columns)
    ax.set_ylabel("team accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Main table: team accuracy per benchmark profile (95% CI over seeds)")
    return _save(fig, path)


def plot_backbones(per: Mapping[str, Any], path: Path) -> Path:
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
        err = np.array([half_width(c["team_accuracy"]) for c in cells])
        ax.bar(x + (k - 1) * 0.27, means, 0.27, yerr=err, capsize=3, label=label)
    ax.set_xticks(x, list(per))
    ax.set_ylabel("team accuracy")
    low = min(m["team_accuracy"]["ci95"][0] for p in per.values() for m in p["methods"].values())
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.legend(fontsize="small")
    ax.set_title("Backbones: best heuristic vs SFT+SoftRankPO (95% CI)")
    return _save(fig, path)


def plot_reward_scale(curves: Mapping[str, Mapping[str, list]], path: Path) -> Path:
    fig, axes = new_figure(4.2 * len(curves), 3.8, ncols=len(curves))
    axes = np.atleast_1d(axes)
    for ax, (name, by) in zip(axes, curves.items()):
        for k, (tf, per_seed) in enumerate(by.items()):
            acc = np.mean([[p["team_accuracy"] for p in c] for c in per_seed], axis=0)
            steps = [p["step"] for p in per_seed[0]]
            w = min(5, len(acc))
            smooth = np.convolve(acc, np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1 :], smooth, label=tf, linestyle=("-", "--", ":", "-.")[k % 4],
                    linewidth=2.5 - 0.4 * k)  # fmt: skip
        ax.set_title(name)
        ax.set_xlabel("agent steps")
        ax.legend(fontsize="small", title="reward")
    axes[0].set_ylabel("team accuracy, training rollouts (mean of 5)")
    fig.suptitle("Reward scale: learning curves (same seed per transform)")
    return _save(fig, path)


def plot_tau(per: Mapping[str, Any], sft: Mapping[str, Any], path: Path) -> Path:
    from matplotlib.ticker import NullFormatter

    fig, ax = new_figure(6.5, 4.2)
    taus: list[float] = []
    for k, (variant, by) in enumerate(per.items()):
        taus = [p["tau"] for p in by.values()]
        means = [p["team_accuracy"]["mean"] for p in by.values()]
        err = [half_width(p["team_accuracy"]) for p in by.values()]
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
    return _save(fig, path)


def plot_sweeps(sweeps: Mapping[str, list], path: Path) -> Path:
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
    return _save(fig, path)


ACTION_COLOURS = {
    "persist": "tab:blue",
    "refine": "tab:orange",
    "concede": "tab:green",
    "concede_noop": "palegreen",
}
SHORT = {"sft": "SFT", "sft+softrankpo": "SFT+SRPO", "softrankpo": "SRPO only"}


def plot_action_shift(stages: Mapping[str, Any], path: Path) -> Path:
    fig, axes = new_figure(11.0, 5.0, ncols=2)
    labels, bars = [], []
    for name, st in stages.items():
        short = SHORT.get(name, name)
        labels += [f"{short}\nlabelled", f"{short}\neffective"]
        bars += [dict(st["action_shares"], concede_noop=0.0), st["effective_shares"]]
    ax = axes[0]
    bottom = np.zeros(len(bars))
    for key, colour in ACTION_COLOURS.items():
        h = np.array([b[key] for b in bars])
        ax.bar(np.arange(len(bars)), h, bottom=bottom, color=colour,
               label=key.upper().replace("_NOOP", " (no-op)"))  # fmt: skip
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
        ax.plot(x, keeps, marker="s", linestyle="--", color=line.get_color(),
                label=f"{LABELS[name]}: PERSIST + no-op CONCEDE")  # fmt: skip
        ax.set_xticks(x)
    ax.set_xlabel("round")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    ax.set_title("Per round")
    fig.suptitle("Meta-actions after SFT and after RL")
    return _save(fig, path)


def _clusters(methods: Mapping[str, Any]) -> list[list[str]]:
    """Groups of near-identical points (cheap protocols pile up at the cost of N initial
    answers), so that each group gets one label."""
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
    return clusters


def plot_pareto(methods: Mapping[str, Any], front: Sequence[str], path: Path) -> Path:
    fig, ax = new_figure(8.0, 5.0)
    for name, m in methods.items():
        tok, acc = m["tokens_per_question"], m["team_accuracy"]
        marker = "*" if name == "oracle" else ("s" if name in LEARNED else "o")
        ax.errorbar(tok["mean"], acc["mean"], xerr=half_width(tok), yerr=half_width(acc),
                    fmt=marker, capsize=2, color="tab:red" if name in front else "tab:grey")  # fmt: skip
    # One label per cluster, listed top to bottom beside it.
    for k, cluster in enumerate(_clusters(methods)):
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
    return _save(fig, path)
