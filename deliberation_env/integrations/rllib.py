"""RLlib: `RLlibMaskedEnv`, the parallel env with RLlib's action-masking observation keys.

RLlib's action-masking module (``ray.rllib.examples.rl_modules.classes.action_masking_rlm.
ActionMaskingTorchRLModule``) reads ``obs["observations"]`` and ``obs["action_mask"]``;
PettingZoo's convention (and ``obs_mode="dict"``) is ``obs["observation"]``. This wrapper
renames the key, nothing else (the mask stays int8, which PettingZoo's samplers want and
the module's ``log(mask)`` takes); wrap it in RLlib's
``ParallelPettingZooEnv``. It imports nothing from Ray, so it is picklable on its own.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from pettingzoo.utils.wrappers import BaseParallelWrapper

import deliberation_env


class RLlibMaskedEnv(BaseParallelWrapper):
    """``parallel_env(obs_mode="dict", **kwargs)`` with observations
    ``{"observations": float32[D], "action_mask": int8[3]}`` (RLlib's key names).

    Args:
        env: a `DeliberationEnv` built with ``obs_mode="dict"``; None builds one from
            `kwargs` (any `parallel_env` argument).
    """

    def __init__(self, env: Any = None, **kwargs: Any) -> None:
        if env is None:
            env = deliberation_env.parallel_env(obs_mode="dict", **kwargs)
        elif kwargs:
            raise TypeError("pass either an env or parallel_env arguments, not both")
        if getattr(env, "obs_mode", None) != "dict":
            raise ValueError("RLlibMaskedEnv needs an env built with obs_mode='dict'")
        super().__init__(env)
        inner = env.observation_space(env.possible_agents[0])
        self._space = spaces.Dict(
            {"observations": inner["observation"], "action_mask": inner["action_mask"]}
        )

    def observation_space(self, agent: str) -> spaces.Space:
        self.env.observation_space(agent)  # refuses an unknown agent by name
        return self._space

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        return self._rename(obs), infos

    def step(self, actions: dict):
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        return self._rename(obs), rewards, terminations, truncations, infos

    def render(self, mode: str | None = None):  # RLlib calls render(self.render_mode)
        return self.env.render(mode)

    @staticmethod
    def _rename(obs: dict) -> dict:
        return {
            agent: {"observations": o["observation"], "action_mask": o["action_mask"]}
            for agent, o in obs.items()
        }
