"""
# Deliberation

| | |
|---|---|
| Import | `from deliberation_env import parallel_env` (AEC: `deliberation_env.env`) |
| Registry id | `deliberation/Deliberation-v0` (`pettingzoo.make("parallel", ...)`, `"aec"`) |
| Actions | Discrete(3) |
| Parallel API | Yes |
| Agents | `agents = ['agent_0', 'agent_1', 'agent_2']` (N = `num_agents`) |
| Observation shape | (81,) with `max_peers=4` (does not depend on N) |
| Observation values | [0, 1] |
| State shape | (80,) with `max_peers=4` |

## Description

The Meta-Policy Deliberation Framework (MPDF; Yang & Thomason, "Learning to Deliberate",
arXiv 2509.03817). N LLM agents answer the same question. At reset each produces an
initial solution (one batched backend call). Then, for `max_rounds` rounds, every agent
simultaneously chooses a meta-cognitive action. After the last round the team answer is
the plurality of the agents' answers. The policy acting here is a *meta-policy*: it sees
a low-dimensional state (agreement, confidences, reasoning profile), never the text, and
the LLM behind the agents stays frozen. The default backend is a calibrated simulator
(`agents.simulated`), so an episode costs microseconds; real LLMs plug in through
`deliberation_env.protocol.Backend`.

## Actions

| Num | Action | Effect |
|---|---|---|
| 0 | PERSIST | keep my solution; no LLM call, no tokens |
| 1 | REFINE | the LLM revises my solution seeing my peers' (all REFINEs of a round: one batched call) |
| 2 | CONCEDE | copy a peer's solution (answer, profile, confidences); `concede_rule` picks the peer |

Actions apply simultaneously to the state before the round. CONCEDE under the default
`concede_rule="plurality"` copies the most confident holder of the answer most peers
hold; if that answer is already mine (e.g. all peers agree with me) CONCEDE equals
PERSIST. The action mask (in `infos[agent]["action_mask"]`, and in the observation with
`obs_mode="dict"`) forbids CONCEDE when no peer has a parseable answer; a masked
CONCEDE played anyway is a PERSIST.

## Observation

A flat `Box(0, 1, (size,), float32)`: the agent's own block, summary statistics of its
peers, then one block per peer slot (`max_peers`, padded with zeros and a `present`
flag). The full table is `deliberation_env.observation` (`ObservationLayout(max_peers)
.names()` lists every entry). Own block: support (share of agents holding my answer),
distinct answers / N, whether I hold the team answer, round / T, my verbalised, judge and
log-prob confidences, reasoning steps and operators, answer parsed, answer changed last
round, last action. Peer blocks: present, agrees with me, in the plurality, and the same
per-agent features. `obs_mode="dict"` gives `{"observation": ..., "action_mask": int8[3]}`.

## Rewards

Per agent and round, `reward="consensus"` (default, the paper's shaping):

    r_i = w_local * (c_i_after - c_i_before) + w_global * (C(all) - C(all \\ i))

`c_i`: agent i's answer is correct; `C(S)`: the plurality answer of the agents in S is
correct (after the round; ties broken by `tie_break`). `reward="terminal"` gives every
agent the team's correctness at the last step and 0 before. `token_cost` (per 1k
tokens the agent spent this round) is subtracted in both. The terms are in
`infos[agent]["reward_terms"]`.

## Episode end

All agents terminate together after `max_rounds` rounds (a natural end, no truncation),
or as soon as every agent holds the same parsed answer when `stop_on_consensus=True`.
The final infos add `team_answer`, `team_correct`, `total_tokens` (the initial answers
included) and the `actions` histogram of the episode. Stepping a finished episode raises
`RuntimeError`: call `reset()`.

## Arguments

`num_agents=3`, `max_rounds=3`, `profile="llama3.1-8b/gsm8k"` (simulated backend profile),
`backend="simulated"` (or `"hf"`, `"openai"`, or an instance), `tasks="arithmetic"` (a
`deliberation_env.tasks.load_tasks` spec or a list of `Task`), `concede_rule="plurality"`,
`tie_break="confidence"`, `reward="consensus"`, `w_local=1.0`, `w_global=1.0`,
`token_cost=0.0`, `stop_on_consensus=False`, `obs_mode="flat"`, `max_peers=4`,
`render_mode=None` (`"ansi"` returns the transcript, `"human"` prints it), and any
backend arguments (`model=`, `base_url=`, `cache=`, ...). See `EnvConfig` for each.

`reset(seed, options)`: all randomness of an episode comes from `seed` (task choice,
backend sampling seeds, tie-breaks). `options={"task_index": i}` fixes the question.

## Version history

* v0: initial release.

## Example

```python
import deliberation_env
env = deliberation_env.parallel_env(render_mode="ansi")
obs, infos = env.reset(seed=0)
while env.agents:
    actions = {a: env.action_space(a).sample(infos[a]["action_mask"]) for a in env.agents}
    obs, rewards, terminations, truncations, infos = env.step(actions)
print(env.render())
```
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from deliberation_env.core import (
    NUM_ACTIONS,
    Action,
    DeliberationCore,
    EnvConfig,
    check_seed,
    episode_keys,
    validate_actions,
)
from deliberation_env.observation import ObservationLayout
from deliberation_env.rng import seed_key

OBS_MODES = ("flat", "dict")
_ACTION_NAMES = [a.name.lower() for a in Action]


class DeliberationEnv(ParallelEnv):
    """MPDF deliberation as a PettingZoo `ParallelEnv` (the module docstring is the spec)."""

    metadata = {
        "name": "deliberation_v0",
        "render_modes": ["ansi", "human"],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        num_agents: int = 3,
        max_rounds: int = 3,
        profile: str = EnvConfig.profile,
        backend: Any = "simulated",
        tasks: Any = "arithmetic",
        concede_rule: str = "plurality",
        tie_break: str = "confidence",
        reward: str = "consensus",
        w_local: float = 1.0,
        w_global: float = 1.0,
        token_cost: float = 0.0,
        stop_on_consensus: bool = False,
        obs_mode: str = "flat",
        max_peers: int = 4,
        render_mode: str | None = None,
        **backend_kwargs: Any,
    ) -> None:
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode={obs_mode!r} is not one of {OBS_MODES}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r} is not one of {self.metadata['render_modes']} or None"
            )
        self.config = EnvConfig(
            num_agents=num_agents,
            max_rounds=max_rounds,
            backend=backend,
            profile=profile,
            tasks=tasks if isinstance(tasks, str) else tuple(tasks),
            concede_rule=concede_rule,
            tie_break=tie_break,
            reward=reward,
            w_local=w_local,
            w_global=w_global,
            token_cost=token_cost,
            stop_on_consensus=stop_on_consensus,
            max_peers=max_peers,
            backend_kwargs=backend_kwargs,
        )
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.layout = ObservationLayout(max_peers)
        self.possible_agents = [f"agent_{i}" for i in range(num_agents)]
        self.agents: list[str] = []
        self.core = DeliberationCore(self.config, num_envs=1)
        self.core.ensure_backend()  # a bad profile, task source or backend fails here
        self.state_space = spaces.Box(0.0, 1.0, (self.layout.state_size,), np.float32)
        self._base_key: np.ndarray | None = None
        self._episode = -1
        self._obs: np.ndarray | None = None
        self._transcript: list[str] = []

    # ------------------------------------------------------------------ spaces
    @functools.cache  # noqa: B019 - PettingZoo's documented idiom
    def observation_space(self, agent: str) -> spaces.Space:
        box = spaces.Box(0.0, 1.0, (self.layout.size,), np.float32)
        if self.obs_mode == "flat":
            return box
        return spaces.Dict(
            {"observation": box, "action_mask": spaces.Box(0, 1, (NUM_ACTIONS,), np.int8)}
        )

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Discrete(NUM_ACTIONS)

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._base_key = seed_key(np.array([check_seed(seed)], np.uint64))
            self._episode = 0
        elif self._base_key is None:
            self._base_key = seed_key(np.random.SeedSequence().generate_state(1, np.uint64))
            self._episode = 0
        else:
            self._episode += 1
        key, init = episode_keys(self._base_key, np.array([self._episode]), np.array([0]))
        task_index = (options or {}).get("task_index")
        self.core.reset(key, init, task_index=task_index)
        self.agents = self.possible_agents[:]
        obs = self._observe()
        infos = self._infos(tokens=self.core.round_tokens[0])
        if self.render_mode is not None:
            self._transcript = self._header() + [self._round_line(0, None, infos)]
            self._auto_render(self._transcript)
        return obs, infos

    def step(self, actions: dict):
        if not self.agents:
            if self._obs is None:
                raise RuntimeError("step() was called before reset(): call reset() first")
            raise RuntimeError(
                "the episode is over (all agents terminated): call reset() to start a new one"
            )
        arr = validate_actions(actions, self.agents)
        result = self.core.step(arr[None, :])
        obs = self._observe()
        done = bool(result.done[0])
        rewards = {a: float(result.rewards[0, i]) for i, a in enumerate(self.agents)}
        terminations = dict.fromkeys(self.agents, done)
        truncations = dict.fromkeys(self.agents, False)
        infos = self._infos(tokens=result.tokens[0])
        for i, agent in enumerate(self.agents):
            infos[agent]["reward_terms"] = {k: float(v[0, i]) for k, v in result.terms.items()}
        new_lines = []
        if self.render_mode is not None:
            new_lines.append(self._round_line(int(self.core.state.round[0]), arr, infos))
        if done:
            final = self._final_info(bool(result.team_correct[0]))
            for agent in self.agents:
                infos[agent].update(final)
            if self.render_mode is not None:
                new_lines.append(self._final_line(final))
            self.agents = []
        if new_lines:
            self._transcript += new_lines
            self._auto_render(new_lines)
        return obs, rewards, terminations, truncations, infos

    def render(self) -> str | None:
        if self.render_mode is None:
            gymnasium.logger.warn(
                "render() called without a render_mode; pass render_mode='ansi' or 'human'"
            )
            return None
        text = "\n".join(self._transcript)
        if self.render_mode == "ansi":
            return text
        print(text)
        return None

    def state(self) -> np.ndarray:
        if self._obs is None:
            raise RuntimeError("state() was called before reset(): call reset() first")
        return self.core.global_state(self._obs)[0]

    def close(self) -> None:
        close = getattr(self.core.backend, "close", None)
        if callable(close):
            close()

    # ------------------------------------------------------------------ edge helpers
    def _observe(self) -> dict[str, Any]:
        self._obs = self.core.observations()
        flat = self._obs[0]
        if self.obs_mode == "flat":
            return {a: flat[i] for i, a in enumerate(self.possible_agents)}
        masks = self.core.action_masks()[0]
        return {
            a: {"observation": flat[i], "action_mask": masks[i]}
            for i, a in enumerate(self.possible_agents)
        }

    def _infos(self, tokens: np.ndarray) -> dict[str, dict[str, Any]]:
        s, core = self.core.state, self.core
        masks = core.action_masks()[0]
        return {
            a: {
                "action_mask": masks[i],
                "answer": core.answer_text(0, i),
                "correct": bool(s.correct[0, i]),
                "self_confidence": float(s.self_confidence[0, i]),
                "tokens": int(tokens[i]),
            }
            for i, a in enumerate(self.possible_agents)
        }

    def _final_info(self, team_correct: bool) -> dict[str, Any]:
        s, core = self.core.state, self.core
        winner = int(core.team_winner()[0])
        return {
            "team_answer": core.answer_text(0, winner) if winner >= 0 else None,
            "team_correct": team_correct,
            "total_tokens": int(s.tokens[0]),
            "actions": dict(zip(_ACTION_NAMES, s.action_counts[0].tolist())),
        }

    def _header(self) -> list[str]:
        task = self.core.tasks[int(self.core.state.task_index[0])]
        return [f"Question [{task.id}]: {task.question}"]

    def _round_line(self, round_: int, actions: np.ndarray | None, infos: dict) -> str:
        parts = []
        for i, agent in enumerate(self.possible_agents):
            info = infos[agent]
            act = "" if actions is None else f"{Action(int(actions[i])).name:<8}-> "
            parts.append(f"{agent}: {act}{info['answer']} (conf {info['self_confidence']:.2f})")
        label = "Initial" if actions is None else f"Round {round_}"
        return f"{label:<9}| " + " | ".join(parts)

    def _final_line(self, final: dict) -> str:
        gold = self.core.tasks[int(self.core.state.task_index[0])].answer
        verdict = "correct" if final["team_correct"] else "wrong"
        return (
            f"Team answer: {final['team_answer']} ({verdict}; gold {gold}); "
            f"tokens {final['total_tokens']}; actions {final['actions']}"
        )

    def _auto_render(self, lines: list[str]) -> None:
        if self.render_mode == "human":
            print("\n".join(lines))
