"""Environment speed: `DeliberationEnv` rounds/s, `VectorDeliberationEnv` agent-steps/s, and
PettingZoo's rock-paper-scissors as a reference, all measured side by side in one run.

    make bench                                   # or:
    python benchmarks/env_speed.py --seconds 1 --batch-sizes 1 64 1024 4096

Every measurement steps random, mask-respecting actions for a fixed wall time after a
warm-up; resets (and the vector env's autoresets) happen inside the timed loop. It prints
a Markdown table, the issue's targets with PASS/MISS (a miss does not fail the process),
and writes the numbers with the machine's description to ``runs/bench/env_speed.json``.
Compare ratios, which are measured on the same machine in the same run, rather than
absolute numbers across machines. The targets are for one core:
``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/env_speed.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pettingzoo
from _report import targets_table, write_report  # benchmarks/ is on sys.path (a script)

import deliberation_env
from deliberation_env import EnvConfig, VectorDeliberationEnv

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "runs" / "bench" / "env_speed.json"

TARGET_PARALLEL_ROUNDS = 5_000
"""ParallelEnv rounds (step() calls) per second, on one core (issue 10 item 1)."""
TARGET_VECTOR_AGENT_STEPS = 1_500_000
"""VectorDeliberationEnv agent-steps per second at B = `TARGET_BATCH`, on one core (issue 10
item 1)."""
TARGET_VECTOR_SPEEDUP = 100.0
"""Vector env at B = `TARGET_BATCH` over the ParallelEnv, per agent-step."""
TARGET_BATCH = 4096

Tick = Callable[[], None]
"""One step of a benchmark loop (resetting first when the episode is over)."""


@dataclass
class Measurement:
    name: str
    num_envs: int
    num_agents: int
    steps: int
    seconds: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def agent_steps_per_s(self) -> float:
        return self.steps_per_s * self.num_envs * self.num_agents

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "steps_per_s": self.steps_per_s,
            "agent_steps_per_s": self.agent_steps_per_s,
        }


def measure(tick: Tick, seconds: float, warmup: float) -> tuple[int, float]:
    """Call `tick` for `warmup` seconds, then count calls for `seconds`: (calls, elapsed)."""
    clock = time.perf_counter
    end = clock() + warmup
    while clock() < end:
        tick()
    steps = 0
    start = clock()
    end = start + seconds
    while True:
        tick()
        steps += 1
        now = clock()
        if now >= end:
            return steps, now - start


def parallel_loop(env: pettingzoo.ParallelEnv, seed: int) -> Tick:
    """Random stepping of any ParallelEnv, as PettingZoo's `performance_benchmark` does:
    a uniform action among those allowed by ``infos[agent]["action_mask"]`` when the env
    gives one, else among all; `reset()` when every agent is done.

    Actions come from Python's `random` rather than ``action_space.sample(mask)``, whose
    ~30 us per call would dominate the time of a fast env.
    """
    rng = random.Random(seed)
    _, infos = env.reset(seed=seed)
    sizes = {agent: int(env.action_space(agent).n) for agent in env.possible_agents}

    def tick() -> None:
        nonlocal infos
        if not env.agents:
            _, infos = env.reset()
        actions = {}
        for agent in env.agents:
            mask = infos.get(agent, {}).get("action_mask")
            if mask is None:
                actions[agent] = rng.randrange(sizes[agent])
            else:
                allowed = np.flatnonzero(mask)
                actions[agent] = int(allowed[rng.randrange(len(allowed))])
        _, _, _, _, infos = env.step(actions)

    return tick


def vector_loop(venv: VectorDeliberationEnv, seed: int) -> Tick:
    """Random stepping of the vector env: uniform among allowed actions, drawn as arrays."""
    rng = np.random.default_rng(seed)
    _, infos = venv.reset(seed=seed)
    mask = infos["action_mask"]
    shape = (venv.num_envs, venv.num_agents)

    def tick() -> None:
        nonlocal mask
        # The k-th allowed action with k uniform in [0, number allowed).
        k = (rng.random(shape) * mask.sum(-1)).astype(np.int64)
        actions = (np.cumsum(mask, axis=-1) <= k[..., None]).sum(-1)
        _, _, _, _, infos = venv.step(actions)
        mask = infos["action_mask"]

    return tick


def rps_parallel_env() -> tuple[pettingzoo.ParallelEnv, str]:
    """`pettingzoo.classic.rps_v2.parallel_env()` and a note on how it was loaded.

    rps imports pygame to render, and its `reset()` allocates an off-screen
    ``pygame.Surface`` even when nothing is rendered. pygame comes with the
    ``pettingzoo[classic]`` extra, which this project does not need; when it is missing a
    stand-in module whose ``Surface`` does nothing is used (rps then resets slightly faster
    than with pygame, which favours the reference). The note says which ran.
    """
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame

        note = f"pygame {pygame.version.ver}"
    except ImportError:
        stand_in = types.ModuleType("pygame")
        stand_in.Surface = lambda *args, **kwargs: None  # type: ignore[attr-defined]
        sys.modules["pygame"] = stand_in
        note = "pygame not installed: stand-in module with a no-op Surface (rps never renders)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pettingzoo.classic import rps_v2
    return rps_v2.parallel_env(), note


def machine_info() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pettingzoo": pettingzoo.__version__,
        "deliberation_env": deliberation_env.__version__,
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value >= target else "MISS"


def of_target(value: float, target: float) -> str:
    """The measured value's ratio to its target, as the targets table prints it."""
    return f"{value / target:.2f}x target"


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = EnvConfig(num_agents=args.num_agents, max_rounds=args.max_rounds, profile=args.profile)
    results: list[Measurement] = []

    def record(name: str, tick: Tick, num_envs: int, num_agents: int) -> Measurement:
        steps, seconds = measure(tick, args.seconds, args.warmup)
        m = Measurement(name, num_envs, num_agents, steps, seconds)
        results.append(m)
        print(f"  {name:<34} {m.steps_per_s:>14,.0f} steps/s", file=sys.stderr)
        return m

    print(f"measuring, {args.seconds:g} s each after {args.warmup:g} s warm-up", file=sys.stderr)
    rps, rps_note = rps_parallel_env()
    ref = record("pettingzoo rps_v2 (parallel)", parallel_loop(rps, args.seed), 1, 2)
    par_env = deliberation_env.parallel_env(config=config)
    par = record(
        "DeliberationEnv (parallel)", parallel_loop(par_env, args.seed), 1, args.num_agents
    )
    vec: dict[int, Measurement] = {}
    for B in args.batch_sizes:
        venv = VectorDeliberationEnv(B, config)
        vec[B] = record(
            f"VectorDeliberationEnv B={B}", vector_loop(venv, args.seed), B, args.num_agents
        )
        venv.close()

    vs_parallel = {B: m.agent_steps_per_s / par.agent_steps_per_s for B, m in vec.items()}
    parallel_vs_rps = par.steps_per_s / ref.steps_per_s
    at_target = vec.get(TARGET_BATCH)
    targets = [
        {
            "target": f"DeliberationEnv >= {TARGET_PARALLEL_ROUNDS:,} rounds/s",
            "measured": par.steps_per_s,
            "text": f"{par.steps_per_s:,.0f} rounds/s "
            f"({of_target(par.steps_per_s, TARGET_PARALLEL_ROUNDS)})",
            "result": verdict(par.steps_per_s, TARGET_PARALLEL_ROUNDS),
        },
        {
            "target": f"VectorDeliberationEnv >= {TARGET_VECTOR_AGENT_STEPS:,} agent-steps/s "
            f"at B={TARGET_BATCH}",
            "measured": at_target and at_target.agent_steps_per_s,
            "text": f"{at_target.agent_steps_per_s:,.0f} agent-steps/s "
            f"({of_target(at_target.agent_steps_per_s, TARGET_VECTOR_AGENT_STEPS)})"
            if at_target
            else f"B={TARGET_BATCH} not measured",
            "result": verdict(at_target and at_target.agent_steps_per_s, TARGET_VECTOR_AGENT_STEPS),
        },
        {
            "target": f"vector (B={TARGET_BATCH}) >= {TARGET_VECTOR_SPEEDUP:g}x DeliberationEnv "
            "per agent-step",
            "measured": vs_parallel.get(TARGET_BATCH),
            "text": f"{vs_parallel[TARGET_BATCH]:,.1f}x "
            f"({of_target(vs_parallel[TARGET_BATCH], TARGET_VECTOR_SPEEDUP)})"
            if TARGET_BATCH in vs_parallel
            else f"B={TARGET_BATCH} not measured",
            "result": verdict(vs_parallel.get(TARGET_BATCH), TARGET_VECTOR_SPEEDUP),
        },
    ]
    return {
        "machine": machine_info(),
        "config": {**vars(args), "out": str(args.out), "rps": rps_note},
        "results": [m.as_dict() for m in results],
        "ratios": {
            "parallel_over_rps_steps": parallel_vs_rps,
            "vector_over_parallel_agent_steps": {str(B): r for B, r in vs_parallel.items()},
        },
        "targets": targets,
    }


