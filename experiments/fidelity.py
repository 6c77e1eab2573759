"""`deliberate fidelity`: a real debate transcript beside the simulator, cell by cell.

    deliberate fidelity --transcripts gsm_3_2.json [--format du|cache|jsonl]
        [--tasks gsm8k:../shared/data/gsm8k/test.jsonl] [--profile P] [--fit]
        [--keep-accuracy] [--seed S] [--replicas 20] --out runs/fidelity

(also ``python -m experiments.fidelity ...``). The transcript's protocol is replayed on
`SimulatedBackend`: the same N agents and R rounds, every agent REFINEs every round, the
same questions, each played by ``--replicas`` simulated teams (20 by default, so the
simulated side has about 20x the real sample and little noise). The profile is ``--profile``
(default: the env's), or with ``--fit`` one fitted to the transcript's records
(`agents.transcripts.fit_transcript`, starting from ``--profile``); its initial accuracy is
set to the transcript's round-0 accuracy unless ``--keep-accuracy``.

Writes into ``--out``: ``fidelity.json`` (``{"real", "simulated", "cells", "inside",
"total"}``: counts with Wilson 95% intervals on both sides, and the cells of
`experiments.fidelity_stats.cells`), ``fidelity.md`` (the tables) and ``fidelity.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.profiles import SimProfile, get_profile
from agents.transcripts import FORMATS, Transcript, fit_transcript, load_transcript
from deliberation_env.config import DEFAULT_PROFILE
from deliberation_env.tasks import Task
from experiments.fidelity_stats import annotate, cells, deliberation_stats

__all__ = ["REPLICAS", "add_arguments", "fidelity", "main", "run", "simulate", "write_report"]

REPLICAS = 20
"""Simulated teams per transcript question."""
_CHUNK = 20_000
"""Simulated episodes per vector env (bounds memory on big transcripts)."""


# ---------------------------------------------------------------------- the replay
def simulate(
    tasks: Sequence[Task],
    profile: SimProfile,
    num_agents: int,
    num_rounds: int,
    replicas: int = REPLICAS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Answer ids and correctness ``[len(tasks) * replicas, R+1, N]`` of all-REFINE debates.

    Replica r of question q is a copy of its task with its own id, so each replica draws
    its own latent difficulty: the simulated side averages over the profile's questions
    rather than fixing 100 draws of them.
    """
    from agents.simulated import SimulatedBackend
    from deliberation_env import Action, EnvConfig, VectorDeliberationEnv

    copies = [
        dataclasses.replace(t, id=f"{t.id}#{q}.{r}")
        for r in range(replicas)
        for q, t in enumerate(tasks)
    ]
    backend = SimulatedBackend(profile, seed=seed)
    answers, correct = [], []
    for start in range(0, len(copies), _CHUNK):
        chunk = copies[start : start + _CHUNK]
        config = EnvConfig(
            num_agents=num_agents,
            max_rounds=num_rounds,
            backend=backend,
            tasks=chunk,
            max_peers=max(4, num_agents - 1),
        )
        env = VectorDeliberationEnv(len(chunk), config=config, autoreset=False)
        env.reset(seed=seed + start, options={"task_index": np.arange(len(chunk))})
        rounds = [env.solution_arrays()]
        refine = np.full((len(chunk), num_agents), int(Action.REFINE))
        for _ in range(num_rounds):
            env.step(refine)
            rounds.append(env.solution_arrays())
        answers.append(np.stack([s["answer"] for s in rounds], 1))
        correct.append(np.stack([s["correct"] for s in rounds], 1))
    return np.concatenate(answers).astype(np.int64), np.concatenate(correct)


