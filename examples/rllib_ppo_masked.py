"""RLlib PPO on the deliberation env: one policy shared by every agent, and RLlib's own
action-masking module (the mask comes through `RLlibMaskedEnv`, which renames PettingZoo's
``observation`` key to RLlib's ``observations``).

    .venv-rllib/bin/python examples/rllib_ppo_masked.py --iterations 3

Needs ``ray[rllib]`` (pins gymnasium 1.2.2; `.ci/integrations` builds ``.venv-rllib``).
Prints the mean episode return of each iteration.
"""

from __future__ import annotations

import argparse

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv
from ray.rllib.examples.rl_modules.classes.action_masking_rlm import (
    ActionMaskingTorchRLModule,
)
from ray.tune.registry import register_env

from deliberation_env.integrations.rllib import RLlibMaskedEnv


def make_env(env_config: dict) -> ParallelPettingZooEnv:
    return ParallelPettingZooEnv(RLlibMaskedEnv(**env_config))


def build(env_config: dict | None = None, batch_size: int = 240):
    """A PPO algorithm: every agent mapped to the one ``"shared"`` masked policy."""
    register_env("deliberation", make_env)
    config = (
        PPOConfig()
        .environment("deliberation", env_config=env_config or {"profile": "toy"})
        .env_runners(num_env_runners=0, rollout_fragment_length="auto")
        .multi_agent(
            policies={"shared"},
            policy_mapping_fn=lambda agent_id, episode, **kwargs: "shared",
        )
        .rl_module(
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={
                    "shared": RLModuleSpec(
                        module_class=ActionMaskingTorchRLModule,
                        model_config={"fcnet_hiddens": [32, 32]},
                    )
                }
            )
        )
        .training(train_batch_size_per_learner=batch_size, minibatch_size=60, num_epochs=2)
        .debugging(seed=0)
    )
    return config.build_algo()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=3)
    args = p.parse_args()
    algo = build()
    for i in range(args.iterations):
        result = algo.train()
        ret = result["env_runners"].get("episode_return_mean")
        print(f"iteration {i}: episode_return_mean {ret}")
    algo.stop()


if __name__ == "__main__":
    main()
