"""The files of `experiments.fidelity`: ``fidelity.json``, the Markdown tables of
``fidelity.md`` and the figure ``fidelity.png`` (real with its 95% interval, simulated as a
cross, for every cell and for the accuracy per round)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.figures import new_figure
from experiments.report import table, write_json

__all__ = ["cells_table", "markdown", "plot", "write_files"]


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def _ci(c: Mapping[str, Any]) -> str:
    if not c.get("ci95"):
        return "n/a"
    lo, hi = c["ci95"]
    return f"{c['k']}/{c['n']} = {_pct(c['rate'])} [{_pct(lo)}, {_pct(hi)}]"


def cells_table(result: Mapping[str, Any]) -> str:
    """The cells: real (Wilson 95% interval, n), simulated, inside or not."""
    rows = []
    for c in result["cells"]:
        lo, hi = c["real_ci"]
        rows.append(
            [
                c["name"],
                _pct(c["real"]),
                f"[{_pct(lo)}, {_pct(hi)}]",
                c["real_n"],
                _pct(c["simulated"]),
                "yes" if c["inside_ci"] else "**no**",
            ]
        )
    header = ["cell", "real", "real 95% CI", "real n", "simulated", "inside"]
    return table(header, rows)


def _rounds_table(real: Mapping[str, Any], sim: Mapping[str, Any]) -> str:
    rows = []
    for r in range(real["rounds"] + 1):
        rows.append(
            [r]
            + [
                f(side[key][r])
                for key in ("agent_accuracy", "vote_accuracy", "unanimous")
                for side, f in ((real, _ci), (sim, _rate))
            ]
        )
    header = [
        "round",
        "agent acc (real)",
        "agent acc (sim)",
        "vote (real)",
        "vote (sim)",
        "unanimous (real)",
        "unanimous (sim)",
    ]
    return table(header, rows)


def _rate(c: Mapping[str, Any]) -> str:
    return _pct(c.get("rate"))


def _splits_table(real: Mapping[str, Any], sim: Mapping[str, Any]) -> str:
    rows = []
    for label in sorted(
        set(real["splits"]) | set(sim["splits"]), key=lambda s: [-int(g) for g in s.split("-")]
    ):
        r, s = real["splits"].get(label), sim["splits"].get(label)
        for right in sorted(
            set((r or {}).get("by_right", {})) | set((s or {}).get("by_right", {}))
        ):
            rb = (r or {}).get("by_right", {}).get(right, {"questions": 0, "vote_final": 0})
            sb = (s or {}).get("by_right", {}).get(right, {"questions": 0, "vote_final": 0})
            rows.append(
                [
                    label,
                    right,
                    _share(rb["questions"], real["questions"]),
                    _share(sb["questions"], sim["questions"]),
                    f"{rb['vote_final']}/{rb['questions']}",
                    _share(sb["vote_final"], sb["questions"]),
                ]
            )
    header = [
        "initial split",
        "agents right",
        "share (real)",
        "share (sim)",
        "vote right after last round (real)",
        "(sim)",
    ]
    return table(header, rows)


def _share(k: int, n: int) -> str:
    return _pct(k / n) if n else "n/a"


def _conformity_table(real: Mapping[str, Any], sim: Mapping[str, Any]) -> str:
    rows = []
    for r, (rt, st) in enumerate(zip(real["transitions"], sim["transitions"]), start=1):
        for key, what in (
            ("keep_agreeing", "agreeing with all peers, keeps its answer"),
            ("adopt_agreeing_peers", "dissenter adopts the agreeing peers' answer"),
            ("unchanged", "answer unchanged (all agents)"),
        ):
            rows.append([r, what, _ci(rt[key]), _rate(st[key])])
    return table(["round", "agent", "real", "simulated"], rows)


def markdown(result: Mapping[str, Any]) -> str:
    """``fidelity.md``: what was compared, the cells, accuracy per round, splits."""
    real, sim = result["real"], result["simulated"]
    notes = "".join(f"> {n}\n" for n in real.get("notes", []))
    head = (
        f"# Fidelity: {Path(real['transcript']).name} vs `{sim['profile']['name']}`\n\n"
        f"{notes}{real['questions']} questions, N = {real['agents']} agents, "
        f"R = {real['rounds']} rounds, everyone REFINEs; the simulator replays each question "
        f"{sim['replicas']} times (seed {sim['seed']}{', fitted profile' if sim['fitted'] else ''}"
        "). Intervals: Wilson 95% on the real counts (Newcombe's paired interval for the vote "
        f"change).\n\n**{result['inside']} of {result['total']} cells inside the real "
        "interval.**\n\n"
    )
    return (
        head
        + "## Cells\n\n"
        + cells_table(result)
        + "\n## Accuracy per round\n\n"
        + _rounds_table(real, sim)
        + "\n## Initial splits and the vote after the last round\n\n"
        + _splits_table(real, sim)
        + "\n## Conformity\n\n"
        + _conformity_table(real, sim)
    )


def plot(result: Mapping[str, Any], path: Path) -> Path:
    """Left: every cell, real with its interval and simulated; right: accuracy per round."""
    fig, (ax, ax2) = new_figure(11.0, max(4.0, 0.32 * len(result["cells"]) + 1.5), ncols=2)
    names = [c["name"] for c in result["cells"]][::-1]
    cells = result["cells"][::-1]
    y = range(len(cells))
    real = [c["real"] for c in cells]
    err = [
        [c["real"] - c["real_ci"][0] for c in cells],
        [c["real_ci"][1] - c["real"] for c in cells],
    ]
    ax.errorbar(real, y, xerr=err, fmt="o", capsize=3, label="real (95% CI)")
    ax.plot([c["simulated"] for c in cells], y, "x", color="tab:red", ms=8, label="simulated")
    ax.set_yticks(list(y), names)
    for label, c in zip(ax.get_yticklabels(), cells):
        label.set_color("black" if c["inside_ci"] else "tab:red")  # outside: red
    ax.axvline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("rate")
    ax.legend(loc="best", fontsize="small")
    ax.set_title(f"{result['inside']} of {result['total']} cells inside (outside in red)")
    for key, colour in (("agent_accuracy", "tab:blue"), ("vote_accuracy", "tab:green")):
        for side, style in (("real", "o-"), ("simulated", "x--")):
            counts = result[side][key]
            ax2.plot(
                range(len(counts)),
                [c["rate"] for c in counts],
                style,
                color=colour,
                label=f"{key.split('_')[0]} ({side})",
            )
    ax2.set_xlabel("round")
    ax2.set_ylabel("accuracy")
    ax2.set_xticks(range(result["real"]["rounds"] + 1))
    ax2.legend(fontsize="small")
    ax2.set_title("Accuracy per round")
    fig.savefig(path, dpi=120)
    return path


def write_files(result: Mapping[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "fidelity.json", result), out / "fidelity.md"]
    written[1].write_text(markdown(result))
    written.append(plot(result, out / "fidelity.png"))
    return written
