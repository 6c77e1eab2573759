"""`VectorDeliberationEnv`: B deliberation envs stepped as arrays, for trainers.

Arrays in, arrays out, no per-agent dicts. Env `b` of a vector env reset with
``seed=s`` follows exactly the trajectory of a `DeliberationEnv` reset with ``seed=s + b``
and given the same actions (the Gymnasium vector convention; tested). Episodes reset
automatically in the same step that ends them (Gymnasium's ``SAME_STEP`` autoreset): the
returned observation is the first of the next episode and the last one is in
``infos["final_obs"]``. ``options={"group_size": G}`` makes consecutive blocks of G envs
draw the same task and the same initial solutions in every episode, and differ
afterwards: the rollout groups of SoftRankPO and GRPO.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from deliberation_env.core import (
    NUM_ACTIONS,
    DeliberationCore,
    EnvConfig,
    check_action_array,
    episode_keys,
)
from deliberation_env.observation import ObservationLayout
from deliberation_env.rng import seed_key


class VectorDeliberationEnv:
    """`num_envs` deliberation episodes advanced together.

    Args:
        num_envs: B, the number of envs.
        autoreset: start the next episode of an env in the step that ends it. Without
            it, finished envs stay frozen (actions ignored, reward 0, ``terminated`` stays
            True, ``infos["active"]`` False) until ``reset()``; stepping once all have
            finished raises.
        **kwargs: `EnvConfig` fields (``num_agents``, ``max_rounds``, ``profile``, ...).

    ``step(actions[B, N])`` returns ``(obs[B, N, D], rewards[B, N], terminated[B],
    truncated[B], infos)`` where infos holds arrays: ``action_mask [B, N, 3]``, ``tokens
    [B, N]``, ``correct [B, N]``, ``reward_terms`` (name -> [B, N]), ``task_index [B]`` and,
    valid where ``terminated``: ``team_correct [B]``, ``episode_tokens [B]``,
    ``episode_actions [B, 3]``, ``final_obs [B, N, D]``.
    """

    metadata = {"name": "deliberation_vector_v0", "autoreset_mode": "SAME_STEP"}

    def __init__(self, num_envs: int, autoreset: bool = True, **kwargs: Any) -> None:
        backend_kwargs = dict(kwargs.pop("backend_kwargs", {}))
        known = set(EnvConfig.__dataclass_fields__)
        backend_kwargs.update({k: kwargs.pop(k) for k in list(kwargs) if k not in known})
        if "tasks" in kwargs and not isinstance(kwargs["tasks"], str):
            kwargs["tasks"] = tuple(kwargs["tasks"])
        self.config = EnvConfig(**kwargs, backend_kwargs=backend_kwargs)
        self.num_envs = num_envs
        self.num_agents = self.config.num_agents
        self.autoreset = autoreset
        self.core = DeliberationCore(self.config, num_envs)
        self.core.ensure_backend()
        self.layout = ObservationLayout(self.config.max_peers)
        self.single_observation_space = spaces.Box(0.0, 1.0, (self.layout.size,), np.float32)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.action_space = spaces.MultiDiscrete(np.full((num_envs, self.num_agents), NUM_ACTIONS))
        self.state_space = spaces.Box(0.0, 1.0, (self.layout.state_size,), np.float32)
        self._base: np.ndarray | None = None
        self._episode = np.zeros(num_envs, np.int64)
        self._leader = np.arange(num_envs)
        self._done = np.zeros(num_envs, bool)
        self._obs: np.ndarray | None = None

    def reset(
        self, seed: int | list[int] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode in every env. ``seed`` int -> env b gets ``seed + b``."""
        options = options or {}
        B = self.num_envs
        if seed is None:
            seeds = np.random.SeedSequence().generate_state(B, np.uint64)
        elif np.ndim(seed) == 0:
            seeds = np.arange(B, dtype=np.uint64) + np.uint64(seed)
        else:
            seeds = np.asarray(seed, np.uint64)
            if seeds.shape != (B,):
                raise ValueError(
                    f"seed must be an int or {B} ints (one per env), got shape {seeds.shape}"
                )
        group = int(options.get("group_size", 1))
        if group < 1 or B % group:
            raise ValueError(f"group_size={group} must divide num_envs={B}")
        self._base = seed_key(seeds)
        self._leader = (np.arange(B) // group) * group
        self._episode[:] = 0
        key, init = episode_keys(self._base, self._episode, self._leader)
        self.core.reset(key, init, task_index=options.get("task_index"))
        self._done[:] = False
        self._obs = self.core.observations()
        infos = {
            "action_mask": self.core.action_masks(),
            "task_index": self.core.state.task_index.copy(),
            "tokens": self.core.round_tokens.copy(),
            "correct": self.core.state.correct.copy(),
        }
        return self._obs, infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._obs is None:
            raise RuntimeError("step() was called before reset(): call reset() first")
        if self._done.all():
            raise RuntimeError("every episode has ended and autoreset=False: call reset()")
        arr = check_action_array(actions, (self.num_envs, self.num_agents))
        s = self.core.state
        # Without autoreset, finished envs stay frozen (zero reward) until reset().
        active = ~self._done if self._done.any() else None
        result = self.core.step(arr, active)
        done = result.done
        obs = self.core.observations()
        infos: dict[str, Any] = {
            "tokens": result.tokens,
            "correct": s.correct.copy(),
            "reward_terms": result.terms,
            "team_correct": result.team_correct,
            "episode_tokens": s.tokens.copy(),
            "episode_actions": s.action_counts.copy(),
        }
        if done.any():
            infos["final_obs"] = obs
            if self.autoreset:
                envs = np.nonzero(done)[0]
                self._episode[envs] += 1
                key, init = episode_keys(self._base, self._episode, self._leader)
                self.core.reset(key[envs], init[envs], envs=envs)
                obs = self.core.observations()
            else:
                self._done = done.copy()
        infos["active"] = ~self._done
        infos["action_mask"] = self.core.action_masks()
        infos["task_index"] = s.task_index.copy()
        self._obs = obs
        truncated = np.zeros(self.num_envs, bool)
        return obs, result.rewards.astype(np.float32), done, truncated, infos

    @property
    def active(self) -> np.ndarray:
        """``[B]`` bool: envs whose episode is still running (always all with autoreset)."""
        return ~self._done

    def state(self) -> np.ndarray:
        """Global state ``[B, state_size]`` for centralised critics."""
        if self._obs is None:
            raise RuntimeError("state() was called before reset(): call reset() first")
        return self.core.global_state(self._obs)

    def close(self) -> None:
        close = getattr(self.core.backend, "close", None)
        if callable(close):
            close()
