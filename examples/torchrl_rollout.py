"""TorchRL: the env through `PettingZooWrapper` with ``info_mode="numeric"``: the spec check
and a random rollout (masked actions), as a tensordict.

    .venv/bin/python examples/torchrl_rollout.py --steps 30
"""

from __future__ import annotations

import argparse

from torchrl.envs.utils import check_env_specs

from deliberation_env.integrations.torchrl import torchrl_env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    env = torchrl_env(seed=0, profile="toy")
    check_env_specs(env)
    td = env.rollout(args.steps, break_when_any_done=False)
    reward = td["next", "agent", "reward"]
    episodes = int(td["next", "done"].sum())
    print(td)
    print(
        f"{args.steps} rounds, {episodes} episodes, mean reward per agent-step {reward.mean():.3f}"
    )


if __name__ == "__main__":
    main()