def replay_profile(
    transcript: Transcript,
    profile: str | SimProfile | None = None,
    fit: bool = False,
    keep_accuracy: bool = False,
) -> SimProfile:
    """The profile to replay with: `profile` (or the fitted one), at the transcript's
    round-0 accuracy unless `keep_accuracy`."""
    base = get_profile(profile or DEFAULT_PROFILE)
    chosen = (
        fit_transcript(transcript, base, name=f"fitted({transcript.path.name})") if fit else base
    )
    if keep_accuracy:
        return chosen
    accuracy = float(np.clip(transcript.correct[:, 0].mean(), 0.01, 0.99))
    return chosen.with_(name=f"{chosen.name}@p0={accuracy:.3f}", accuracy=accuracy)


def fidelity(
    transcript: Transcript,
    profile: str | SimProfile | None = None,
    fit: bool = False,
    keep_accuracy: bool = False,
    seed: int = 0,
    replicas: int = REPLICAS,
) -> dict[str, Any]:
    """The report of `transcript` against the simulator (shape in the module docstring)."""
    if transcript.num_rounds < 1:
        raise ValueError(
            f"{transcript.path}: the transcript has initial answers only; fidelity compares "
            "deliberation rounds, so the log needs at least one round after the initial one"
        )
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    chosen = replay_profile(transcript, profile, fit, keep_accuracy)
    real = deliberation_stats(transcript.answer_ids(), transcript.correct)
    sim_answers, sim_correct = simulate(
        transcript.tasks, chosen, transcript.num_agents, transcript.num_rounds, replicas, seed
    )
    simulated = deliberation_stats(sim_answers, sim_correct)
    table = cells(real, simulated)
    parameters = {k: v for k, v in dataclasses.asdict(chosen).items() if k != "sources"}
    return {
        "real": {
            "transcript": str(transcript.path),
            "format": transcript.format,
            "notes": list(transcript.notes),
            **annotate(real),
        },
        "simulated": {
            "profile": parameters,
            "fitted": fit,
            "replicas": replicas,
            "seed": seed,
            **annotate(simulated),
        },
        "cells": table,
        "inside": sum(c["inside_ci"] for c in table),
        "total": len(table),
    }


# ---------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``deliberate fidelity``."""
    parser.add_argument("--transcripts", required=True, type=Path, help="the debate log")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="du (Du et al. JSON), cache (response cache or records JSONL), "
        "jsonl (per-round answers); guessed from the file when omitted",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help="load_tasks spec the questions came from, e.g. "
        "gsm8k:../shared/data/gsm8k/test.jsonl (gives gold answers)",
    )
    parser.add_argument(
        "--kind",
        default="numeric",
        choices=("numeric", "math", "choice", "code"),
        help="answer kind of questions that match no task (default numeric)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help=f"simulator profile (default {DEFAULT_PROFILE}); with --fit, the "
        "base the fit starts from",
    )
    parser.add_argument(
        "--fit",
        action="store_true",
        help="replay with a profile fitted to the transcript's records",
    )
    parser.add_argument(
        "--keep-accuracy",
        action="store_true",
        help="keep the profile's initial accuracy instead of the transcript's",
    )
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument(
        "--replicas",
        type=int,
        default=REPLICAS,
        help=f"simulated teams per question (default {REPLICAS})",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")


def run(args: argparse.Namespace) -> int:
    """``deliberate fidelity``: read, replay, write; prints the cells table."""
    transcript = load_transcript(args.transcripts, args.format, args.tasks, args.kind)
    result = fidelity(
        transcript, args.profile, args.fit, args.keep_accuracy, args.seed, args.replicas
    )
    written = write_report(result, args.out)
    from experiments.fidelity_report import cells_table

    print(cells_table(result))
    print(f"{result['inside']} of {result['total']} cells inside the real 95% interval")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def write_report(result: dict[str, Any], out: Path | str) -> list[Path]:
    """``fidelity.json``, ``fidelity.md`` and ``fidelity.png`` into `out`."""
    from experiments.fidelity_report import write_files

    return write_files(result, Path(out))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.fidelity",
        description="A real debate transcript beside the simulator, cell by cell.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
