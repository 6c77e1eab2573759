"""Tianshou: `TianshouDeliberationEnv`, a `tianshou.env.PettingZooEnv` that credits every
agent its own rewards.

Tianshou's `PettingZooEnv` steps the AEC env one agent at a time and, after each step,
returns the rewards of that instant, ``env.rewards``; its multi-agent policy manager gives
each agent the reward entry of the steps where *it* acted. Through `parallel_to_aec` a
round's rewards exist only at the step of its last agent, so every other agent is
credited 0: over 200 random episodes the true returns ``[23, 20, 31]`` were credited
``[0, 0, 31]``.

This wrapper credits what PettingZoo's own AEC loop hands an agent through ``last()``:
the reward it gathered since its previous action, returned in its own entry at its
next turn; and after the last round every agent gets one more turn (its action is
ignored, PERSIST is the only allowed one) that delivers its final round's reward, as
AEC's dead-agent steps do. Each agent's credited rewards then sum to its true return,
one turn late (the reward of round t arrives with the agent's turn of round t+1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tianshou.env import PettingZooEnv

import deliberation_env
from deliberation_env.actions import NUM_ACTIONS


class TianshouDeliberationEnv(PettingZooEnv):
    """``deliberation_env.env(obs_mode="dict", **kwargs)`` for Tianshou, with per-agent
    credit (module docstring). Observations are Tianshou's ``{"agent_id", "obs",
    "mask"}``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(deliberation_env.env(obs_mode="dict", **kwargs))

    def reset(self, *args: Any, **kwargs: Any) -> tuple[dict, dict]:
        self.env.reset(*args, **kwargs)
        self._owed = dict.fromkeys(self.agents, 0.0)  # reward since each agent's last turn
        self._settling: list[str] = []  # agents still to collect their final reward
        return self._observe()

    def step(self, action: Any) -> tuple[dict, list[float], bool, bool, dict]:  # type: ignore[override]
        rewards = [0.0] * len(self.agents)
        if self._settling:  # the episode is over: one last turn per agent, action ignored
            agent = self._settling.pop(0)
            rewards[self.agent_idx[agent]] = self._owed.pop(agent)
            done = not self._settling
            obs, info = self._observation(self._settling[0] if not done else agent, final=True)
            return obs, rewards, done, False, info
        agent = self.env.agent_selection
        rewards[self.agent_idx[agent]] = self._owed[agent]  # what last() gave it this turn
        self._owed[agent] = 0.0
        self.env.step(action)
        for other, reward in self.env.rewards.items():
            self._owed[other] += float(reward)
        if not self.env.agents or all(self.env.terminations.values()):
            self._settling = list(self.agents)
            obs, info = self._observation(self._settling[0], final=True)
            return obs, rewards, False, False, info
        obs, info = self._observe()
        return obs, rewards, False, False, info

    def _observe(self) -> tuple[dict, dict]:
        return self._observation(self.env.agent_selection, final=False)

    def _observation(self, agent: str, final: bool) -> tuple[dict, dict]:
        raw = self.env.observe(agent)
        if final:
            mask = [True] + [False] * (NUM_ACTIONS - 1)
        else:
            mask = [bool(m) for m in np.asarray(raw["action_mask"])]
        info = dict(self.env.infos.get(agent, {}))
        return {"agent_id": agent, "obs": raw["observation"], "mask": mask}, info