def markdown(report: dict[str, Any]) -> str:
    ratios = report["ratios"]
    vs_parallel = ratios["vector_over_parallel_agent_steps"]
    lines = [
        "| env | B x N | steps/s | agent-steps/s | ratio (same run) |",
        "|---|---|---:|---:|---|",
    ]
    for r in report["results"]:
        if r["name"].startswith("pettingzoo"):
            ratio = "reference"
        elif r["name"].startswith("DeliberationEnv"):
            ratio = f"{ratios['parallel_over_rps_steps']:.3g}x rps steps/s"
        else:
            ratio = f"{vs_parallel[str(r['num_envs'])]:,.1f}x DeliberationEnv per agent-step"
        lines.append(
            f"| {r['name']} | {r['num_envs']} x {r['num_agents']} | {r['steps_per_s']:,.0f} "
            f"| {r['agent_steps_per_s']:,.0f} | {ratio} |"
        )
    lines += targets_table(report["targets"])
    m = report["machine"]
    lines += [
        "",
        f"steps/s: step() calls per second (resets inside the loop); agent-steps = B x N per "
        f"step. Machine: {m['platform']}, {m['cpu_count']} CPUs, Python {m['python']}, "
        f"numpy {m['numpy']}, pettingzoo {m['pettingzoo']}; commit {m['git_commit']}.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="timed wall time per measurement")
    p.add_argument("--warmup", type=float, default=0.5, help="untimed stepping before each")
    p.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 64, 1024, 4096], help="vector env B"
    )
    p.add_argument("--num-agents", type=int, default=EnvConfig.num_agents, help="N (paper: 3)")
    p.add_argument("--max-rounds", type=int, default=EnvConfig.max_rounds, help="T (paper: 3)")
    p.add_argument("--profile", default=EnvConfig.profile, help="simulated backend profile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0:
        p.error("--seconds must be > 0 and --warmup >= 0")
    if any(b < 1 for b in args.batch_sizes):
        p.error("--batch-sizes must be positive integers")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    write_report(report, args.out, markdown(report))


if __name__ == "__main__":
    main()
