"""The simulator beside the four measured debate sources of calibration.md section H.

For each source (Q1.5, Q3, Q7, G35s: GSM8K, N = 3, one debate round, 100 questions) the
real side is its published counts (H1-H3, in ``tests/fixtures/transcripts/
section_h_counts.json``: we have the figures, not the logs) and the simulated side is an
all-REFINE replay on a profile (default ``llama3.1-8b/gsm8k``) whose initial accuracy is
the source's round-0 accuracy, on 100 GSM8K test questions (``arithmetic:100`` when
``../shared/data`` is absent), each played by ``--replicas`` simulated teams. Prints the 8
cells per source (real with its Wilson 95% interval, simulated, inside or not) beside the
same cells of ``--before`` (default: the profile's ``@v0`` twin, the Deliberation-v0
simulator), and writes them as JSON. ``--votes`` adds the plurality vote before and after
one round of all-REFINE on every calibrated profile, v0 beside v1 (debate should roughly
tie the vote: calibration.md B, H1).

    python benchmarks/fidelity_sources.py [--profile P] [--before P0] [--replicas 200]
        [--seed 0] [--votes]

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

import numpy as np
from _report import write_report  # benchmarks/ is on sys.path (a script)

from agents.profiles import BACKBONES, BENCHMARKS, get_profile
from deliberation_env.config import DEFAULT_PROFILE
from deliberation_env.registration import pin_profile
from deliberation_env.tasks import Task, load_tasks
from deliberation_env.voting import agreement, plurality, winner_correct
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


def vote_change(
    profile: str, tasks: list[Task], replicas: int, seed: int, rounds: int = 1
) -> dict[str, float]:
    """Agent and plurality-vote accuracy before and after `rounds` of all-REFINE (N = 3;
    ties to the first holder, as in `deliberation_stats`, without its per-split tables)."""
    answers, correct = simulate(tasks, get_profile(profile), 3, rounds, replicas, seed)
    out = {}
    for when, r in (("before", 0), ("after", rounds)):
        winner = plurality(agreement(answers[:, r]), np.zeros(answers[:, r].shape), "first")
        out[f"agent_{when}"] = float(correct[:, r].mean())
        out[f"vote_{when}"] = float(winner_correct(correct[:, r], winner).mean())
    return out


def calibrated_profiles() -> list[str]:
    """Every backbone x benchmark profile (the latest version)."""
    return [f"{bb}/{bm}" for bm in BENCHMARKS for bb in BACKBONES]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# Simulator vs calibration.md section H: {report['before']} (before) and "
        f"{report['profile']} (after), {report['replicas']} simulated teams per question, "
        f"{report['questions']}",
        "",
        "| source | cell | real | real 95% CI | n | before | inside | after | inside |",
        "|---|---|---:|---|---:|---:|---|---:|---|",
    ]
    for name, r in report["sources"].items():
        for c, b in zip(r["cells"], report["before_sources"][name]["cells"]):
            lo, hi = c["real_ci"]
            lines.append(
                f"| {name} | {c['name']} | {_pct(c['real'])} | [{_pct(lo)}, {_pct(hi)}] | "
                f"{c['real_n']} | {_pct(b['simulated'])} | {'yes' if b['inside_ci'] else 'no'} | "
                f"{_pct(c['simulated'])} | {'yes' if c['inside_ci'] else '**no**'} |"
            )
    lines += ["", "| source | p0 | inside before | inside after |", "|---|---:|---:|---:|"]
    lines += [
        f"| {n} | {r['initial_accuracy']:.3f} | {report['before_sources'][n]['inside']} / "
        f"{r['total']} | {r['inside']} / {r['total']} |"
        for n, r in report["sources"].items()
    ]
    if "votes" in report:
        lines += ["", "One round of all-REFINE, N = 3: agent accuracy and plurality vote "
                  "(ties to the first holder), v0 beside v1", "",
                  "| profile | v0 agent | v0 vote | v0 change | v1 agent | v1 vote | v1 change |",
                  "|---|---|---|---:|---|---|---:|"]  # fmt: skip
        for name, v in report["votes"].items():
            cols = []
            for ver in ("v0", "v1"):
                x = v[ver]
                cols += [f"{x['agent_before']:.3f} -> {x['agent_after']:.3f}",
                         f"{x['vote_before']:.3f} -> {x['vote_after']:.3f}",
                         f"{100 * (x['vote_after'] - x['vote_before']):+.1f}"]  # fmt: skip
            lines.append(f"| {name} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--before", default=None, help="default: the profile's @v0 twin")
    parser.add_argument("--replicas", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--votes", action="store_true", help="the vote check on every profile")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/fidelity_sources.json"))
    args = parser.parse_args()
    before = args.before or pin_profile(args.profile, "v0")
    sources = json.loads(COUNTS.read_text())["sources"]
    tasks, where = questions()
    report: dict[str, Any] = {
        "profile": args.profile,
        "before": before,
        "replicas": args.replicas,
        "questions": where,
    }
    for key, profile in (("sources", args.profile), ("before_sources", before)):
        report[key] = {
            name: compare(s, tasks, profile, args.replicas, args.seed)
            for name, s in sources.items()
        }
    if args.votes:
        report["votes"] = {
            name: {ver: vote_change(pin_profile(name, ver), tasks, args.replicas, args.seed)
                   for ver in ("v0", "v1")}
            for name in calibrated_profiles()
        }  # fmt: skip
    write_report(report, args.out, markdown(report))


if __name__ == "__main__":
    main()
