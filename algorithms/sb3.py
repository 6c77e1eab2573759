"""Stable-Baselines3 PPO through SuperSuit, the library baseline: one MLP shared by every
agent (parameter sharing: each agent of each env is one SB3 env), trained on the same
training questions and evaluated by the same harness as the other meta-policies.

The env path is PettingZoo's documented one (SuperSuit's
``pettingzoo_env_to_vec_env_v1`` + ``concat_vec_envs_v1(base_class="stable_baselines3")``)
with two gaps of SuperSuit 3.11 handled here:

* its SB3 vector env has no ``seed`` (``PPO(seed=...)`` raises ``AttributeError:
  'ConcatVecEnv' object has no attribute 'seed'``), and its ``reset`` drops the seed
  anyway; `SeededVecEnv` adds both, so a seeded run is reproducible;
* it has no ``env_method``, so action masks cannot be fetched. SB3's PPO ignores masks
  in any case, which is harmless here: the only masked action, CONCEDE when no peer has a
  parsed answer, plays as PERSIST. `SB3Policy.act` still maps masked picks to PERSIST.

That path steps each deliberation env through the PettingZoo API, one at a time.
`BatchedVecEnv` is the fast one, and the default of `SB3Config.vec_env`: an SB3
``VecEnv`` over one `VectorDeliberationEnv` (the batched core steps every env at once, as
EnvPool's SB3 adapter does), with the same agent slots, seeding, episode ends and
``terminal_observation`` SB3 expects, and the action masks through ``env_method``.

Timesteps are SB3's: one per agent per round (agent-steps), as ``agent_steps`` elsewhere.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import supersuit as ss
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)
from supersuit.vector.sb3_vector_wrapper import SB3VecEnvWrapper
from tqdm.auto import tqdm

import deliberation_env
from algorithms.common import TrainConfig, check_env, check_train_fields, split_tasks, train_env
from algorithms.tracking import Tracker, log_row, start_run
from deliberation_env import Action, EnvConfig
from deliberation_env.vector import VectorDeliberationEnv


class SeededVecEnv(VecEnvWrapper):
    """Adds ``seed`` to SuperSuit 3.11's SB3 vector env.

    ``seed(s)`` (called by SB3 when the model is built) stores `s`; the next ``reset()``
    resets deliberation env k with ``s + k`` (SuperSuit's ``ConcatVecEnv`` convention),
    so all agents of one env share its seed. Later episodes start automatically inside
    SuperSuit and continue each env's seeded stream, so the whole run is deterministic.
    """

    def __init__(self, venv: SB3VecEnvWrapper) -> None:
        super().__init__(venv)
        self.concat = venv.venv  # SuperSuit's ConcatVecEnv: the level that takes seeds
        self._seed: int | None = None

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        if seed is None:  # fresh entropy at the next reset
            self._seed = None
            return [None] * self.num_envs
        self._seed = int(seed)
        per_env = self.num_envs // len(self.concat.vec_envs)
        return [self._seed + i // per_env for i in range(self.num_envs)]

    def reset(self) -> np.ndarray:
        # SuperSuit's wrapper calls its inner reset without the seed: go one level down.
        obs, infos = self.concat.reset(seed=self._seed)
        self._seed = None
        self.venv.reset_infos = self.reset_infos = list(infos)
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":  # SuperSuit's inner env has no get_attr
            return [self.venv.render_mode] * self.num_envs
        return self.venv.get_attr(attr_name, indices)


def make_vec_env(
    num_envs: int, seed: int | None = None, config: EnvConfig | None = None
) -> SeededVecEnv:
    """``num_envs`` deliberation envs of `config` (default: `EnvConfig()`) as one SB3
    vector env of ``num_envs * N`` agent slots (agent-major within each env)."""
    env = deliberation_env.parallel_env(config=check_env(config or EnvConfig(), "make_vec_env"))
    venv = ss.pettingzoo_env_to_vec_env_v1(env)
    venv = ss.concat_vec_envs_v1(venv, num_envs, num_cpus=0, base_class="stable_baselines3")
    venv = SeededVecEnv(venv)
    if seed is not None:
        venv.seed(seed)
    return venv


class BatchedVecEnv(VecEnv):
    """An SB3 ``VecEnv`` of ``num_envs * N`` agent slots over one `VectorDeliberationEnv`
    of `num_envs` envs (slot ``b * N + i`` is agent i of env b, SuperSuit's order).

    Seeding as `SeededVecEnv`: ``seed(s)`` makes the next ``reset()`` start env b with
    seed ``s + b``, and later episodes follow from it (the vector env's autoreset), so a
    seeded run is reproducible. At an episode end every slot of the env is done, its
    ``infos`` hold ``terminal_observation`` (the last observation) and the episode's
    ``team_correct``, and the observation returned is the next episode's first, as SB3
    expects. ``env_method("action_masks")`` returns each slot's mask; SB3's PPO ignores
    masks, and a masked pick plays as PERSIST (`SB3Policy`)."""

    def __init__(self, num_envs: int, config: EnvConfig | None = None) -> None:
        self.vec = VectorDeliberationEnv(
            num_envs, config=check_env(config or EnvConfig(), "BatchedVecEnv")
        )
        self.agents = self.vec.num_agents
        self.render_mode = None  # read by VecEnv.__init__ through get_attr
        super().__init__(
            num_envs * self.agents, self.vec.single_observation_space, self.vec.single_action_space
        )
        self._seed: int | None = None
        self._actions: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._seed = None if seed is None else int(seed)
        if seed is None:
            return [None] * self.num_envs
        return [int(seed) + k // self.agents for k in range(self.num_envs)]

    def reset(self) -> VecEnvObs:
        obs, infos = self.vec.reset(seed=self._seed)
        self._seed = None
        self._masks = infos["action_mask"]
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs.reshape(self.num_envs, -1)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.vec.num_envs, self.agents)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.vec.step(self._actions)
        self._masks = info["action_mask"]
        ended = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for b in np.flatnonzero(ended):
            for i in range(self.agents):
                infos[b * self.agents + i] = {
                    "terminal_observation": info["final_obs"][b, i],
                    "TimeLimit.truncated": bool(truncated[b] and not terminated[b]),
                    "team_correct": bool(info["team_correct"][b]),
                }
        dones = np.repeat(ended, self.agents)
        return obs.reshape(self.num_envs, -1), rewards.reshape(-1), dones, infos

    def close(self) -> None:
        self.vec.close()

    def _slots(self, indices: VecEnvIndices) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._slots(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(
            f"BatchedVecEnv slots share one vector env: cannot set {attr_name!r} per slot"
        )

    def env_method(
        self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        if method_name != "action_masks":
            raise AttributeError(
                f"BatchedVecEnv has no per-slot method {method_name!r}; only 'action_masks'"
            )
        if self._masks is None:
            raise RuntimeError("action_masks before reset(): call reset() first")
        masks = self._masks.reshape(self.num_envs, -1).astype(bool)
        return [masks[k] for k in self._slots(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._slots(indices)]


@dataclass
class SB3Config:
    """SB3 PPO on the deliberation env (the env and split of `TrainConfig` plus these)."""

    env: EnvConfig = field(default_factory=train_env)
    """The deliberation env trained on, as `TrainConfig.env`."""
    eval_fraction: float = TrainConfig.eval_fraction
    """Share of the env's questions held out for evaluation, as `TrainConfig.eval_fraction`."""
    num_envs: int = 8
    """Deliberation envs stepped together; SB3 sees ``num_envs * env.num_agents`` envs."""
    vec_env: Literal["batched", "supersuit"] = "batched"
    """How SB3 steps them: "batched", one `VectorDeliberationEnv` behind `BatchedVecEnv`
    (fast); "supersuit", PettingZoo's documented path through SuperSuit (`make_vec_env`),
    one ParallelEnv step per env. Both give the same run for a seed (tested)."""
    total_timesteps: int = 200_000
    """Training budget in agent-steps (SB3 timesteps)."""
    n_steps: int = 64
    """Rounds per SB3 env per rollout; a rollout is ``n_steps * num_envs * N``
    agent-steps (1536 by default)."""
    batch_size: int = 256
    """SB3 minibatch size (agent-steps)."""
    n_epochs: int = 4
    """Passes over each rollout (CleanRL's ``update_epochs``; SB3's default is 10)."""
    lr: float = 3e-4
    """Adam learning rate (SB3's default)."""
    gamma: float = 1.0
    """Discount; 1 as in `PPOConfig` (3-round episodes always end)."""
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    """Entropy bonus, as `PPOConfig.entropy_coef` (SB3's default is 0)."""
    clip_range: float = 0.2
    seed: int = 0
    """Seeds SB3 (torch, numpy, random) and the envs (through `SeededVecEnv`)."""
    device: str = "cpu"
    torch_threads: int = 1
    """CPU threads for torch (as `TrainConfig.torch_threads`: the MLP is tiny)."""
    out: str | None = None
    """Directory for ``policy.zip`` (load it with `SB3Policy.load`) and ``metrics.jsonl``."""

    def __post_init__(self) -> None:
        check_env(self.env, type(self).__name__)
        check_train_fields(self, SB3_BOUNDS)
        if self.vec_env not in ("batched", "supersuit"):
            raise ValueError(f"vec_env must be 'batched' or 'supersuit', got {self.vec_env!r}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(
                f"gamma and gae_lambda must lie in [0, 1], got {self.gamma}, {self.gae_lambda}"
            )


SB3_BOUNDS: dict[str, tuple[str, float]] = {
    "eval_fraction": ("fraction", 0.0), "num_envs": ("int", 1), "total_timesteps": ("int", 1),
    "n_steps": ("int", 1), "batch_size": ("int", 1), "n_epochs": ("int", 1),
    "lr": (">", 0.0), "gamma": (">=", 0.0), "gae_lambda": (">=", 0.0),
    "ent_coef": (">=", 0.0), "clip_range": (">", 0.0), "seed": ("int", 0),
    "torch_threads": ("int", 1),
}  # fmt: skip
"""Range of each numeric `SB3Config` field (`algorithms.common.check_train_fields`)."""


class TeamAccuracyCallback(BaseCallback):
    """Appends ``{"step", "agent_steps", "team_accuracy", "episodes"}`` to `history` after
    each rollout (``step``: agent-steps so far; ``agent_steps``: in this rollout), from ``infos[i]["team_correct"]`` of the episodes that ended in it. SuperSuit keeps the
    final step's infos when it auto-resets (merged with the new episode's, which carry no
    ``team_correct``); every agent slot of an env reports its episode, so the mean over
    slots weighs episodes equally."""

    def __init__(
        self,
        history: list[dict[str, Any]],
        num_agents: int,
        progress: tqdm | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        super().__init__()
        self.tracker = tracker  # also gets each row (`algorithms.tracking`)
        self.history = history
        self.num_agents = num_agents
        self.progress = progress
        self._correct: list[bool] = []
        self._last_step = 0

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done and "team_correct" in info:
                self._correct.append(bool(info["team_correct"]))
        return True

    def _on_rollout_end(self) -> None:
        steps = int(self.num_timesteps) - self._last_step
        self._last_step = int(self.num_timesteps)
        if self._correct:
            self.history.append(
                {
                    "step": self._last_step,
                    "agent_steps": steps,
                    "team_accuracy": float(np.mean(self._correct)),
                    "episodes": len(self._correct) // self.num_agents,
                }
            )
            log_row(self.tracker, self.history[-1], len(self.history) - 1)
            if self.progress is not None:
                self.progress.set_postfix(acc=f"{self.history[-1]['team_accuracy']:.3f}")
        if self.progress is not None:
            self.progress.update(steps)
        self._correct = []


def train_sb3(
    cfg: SB3Config | None = None, progress: bool = True, tracker: Tracker | None = None
) -> tuple[SB3Policy, list[dict[str, Any]]]:
    """Train SB3's PPO (``MlpPolicy``, shared by all agents) on the training questions.
    Returns the trained model as a `Policy` (``.model`` is the SB3 model) and the learning
    curve, one row per rollout; writes both to ``cfg.out`` when set. `tracker`
    (`algorithms.tracking`) gets the config and each row as it comes (stepped by agent-steps
    so far); SB3's own ``tensorboard_log`` is not used, so both backends log the same rows."""
    cfg = cfg or SB3Config()
    torch.set_num_threads(cfg.torch_threads)
    train_tasks, _ = split_tasks(cfg)
    training = replace(cfg.env, tasks=tuple(train_tasks))
    env: VecEnv = (
        BatchedVecEnv(cfg.num_envs, training)
        if cfg.vec_env == "batched"
        else make_vec_env(cfg.num_envs, config=training)
    )
    model = PPO(
        "MlpPolicy",
        env,
        learning_rate=cfg.lr,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        ent_coef=cfg.ent_coef,
        clip_range=cfg.clip_range,
        seed=cfg.seed,
        device=cfg.device,
        verbose=0,
    )
    history: list[dict[str, Any]] = []
    start_run(tracker, "sb3_ppo", cfg)
    with tqdm(total=cfg.total_timesteps, desc="sb3_ppo", disable=not progress, leave=False) as bar:
        model.learn(
            cfg.total_timesteps,
            callback=TeamAccuracyCallback(history, cfg.env.num_agents, bar, tracker),
        )
    env.close()
    if cfg.out is not None:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        model.save(out / "policy.zip")
        with open(out / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in history)
    return SB3Policy(model), history


class SB3Policy:
    """An SB3 model as a `algorithms.policy.Policy`, for the evaluation harness:
    ``act(obs [B, N, D], action_mask [B, N, 3]) -> [B, N]`` through ``model.predict`` on
    the ``[B * N, D]`` rows; a pick the mask forbids becomes PERSIST."""

    env_overrides: Mapping[str, Any] = MappingProxyType({})

    def __init__(self, model: PPO) -> None:
        self.model = model

    @classmethod
    def load(cls, path: str | Path | io.BytesIO) -> SB3Policy:
        return cls(PPO.load(path, device="cpu"))

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        """Pickled as SB3's own saved model (the model holds its training env, which does
        not pickle), so a policy trained in a worker process comes back whole."""
        buffer = io.BytesIO()
        self.model.save(buffer)
        return _sb3_policy_from_bytes, (buffer.getvalue(),)

    def act(
        self, obs: np.ndarray, action_mask: np.ndarray, deterministic: bool = False
    ) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        B, N, D = obs.shape
        actions, _ = self.model.predict(obs.reshape(B * N, D), deterministic=deterministic)
        actions = np.asarray(actions, np.int64).reshape(B, N)
        allowed = np.take_along_axis(np.asarray(action_mask), actions[..., None], -1)[..., 0]
        return np.where(allowed > 0, actions, int(Action.PERSIST))


def _sb3_policy_from_bytes(data: bytes) -> SB3Policy:
    return SB3Policy.load(io.BytesIO(data))
