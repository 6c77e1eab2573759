"""Training throughput: agent-steps per second of the env alone, the env with `MetaPolicy`
inference, and each learned method end to end (collection and updates), measured side by
side in one run on one core, each with its ratio to the env-only rate at the same batch.

    python benchmarks/train_speed.py [--updates 10] [--seconds 2] [--profile PROFILE]

Rows: env-only, env + inference and inference-only (the policy alone) at B in
`--batch-sizes`; every method at the quick budget's shape (64 questions x 8 rollouts:
B = 512, with the quick budget's SB3 settings) and at ``deliberate train``'s default (its
config's defaults: B = 512). Prints a
Markdown table with the issue's targets and writes ``runs/bench/train_speed.json``. Compare
the ratios, measured in the same run. Rates are per CPU second of this process
(``time.process_time``; torch runs one thread), so other load on a shared machine does not
count against them; the wall-clock rates are in the JSON beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _report import target, targets_table, write_report  # benchmarks/ is on sys.path

from algorithms.common import TrainConfig, make_policy, train_env
from algorithms.registry import get_algorithm
from algorithms.rollout import sample_actions
from deliberation_env import EnvConfig, VectorDeliberationEnv
from experiments.budgets import BUDGETS, DEFAULT_BUDGET
from experiments.pipeline import method_config

OUT = Path(__file__).resolve().parents[1] / "runs" / "bench" / "train_speed.json"

GROUP_METHODS = ("softrankpo", "grpo", "reinforce")
TARGET_INFERENCE_RATIO = 0.40
"""Env + policy inference at B = 4096 over env-only stepping."""
TARGET_GROUP_RATE = 40_000
"""SoftRankPO / GRPO / REINFORCE end to end, agent-steps/s."""
TARGET_GROUP_RATIO = 0.10
"""... and over env-only stepping at the same B."""
TARGET_PPO_RATE = 25_000


def stepping_rates(
    env_cfg: EnvConfig, batch: int, seconds: float, repeats: int = 3
) -> tuple[float, float, float]:
    """(env-only, env + inference, inference-only) agent-steps/s of the autoresetting
    vector env at `batch`: random mask-respecting actions, or actions sampled from a fresh
    `MetaPolicy`; the last is the policy alone (forward and sampling on one batch of
    observations, no env step). The three are timed in alternation, `repeats` times each,
    and the best of each kept, so a load that comes and goes on a shared machine hits them
    alike."""
    venv = VectorDeliberationEnv(batch, config=env_cfg)
    net = make_policy(TrainConfig(env=env_cfg))
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    obs, info = venv.reset(seed=0)  # (each `rate` resets again)

    def infer(obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = net(torch.as_tensor(obs), torch.as_tensor(mask))
        return sample_actions(logits, gen)[0]

    def tick(policy: bool | None) -> None:
        nonlocal obs, info
        mask = info["action_mask"]
        if policy is None:  # inference only
            infer(obs, mask)
            return
        if not policy:
            k = (rng.random(mask.shape[:-1]) * mask.sum(-1)).astype(np.int64)
            actions = (np.cumsum(mask, axis=-1) <= k[..., None]).sum(-1)
        else:
            actions = infer(obs, mask)
        obs, _, _, _, info = venv.step(actions)

    def rate(policy: bool | None) -> float:
        nonlocal obs, info
        obs, info = venv.reset(seed=0)  # every timed part starts from the same states
        tick(policy)  # warm-up
        steps, start = 0, time.process_time()
        while time.process_time() - start < seconds / repeats:
            tick(policy)
            steps += 1
        return steps * batch * venv.num_agents / (time.process_time() - start)

    best = [0.0, 0.0, 0.0]
    for _ in range(repeats):
        best = [max(b, rate(p)) for b, p in zip(best, (False, True, None), strict=True)]
    return best[0], best[1], best[2]


def train_rate(name: str, shape: str, updates: int, env: EnvConfig) -> dict[str, Any]:
    """One method's end-to-end rate at `shape` ("quick": the quick budget's; "default":
    its config's defaults, as ``deliberate train`` runs it)."""
    cls, train = get_algorithm(name).load()
    if shape == "quick":
        budget = dataclasses.replace(BUDGETS[DEFAULT_BUDGET], updates=updates)
        cfg = method_config(name, budget, env)
    else:
        cfg = cls(env=env, updates=updates)
    batch = cfg.questions_per_update * cfg.group_size if hasattr(cfg, "group_size") else None
    module = importlib.import_module(get_algorithm(name).module)
    if not hasattr(module, "update"):  # SB3: its own loop, timed whole
        wall, cpu = time.perf_counter(), time.process_time()
        _, history = train(cfg, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        steps = sum(h.get("agent_steps", 0) for h in history)
    else:
        # The updates' own time (collection + update), without the one-off setup (loading
        # the questions, building the env): `Trainer.step`, as `Trainer.run` calls it.
        from algorithms.trainer import Trainer

        size = module.critic_state_size(cfg) if hasattr(module, "critic_state_size") else None
        trainer = Trainer(name, cfg, module.update, progress=False, critic_state_size=size)
        steps, wall, cpu = 0, 0.0, 0.0
        for u in range(cfg.updates):
            w, c = time.perf_counter(), time.process_time()
            steps += trainer.step(u)["agent_steps"]
            wall, cpu = wall + time.perf_counter() - w, cpu + time.process_time() - c
    return {"row": f"{name} ({shape})", "method": name, "shape": shape, "batch": batch,
            "agent_steps": steps, "seconds": cpu, "wall_seconds": wall,
            "agent_steps_per_s": steps / cpu, "wall_agent_steps_per_s": steps / wall}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="per env-stepping row (in 3 parts)"
    )
    parser.add_argument("--profile", default=train_env().profile)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 4096])
    parser.add_argument("--methods", nargs="+", default=[*GROUP_METHODS, "ppo", "sb3_ppo"])
    parser.add_argument("--shapes", nargs="+", default=["quick", "default"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env = dataclasses.replace(train_env(), profile=args.profile)
    env_only: dict[int, float] = {}
    rows: list[dict[str, Any]] = []
    for b in args.batch_sizes:
        env_only[b], rate, alone = stepping_rates(env, b, args.seconds)
        rows.append({"row": "env only", "batch": b, "agent_steps_per_s": env_only[b]})
        rows.append({"row": "env + inference", "batch": b, "agent_steps_per_s": rate})
        rows.append({"row": "inference only", "batch": b, "agent_steps_per_s": alone})
    for shape in args.shapes:
        for name in args.methods:
            if name == "sb3_ppo" and shape != "quick":
                continue  # SB3 has no `deliberate train` default shape of its own here
            rows.append(train_rate(name, shape, args.updates, env))
    for r in rows:
        b = r.get("batch")
        if b is not None and b not in env_only:  # a batch size not measured alone
            env_only[b] = stepping_rates(env, b, args.seconds)[0]
        r["env_only_ratio"] = r["agent_steps_per_s"] / env_only[b] if b else None

    lines = ["| row | B | agent-steps/s | / env-only at B |", "|---|---:|---:|---:|"]
    for r in rows:
        ratio = "" if r["env_only_ratio"] is None else f"{r['env_only_ratio']:.1%}"
        lines.append(
            f"| {r['row']} | {r['batch'] or ''} | {r['agent_steps_per_s']:,.0f} | {ratio} |"
        )
    targets = []
    for r in rows:
        if r["row"] == "env + inference" and r["batch"] == 4096:
            ok = r["env_only_ratio"] >= TARGET_INFERENCE_RATIO
            targets.append(target("env + inference >= 40% of env-only at B = 4096",
                                  r["env_only_ratio"], f"{r['env_only_ratio']:.1%}", ok))  # fmt: skip
        elif r.get("method") in GROUP_METHODS:
            ok = (
                r["agent_steps_per_s"] >= TARGET_GROUP_RATE
                and r["env_only_ratio"] >= TARGET_GROUP_RATIO
            )
            text = f"{r['agent_steps_per_s']:,.0f} ({r['env_only_ratio']:.1%})"
            targets.append(
                target(f"{r['row']} >= 40,000/s and >= 10%", r["agent_steps_per_s"], text, ok)
            )
        elif r.get("method") == "ppo":
            ok = r["agent_steps_per_s"] >= TARGET_PPO_RATE
            text = f"{r['agent_steps_per_s']:,.0f}"
            targets.append(target(f"{r['row']} >= 25,000/s", r["agent_steps_per_s"], text, ok))
    markdown = "\n".join(lines + targets_table(targets))
    config = {"updates": args.updates, "seconds": args.seconds, "profile": args.profile,
              "torch_threads": 1}  # fmt: skip
    report = {"config": config, "rows": rows, "targets": targets}
    write_report(report, args.out, markdown)
    return report


if __name__ == "__main__":
    main()
