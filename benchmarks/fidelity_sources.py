"""The simulator beside the four measured debate sources of calibration.md section H.

For each source (Q1.5, Q3, Q7, G35s: GSM8K, N = 3, one debate round, 100 questions) the
real side is its published counts (H1-H3, in ``tests/fixtures/transcripts/
section_h_counts.json``: we have the figures, not the logs) and the simulated side is an
all-REFINE replay on a profile (default ``llama3.1-8b/gsm8k``) whose initial accuracy is
the source's round-0 accuracy, on 100 GSM8K test questions (``arithmetic:100`` when
``../shared/data`` is absent), each played by ``--replicas`` simulated teams. Prints the 8
cells per source (real with its Wilson 95% interval, simulated, inside or not) and writes
them as JSON.

    python benchmarks/fidelity_sources.py [--profile P] [--replicas 200] [--seed 0]

The vote change has no paired table in section H (only its margins, H1), so its interval
is Newcombe's with phi = 0: wider than a paired one would be.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _report import write_report  # benchmarks/ is on sys.path (a script)

from agents.profiles import get_profile
from deliberation_env.config import DEFAULT_PROFILE
from deliberation_env.tasks import Task, load_tasks
from experiments.fidelity import simulate
from experiments.fidelity_stats import (
    cell_counts,
    deliberation_stats,
    delta_cell,
    proportion_cell,
    vote_delta,
)

REPO = Path(__file__).resolve().parents[1]
COUNTS = REPO / "tests" / "fixtures" / "transcripts" / "section_h_counts.json"


def questions(n: int = 100) -> tuple[list[Task], str]:
    """The first `n` GSM8K test questions from the shared data, else generated arithmetic."""
    data = Path(os.environ.get("DELIBERATION_DATA_DIR", REPO.parent / "shared" / "data"))
    path = data / "gsm8k" / "test.jsonl"
    if path.is_file():
        return load_tasks(f"gsm8k:{path}", limit=n), f"gsm8k:{path} (first {n})"
    return load_tasks(f"arithmetic:{n}"), f"arithmetic:{n}"


def real_counts(source: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """The transition cells of a source's published counts, named as `cell_counts` names them."""
    out: dict[str, tuple[int, int]] = {}
    for kind in ("fix", "break"):
        for j, (k, n) in enumerate(source[kind]):
            out[f"{kind}_{j}of2"] = (k, n)
    out["adopt_agreeing_pair"] = tuple(source["adopt_agreeing_pair"])  # type: ignore[assignment]
    return out


def initial_accuracy(source: Mapping[str, Any]) -> float:
    """Round-0 agent accuracy from the counts: right agents are those that could break."""
    right = sum(n for _, n in source["break"])
    return right / (right + sum(n for _, n in source["fix"]))


def compare(
    source: Mapping[str, Any], tasks: list[Task], profile: str, replicas: int, seed: int
) -> dict[str, Any]:
    """The 8 cells of one source: real counts beside the replay at its round-0 accuracy."""
    p0 = initial_accuracy(source)
    chosen = get_profile(profile).with_(accuracy=p0, name=f"{profile}@p0={p0:.3f}")
    answers, correct = simulate(tasks, chosen, 3, 1, replicas, seed)
    sim = deliberation_stats(answers, correct)
    sim_c = cell_counts(sim)
    cells = [
        proportion_cell(name, k, n, sim_c[name][0] / sim_c[name][1] if sim_c[name][1] else None)
        for name, (k, n) in real_counts(source).items()
    ]
    before, after = (round(v * source["questions"] / 100) for v in source["vote_percent"])
    s_after, s_before, s_q, _ = vote_delta(sim)
    cells.append(
        delta_cell(
            "vote_delta_last_round",
            after,
            before,
            source["questions"],
            0.0,
            (s_after - s_before) / s_q,
        )
    )
    return {
        "profile": chosen.name,
        "initial_accuracy": p0,
        "simulated_accuracy": [c["k"] / c["n"] for c in sim["agent_accuracy"]],
        "cells": cells,
        "inside": sum(c["inside_ci"] for c in cells),
        "total": len(cells),
    }


def markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# Simulator vs calibration.md section H ({report['profile']}, "
        f"{report['replicas']} simulated teams per question, {report['questions']})",
        "",
        "| source | cell | real | real 95% CI | n | simulated | inside |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for name, r in report["sources"].items():
        for c in r["cells"]:
            lo, hi = c["real_ci"]
            lines.append(
                f"| {name} | {c['name']} | {100 * c['real']:.1f}% | [{100 * lo:.1f}%, "
                f"{100 * hi:.1f}%] | {c['real_n']} | {100 * c['simulated']:.1f}% | "
                f"{'yes' if c['inside_ci'] else '**no**'} |"
            )
    lines += ["", "| source | p0 | inside |", "|---|---:|---:|"]
    lines += [
        f"| {n} | {r['initial_accuracy']:.3f} | {r['inside']} / {r['total']} |"
        for n, r in report["sources"].items()
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--replicas", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/fidelity_sources.json"))
    args = parser.parse_args()
    sources = json.loads(COUNTS.read_text())["sources"]
    tasks, where = questions()
    report = {
        "profile": args.profile,
        "replicas": args.replicas,
        "questions": where,
        "sources": {
            name: compare(s, tasks, args.profile, args.replicas, args.seed)
            for name, s in sources.items()
        },
    }
    write_report(report, args.out, markdown(report))


if __name__ == "__main__":
    main()
