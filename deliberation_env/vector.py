"""`VectorDeliberationEnv`: B deliberation envs stepped as arrays, for trainers.

Arrays in, arrays out, no per-agent dicts. Env `b` of a vector env reset with
``seed=s`` follows exactly the trajectory of a `DeliberationEnv` reset with ``seed=s + b``
and given the same actions (the Gymnasium vector convention; tested). Episodes reset
automatically in the same step that ends them (Gymnasium's ``SAME_STEP`` autoreset): the
returned observation is the first of the next episode and the last one is in
``infos["final_obs"]``. ``options={"group_size": G}`` makes consecutive blocks of G envs
draw the same task and the same initial solutions in every episode, and differ
afterwards: the rollout groups of SoftRankPO and GRPO. ``set_topology(edges)`` sets each
env's communication graph between steps (``options={"topology": spec}`` at reset;
``docs/topology.md``).

It is a `gymnasium.vector.VectorEnv` whose sub-environments are multi-agent: arrays carry
an env axis and an agent axis, ``[B, N, ...]``, ``single_observation_space`` and
``single_action_space`` are one *agent*'s (as in PufferLib), and ``observation_space`` /
``action_space`` batch them over ``(B, N)``. Rewards are ``[B, N]``; terminations and
truncations ``[B]`` (the agents of an env end together).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import logger, spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from deliberation_env import topology
from deliberation_env.actions import NUM_ACTIONS, check_action_array
from deliberation_env.config import EnvConfig, check_reset_options
from deliberation_env.core import DeliberationCore, derive_keys
from deliberation_env.protocol import Solution
from deliberation_env.rng import seed_key
from deliberation_env.state import SOLUTION_FIELDS

SOLUTION_ARRAYS = tuple(f for f in SOLUTION_FIELDS if f not in ("length", "records"))
"""The per-agent arrays `VectorDeliberationEnv.solution_arrays` returns: the solution fields
of the state, less the token length and the text records (`solutions` gives those)."""


class VectorDeliberationEnv(VectorEnv):
    """`num_envs` deliberation episodes advanced together (a `gymnasium.vector.VectorEnv`).

    Args:
        num_envs: B, the number of envs.
        config: the env (`EnvConfig`, or a mapping of its fields); `overrides` are applied
            on top through `EnvConfig.build` (fields by name, anything else a backend
            argument), as `DeliberationEnv` does.
        autoreset: start the next episode of an env in the step that ends it. Without
            it, finished envs stay frozen (actions ignored, reward 0, ``terminated`` stays
            True, ``infos["active"]`` False, their infos keep the episode's final values)
            until ``reset()``; stepping once all have finished raises. A view option, not
            part of the `EnvConfig`. ``metadata["autoreset_mode"]`` says which
            (`AutoresetMode.SAME_STEP` or `AutoresetMode.DISABLED`).
        render_mode: ``"ansi"``: `render` returns one line per env (its question's id,
            round and each agent's answer and confidence), or None. A view option.

    ``reset()`` returns ``(obs[B, N, D], infos)`` with infos ``action_mask [B, N, 3]``,
    ``task_index [B]``, ``tokens [B, N]`` (of the initial answers), ``correct [B, N]`` and
    ``team_correct [B]`` (the vote of the initial answers).

    ``step(actions[B, N])`` returns ``(obs[B, N, D], rewards[B, N], terminated[B],
    truncated[B], infos)``. Infos, all arrays:

    | key | shape | meaning |
    |---|---|---|
    | ``action_mask`` | [B, N, 3] | allowed actions for the next step |
    | ``task_index`` | [B] | the task of the current episode (the next one after an autoreset) |
    | ``active`` | [B] | episode still running (always True with autoreset) |
    | ``tokens`` | [B, N] | tokens each agent spent this step |
    | ``reward_terms`` | name -> [B, N] | the reward's components |
    | ``changed`` | [B, N] | the agent's answer changed this step |
    | ``correct`` | [B, N] | each agent's answer is correct after this step |
    | ``team_correct`` | [B] | the team answer is correct after this step |
    | ``consensus`` | [B] | every agent holds the same parsed answer after this step |
    | ``rounds`` | [B] | rounds played in the episode |
    | ``episode_tokens`` | [B] | tokens spent in the episode (initial answers included) |
    | ``episode_actions`` | [B, 3] | the episode's action counts (PERSIST, REFINE, CONCEDE) |
    | ``final_obs`` | [B, N, D] | last observation, only when an episode ended |

    Every key from ``changed`` down describes the episode that played the step, read
    before an autoreset starts the next one: where ``terminated``, they are the ended
    episode's final values (its agent and team correctness, consensus, length and cost).
    """

    metadata = {
        "name": "deliberation_vector_v0",
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": ["ansi"],
    }

    def __init__(
        self,
        num_envs: int,
        config: EnvConfig | Mapping[str, Any] | None = None,
        *,
        autoreset: bool = True,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r} is not one of ['ansi'] or None")
        self.config = EnvConfig.build(config, **overrides)
        self.num_envs = num_envs
        self.num_agents = self.config.num_agents
        self.autoreset = autoreset
        self.render_mode = render_mode
        mode = AutoresetMode.SAME_STEP if autoreset else AutoresetMode.DISABLED
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.core = DeliberationCore(self.config, num_envs)
        self.core.ensure_backend()
        self.layout = self.core.layout  # max_peers and the groups the backend fills
        self.single_observation_space = spaces.Box(0.0, 1.0, (self.layout.size,), np.float32)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = spaces.Box(
            0.0, 1.0, (num_envs, self.num_agents, self.layout.size), np.float32
        )
        self.action_space = spaces.MultiDiscrete(np.full((num_envs, self.num_agents), NUM_ACTIONS))
        self.state_space = spaces.Box(0.0, 1.0, (self.layout.state_size,), np.float32)
        self._base = np.zeros(num_envs, np.uint64)
        self._episode = np.zeros(num_envs, np.int64)
        self._leader = np.arange(num_envs)
        self._done = np.zeros(num_envs, bool)
        self._obs: np.ndarray | None = None

    def reset(
        self, seed: int | list[int] | np.ndarray | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode in every env. ``seed`` int -> env b gets ``seed + b``."""
        options = check_reset_options(options, "VectorDeliberationEnv")
        B = self.num_envs
        if seed is None:
            seeds = np.random.SeedSequence().generate_state(B, np.uint64)
        elif np.ndim(seed) == 0:
            seeds = np.arange(B, dtype=np.uint64) + np.asarray(seed, np.uint64)
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
        # A topology spec (config or reset option) is one graph for every env: a name,
        # [N, N] or per round [T, N, N] (which `set_topology`'s [B, N, N] would shadow).
        spec = options.get("topology", self.config.topology)
        cfg = self.config
        graph = topology.resolve(spec, cfg.num_agents, cfg.max_rounds)
        self.core.set_graph(np.broadcast_to(graph, (B, *graph.shape)).copy())
        self._leader = (np.arange(B) // group) * group
        self._episode[:] = 0
        key, init = derive_keys(self._base, self._episode, self._leader)
        self.core.reset(key, init, task_index=options.get("task_index"))
        self._done[:] = False
        self._obs = self.core.observations()
        infos = {
            "action_mask": self.core.action_masks(),
            "task_index": self.core.state.task_index.copy(),
            "tokens": self.core.round_tokens.copy(),
            "correct": self.core.state.correct.copy(),
            "team_correct": self.core.team_correct(),
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
        # Everything about the episode is read here, before an autoreset overwrites it.
        infos: dict[str, Any] = {
            "tokens": result.tokens,
            "reward_terms": result.terms,
            "changed": s.changed.copy(),
            "correct": s.correct.copy(),
            "team_correct": result.team_correct,
            "consensus": self.core.consensus(),
            "rounds": s.round.copy(),
            "episode_tokens": s.tokens.copy(),
            "episode_actions": s.action_counts.copy(),
        }
        if done.any():
            infos["final_obs"] = obs
            if self.autoreset:
                envs = np.nonzero(done)[0]
                self._episode[envs] += 1
                key, init = derive_keys(self._base, self._episode, self._leader)
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

    def set_topology(self, edges: Any) -> None:
        """Set the communication graph REFINE reads from the next `step` on, without an
        action (for topology methods: AgentPrune, GPTSwarm, DyLAN). `edges` is a topology
        name, ``[N, N]`` (every env), ``[B, N, N]`` (one graph per env) or ``[B, T, N, N]``
        (per env and round r = 0..T-1), 0/1, ``edges[b, i, j] = 1`` when agent i reads
        agent j; the diagonal is ignored. It holds through autoresets until the next
        `set_topology` or `reset` (which restores ``options["topology"]`` or the config's).
        Observations show it (peer ``visible`` flags) when the config's topology is not
        ``"complete"``; see ``docs/topology.md``."""
        self.core.set_graph(self._graph(edges))

    @property
    def topology(self) -> np.ndarray:
        """``[B, T, N, N]`` bool, a copy of each env's graph per round (diagonal True)."""
        return self.core.state.graph.copy()

    def _graph(self, edges: Any) -> np.ndarray:
        cfg = self.config
        return topology.batch(edges, self.num_envs, cfg.num_agents, cfg.max_rounds)

    @property
    def active(self) -> np.ndarray:
        """``[B]`` bool: envs whose episode is still running (the env's own episode-end
        rule; all True after ``reset()`` and always with autoreset)."""
        return ~self._done

    @property
    def episode_keys(self) -> np.ndarray:
        """``[B]`` uint64, a copy of each env's current episode key: the seed of all of the
        episode's randomness (equal keys, equal dynamics), for seeding a policy per episode."""
        return self.core.state.key.copy()

    @property
    def backend(self) -> Any:
        """The backend as configured: the instance given as ``backend=``, or the one built
        from its name (a text backend without the env's adapter), e.g. to read its cache."""
        return self.core.user_backend()

    def solution_arrays(self) -> dict[str, np.ndarray]:
        """Copies of every agent's current solution as ``[B, N]`` arrays (`SOLUTION_ARRAYS`):
        ``answer`` (an int id, equal ids within an env are equal answers, -1 unparsed),
        ``correct``, ``self_confidence``, ``judge_confidence``, ``logprob_confidence`` (NaN
        where the backend has none), ``steps`` and ``operators``. For analysis and logging;
        a policy must not read ``correct``."""
        return {name: getattr(self.core.state, name).copy() for name in SOLUTION_ARRAYS}

    def solutions(self, env: int) -> list[Solution | None]:
        """The `Solution` records of env `env`'s agents (None with array backends such as
        the simulator, which keep no text)."""
        return self.core.solutions(env)

    def state(self) -> np.ndarray:
        """Global state ``[B, state_size]`` for centralised critics."""
        if self._obs is None:
            raise RuntimeError("state() was called before reset(): call reset() first")
        return self.core.global_state(self._obs)

    def render(self) -> tuple[str, ...] | None:  # type: ignore[override]
        """With ``render_mode="ansi"``, one line per env: its task, round, and each agent's
        answer and confidence now; else a warning and None."""
        if self.render_mode is None:
            logger.warn("render() called on a vector env without a render_mode; pass 'ansi'")
            return None
        if self._obs is None:
            raise RuntimeError("render() was called before reset(): call reset() first")
        core, s = self.core, self.core.state
        return tuple(
            f"env {b} [{core.tasks[int(s.task_index[b])].id}] round {int(s.round[b])}: "
            + " | ".join(
                f"agent_{i}: {core.answer_text(b, i)} (conf {s.self_confidence[b, i]:.2f})"
                for i in range(self.num_agents)
            )
            for b in range(self.num_envs)
        )

    def close_extras(self, **kwargs: Any) -> None:
        """Close the backend (`close()`, from `VectorEnv`, calls this once; also at garbage
        collection of an env whose constructor raised before it had a core)."""
        backend = getattr(getattr(self, "core", None), "backend", None)
        close = getattr(backend, "close", None)
        if callable(close):
            close()
