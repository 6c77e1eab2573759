"""Long runs stay flat: the process's resident memory (RSS) while the simulated env plays
100,000 episodes, then a parallel env, then a stream of parallel envs built and dropped.

    python benchmarks/long_run.py                 # 100,000 vector episodes (B = 1024), then
                                                  # 2,000 parallel episodes, 2,000 with churn
    python benchmarks/long_run.py --episodes 20000 --parallel-episodes 500

Phases, each with random mask-respecting actions:

1. ``vector``: one `VectorDeliberationEnv` (autoreset) plays `--episodes` episodes;
2. ``parallel``: one `DeliberationEnv` with ``render_mode="ansi"`` (so the transcript is
   kept) plays `--parallel-episodes` episodes;
3. ``churn``: a fresh `DeliberationEnv` every `--env-every` episodes, its spaces queried,
   the previous one dropped (a `functools.cache` on the space methods once kept them all).

RSS is ``VmRSS`` of ``/proc/self/status`` after ``gc.collect()`` (the peak RSS from
`resource` where there is no ``/proc``), sampled `--samples` times per phase after a warm-up.
A phase passes when its RSS grew by at most `--max-growth-mib` from its first sample to its
last. It prints a Markdown table and writes JSON to ``runs/bench/long_run.json``.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import resource
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from _report import target, targets_table, write_report  # benchmarks/ is on sys.path

import deliberation_env
from deliberation_env import EnvConfig, VectorDeliberationEnv

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "runs" / "bench" / "long_run.json"
MIB = 1024 * 1024


def rss_mib() -> float:
    """Current resident set size in MiB (peak RSS where ``/proc`` is missing)."""
    gc.collect()
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MIB if sys.platform == "darwin" else 1024)


Play = Callable[[], int]
"""Advance a phase by one unit of work; returns the episodes it finished."""


def vector_play(config: EnvConfig, num_envs: int, seed: int) -> Play:
    venv = VectorDeliberationEnv(num_envs, config)
    rng = np.random.default_rng(seed)
    _, infos = venv.reset(seed=seed)
    mask = infos["action_mask"]
    shape = (venv.num_envs, venv.num_agents)

    def play() -> int:
        nonlocal mask
        k = (rng.random(shape) * mask.sum(-1)).astype(np.int64)
        actions = (np.cumsum(mask, axis=-1) <= k[..., None]).sum(-1)
        _, _, terminated, _, infos = venv.step(actions)
        mask = infos["action_mask"]
        return int(terminated.sum())

    return play


def episode(env: Any, rng: random.Random, seed: int | None) -> None:
    _, infos = env.reset(seed=seed)
    while env.agents:
        actions = {}
        for agent in env.agents:
            allowed = np.flatnonzero(infos[agent]["action_mask"])
            actions[agent] = int(allowed[rng.randrange(len(allowed))])
        _, _, _, _, infos = env.step(actions)


def parallel_play(config: EnvConfig, seed: int) -> Play:
    env = deliberation_env.parallel_env(config=config, render_mode="ansi")
    rng = random.Random(seed)
    episode(env, rng, seed)

    def play() -> int:
        episode(env, rng, None)
        env.render()
        return 1

    return play


def churn_play(config: EnvConfig, seed: int, every: int) -> Play:
    rng = random.Random(seed)
    state: dict[str, Any] = {"env": None, "n": 0}

    def play() -> int:
        if state["n"] % every == 0:
            env = deliberation_env.parallel_env(config=config)  # the previous one is dropped
            for agent in env.possible_agents:
                env.observation_space(agent)
                env.action_space(agent)
            state["env"] = env
        episode(state["env"], rng, seed + state["n"])
        state["n"] += 1
        return 1

    return play


def run_phase(name: str, play: Play, episodes: int, samples: int, warmup: int) -> dict[str, Any]:
    """Play `warmup` episodes, then `episodes` more, sampling RSS `samples` times."""
    done = 0
    while done < warmup:
        done += play()
    points = [(0, rss_mib())]
    start = time.perf_counter()
    played = 0
    for i in range(1, samples + 1):
        goal = episodes * i // samples
        while played < goal:
            played += play()
        points.append((played, rss_mib()))
        print(f"  {name:<9} {played:>9,} episodes  RSS {points[-1][1]:8.1f} MiB", file=sys.stderr)
    seconds = time.perf_counter() - start
    rss = [r for _, r in points]
    return {
        "phase": name,
        "episodes": played,
        "seconds": seconds,
        "rss_start_mib": rss[0],
        "rss_end_mib": rss[-1],
        "rss_peak_mib": max(rss),
        "growth_mib": rss[-1] - rss[0],
        "samples": [{"episodes": e, "rss_mib": r} for e, r in points],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = EnvConfig(num_agents=args.num_agents, max_rounds=args.max_rounds, profile=args.profile)
    rss_before = rss_mib()
    phases = [
        run_phase(
            "vector",
            vector_play(config, args.num_envs, args.seed),
            args.episodes,
            args.samples,
            warmup=4 * args.num_envs,
        ),
        run_phase(
            "parallel",
            parallel_play(config, args.seed),
            args.parallel_episodes,
            args.samples,
            warmup=50,
        ),
        run_phase(
            "churn",
            churn_play(config, args.seed, args.env_every),
            args.parallel_episodes,
            args.samples,
            warmup=2 * args.env_every,
        ),
    ]
    targets = [
        target(
            f"{p['phase']}: RSS grows <= {args.max_growth_mib:g} MiB over {p['episodes']:,} episodes",
            p["growth_mib"],
            f"{p['rss_start_mib']:.1f} -> {p['rss_end_mib']:.1f} MiB ({p['growth_mib']:+.1f})",
            p["growth_mib"] <= args.max_growth_mib,
        )
        for p in phases
    ]
    return {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "deliberation_env": deliberation_env.__version__,
            "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "config": {**vars(args), "out": str(args.out)},
        "rss_before_mib": rss_before,
        "rss_after_mib": rss_mib(),
        "phases": phases,
        "targets": targets,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| phase | episodes | seconds | RSS start (MiB) | RSS end (MiB) | peak (MiB) | growth (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["phases"]:
        lines.append(
            f"| {p['phase']} | {p['episodes']:,} | {p['seconds']:.1f} | {p['rss_start_mib']:.1f} "
            f"| {p['rss_end_mib']:.1f} | {p['rss_peak_mib']:.1f} | {p['growth_mib']:+.1f} |"
        )
    lines += targets_table(report["targets"])
    lines += [
        "",
        f"RSS after gc.collect(), first sample after a warm-up; process RSS "
        f"{report['rss_before_mib']:.1f} MiB before the run, {report['rss_after_mib']:.1f} after.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=100_000, help="vector-env episodes")
    p.add_argument("--num-envs", type=int, default=1024, help="vector env B")
    p.add_argument(
        "--parallel-episodes", type=int, default=2_000, help="episodes of each parallel phase"
    )
    p.add_argument("--env-every", type=int, default=20, help="churn: episodes per fresh env")
    p.add_argument("--samples", type=int, default=10, help="RSS samples per phase")
    p.add_argument("--max-growth-mib", type=float, default=16.0, help="PASS threshold per phase")
    p.add_argument("--num-agents", type=int, default=EnvConfig.num_agents)
    p.add_argument("--max-rounds", type=int, default=EnvConfig.max_rounds)
    p.add_argument("--profile", default=EnvConfig.profile, help="simulated backend profile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = p.parse_args(argv)
    if min(args.episodes, args.num_envs, args.parallel_episodes, args.env_every, args.samples) < 1:
        p.error("counts must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    write_report(report, args.out, markdown(report))


if __name__ == "__main__":
    main()
