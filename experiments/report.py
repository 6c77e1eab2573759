"""Reports: JSON that survives a round trip (`jsonable`), Markdown tables built from rows
(`table`), the comparison's table and files (`markdown_table`, `write_results`), and the
header every paper experiment's ``results.md`` starts with."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deliberation_env.tasks import Task
from experiments import figures
from experiments.stats import by_accuracy, half_width


# --------------------------------------------------------------------------- JSON
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


def write_json(path: Path | str, data: Any) -> Path:
    """`data` as indented JSON (through `jsonable`), newline-terminated."""
    Path(path).write_text(json.dumps(jsonable(data), indent=2) + "\n")
    return Path(path)


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no results at {path}: run the experiment first (without --render-only)"
        )
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- Markdown
def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: the header, its rule, one line per row (cells through `str`)."""
    lines = [_row(header), "|" + "---|" * len(header)]
    lines += [_row(r) for r in rows]
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def pm(metric: Mapping[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± half-width`` of a metric's 95% interval, in percent by default."""
    return f"{metric['mean'] * scale:.{digits}f} ± {half_width(metric) * scale:.{digits}f}"


def signed_interval(diff: Mapping[str, Any], digits: int = 1) -> str:
    """A difference in points with its interval: ``+1.2 [-0.3, +2.7]``."""
    lo, hi = diff["ci95"]
    return f"{diff['mean'] * 100:+.{digits}f} [{lo * 100:+.{digits}f}, {hi * 100:+.{digits}f}]"


def oracle_cell(methods: Mapping[str, Any]) -> str:
    """The oracle's accuracy cell (``n/a`` on a real backend, where it is skipped)."""
    return pm(methods["oracle"]["team_accuracy"]) if "oracle" in methods else "n/a"


def tokens_cell(methods: Mapping[str, Any], best: str) -> str:
    """``tokens of the best heuristic / tokens of SFT+SoftRankPO``."""
    tokens = [methods[m]["tokens_per_question"]["mean"] for m in (best, "sft+softrankpo")]
    return f"{tokens[0]:.0f} / {tokens[1]:.0f}"


def experiment_header(title: str, results: Mapping[str, Any]) -> str:
    """Title, notes, and what the intervals are over, from ``results`` alone."""
    config = results["config"]
    budget = config["budget"]
    seeds = (
        f"{len(budget['eval_seeds'])} evaluation seeds x {config['eval_episodes']} held-out "
        f"questions; training seeds {list(budget['train_seeds'])}"
    )
    notes = "\n".join(f"> {n}" for n in results["notes"])
    return (
        f"# {title}\n\n{notes}\n\nMean ± half of the 95% CI over seeds ({seeds}); "
        f"{results['wall_seconds']:.0f} s wall, {results['cpu_seconds']:.0f} s CPU.\n\n"
    )


def profile_of(results: Mapping[str, Any]) -> str:
    """The single profile of an experiment, ``BACKBONE/BENCHMARK``."""
    return f"{results['config']['backbone']}/{results['config']['benchmark']}"


# --------------------------------------------------------------------------- comparison
def markdown_table(results: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table, best team accuracy first (± half the 95% CI)."""
    header = ["method", "team accuracy", "agent accuracy", "consensus", "tokens / question",
              "persist", "refine", "concede"]  # fmt: skip
    rows = []
    for name, m in by_accuracy(results):
        team, agent, tok = m["team_accuracy"], m["agent_accuracy"], m["tokens_per_question"]
        shares = m["action_shares"]
        rows.append([
            name,
            f"{team['mean']:.3f} ± {half_width(team):.3f}",
            f"{agent['mean']:.3f} ± {half_width(agent):.3f}",
            f"{m['consensus_rate']['mean']:.3f}",
            f"{tok['mean']:.0f} ± {half_width(tok):.0f}",
            *(f"{shares[k]:.1%}" for k in ("persist", "refine", "concede")),
        ])  # fmt: skip
    return table(header, rows)


def write_results(
    results: Mapping[str, Any],
    out: Path | str,
    learning_curves: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
) -> list[Path]:
    """Write ``results.json``, ``results.md`` and the plots of a comparison into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_json(out / "results.json", results), out / "results.md"]
    written[1].write_text(markdown_table(results))
    written.append(figures.plot_action_shares(results, out / "action_shares.png"))
    written.append(figures.plot_accuracy_vs_tokens(results, out / "accuracy_vs_tokens.png"))
    if learning_curves:
        written.append(figures.plot_learning_curves(learning_curves, out / "learning_curves.png"))
    return written
