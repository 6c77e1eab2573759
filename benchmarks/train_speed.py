"""Training throughput: agent-steps per second of each learned method on the simulated
benchmark (collection and updates together), measured side by side in one run.

    python benchmarks/train_speed.py [--updates 10] [--profile PROFILE]

Writes ``runs/bench/train_speed.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from algorithms.common import train_env
from algorithms.registry import get_algorithm
from experiments.budgets import BUDGETS, DEFAULT_BUDGET
from experiments.pipeline import method_config

OUT = Path(__file__).resolve().parents[1] / "runs" / "bench" / "train_speed.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--profile", default=train_env().profile)
    parser.add_argument(
        "--methods", nargs="+", default=["softrankpo", "grpo", "ppo", "reinforce", "sb3_ppo"]
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    preset = BUDGETS[DEFAULT_BUDGET]
    preset = dataclasses.replace(preset, updates=args.updates)
    env = dataclasses.replace(train_env(), profile=args.profile)
    rows = []
    for name in args.methods:
        cfg = method_config(name, preset, env)
        _, train = get_algorithm(name).load()
        start = time.perf_counter()
        _, history = train(cfg, progress=False)
        seconds = time.perf_counter() - start
        steps = sum(h.get("agent_steps", 0) for h in history)
        rows.append({"method": name, "agent_steps": steps, "seconds": seconds,
                     "agent_steps_per_s": steps / seconds})  # fmt: skip
    print("| method | agent steps | seconds | agent-steps/s |\n|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {r['agent_steps']} | {r['seconds']:.1f} | {r['agent_steps_per_s']:,.0f} |"
        )
    report = {"config": {"updates": args.updates, "profile": args.profile}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
