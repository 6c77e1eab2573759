"""The `deliberate` command: `deliberate demo` (and, as the algorithms land, train/eval/compare)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

import deliberation_env
from deliberation_env import Action, VectorDeliberationEnv


def _demo(args: argparse.Namespace) -> int:
    env = deliberation_env.parallel_env(
        num_agents=args.num_agents,
        max_rounds=args.max_rounds,
        profile=args.profile,
        tasks=args.tasks,
        render_mode="ansi",
    )
    rng = np.random.default_rng(args.seed)
    obs, infos = env.reset(seed=args.seed)
    while env.agents:
        actions = {a: int(rng.choice(np.flatnonzero(infos[a]["action_mask"]))) for a in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)
    print("One episode with random meta-actions:\n")
    print(env.render())

    print(
        f"\nFixed protocols over {args.episodes} questions ({args.profile}, N={args.num_agents}, "
        f"T={args.max_rounds}):\n"
    )
    print("| protocol | team accuracy | tokens / question |")
    print("|---|---|---|")
    for name, action in (
        ("always PERSIST (= self-consistency vote)", Action.PERSIST),
        ("always REFINE (= LLM debate)", Action.REFINE),
        ("random", None),
    ):
        vec = VectorDeliberationEnv(
            args.episodes,
            autoreset=False,
            num_agents=args.num_agents,
            max_rounds=args.max_rounds,
            profile=args.profile,
            tasks=args.tasks,
        )
        vec.reset(seed=args.seed)
        shape = (args.episodes, args.num_agents)
        for _ in range(args.max_rounds):
            acts = rng.integers(0, 3, shape) if action is None else np.full(shape, int(action))
            _, _, done, _, info = vec.step(acts)
        print(
            f"| {name} | {info['team_correct'].mean():.3f} | {info['episode_tokens'].mean():.0f} |"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deliberate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="print one deliberation transcript and a small comparison")
    demo.add_argument("--profile", default=deliberation_env.EnvConfig.profile)
    demo.add_argument("--tasks", default="arithmetic")
    demo.add_argument("--num-agents", type=int, default=3)
    demo.add_argument("--max-rounds", type=int, default=3)
    demo.add_argument("--episodes", type=int, default=5000)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    code = args.func(args)
    print(f"\n(done in {time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
