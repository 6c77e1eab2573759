"""DyLAN (Liu et al., "A Dynamic LLM-Powered Agent Network for Task-Oriented Agent
Collaboration", COLM 2024, arXiv 2310.02170) on the env: agents rate the peers they
read, the ratings give agent importance scores, the least important agents leave the
team, and deliberation stops early at consensus.

- Ratings (DyLAN's rater prompt, on the simulator's solution fields): when agent i
  REFINEs in round t it rates each peer j it read by ``judge_j * (agree_ij + floor)``:
  j's judge confidence before the round (a critic's estimate that j is right) times
  whether i's new answer equals j's (j's answer helped), with a floor so a confident
  peer that i did not follow still counts. Ratings are normalised over the peers i read;
  an agent that did not REFINE (or read nobody) passes all its weight to itself.
- Agent importance (DyLAN's Eq. 1-3): the last layer's nodes get 1/N each; a node's
  importance flows back to the nodes it rated in proportion to the ratings; an agent's
  importance is the sum over its nodes (layers).
- Agent Team Optimisation (DyLAN section 3.3), the training: the full team deliberates
  on training questions (everyone REFINEs on the complete graph, stopping at
  consensus); the mean importance of each agent index over those episodes ranks them.
- Inference-time selection: in round `select_round`, the `drop` least important agents
  (per question from the ratings so far, ``selection="question"``; or by the team
  ranking from training, ``selection="team"``) stop refining and stop being read: the
  graph loses their columns and they CONCEDE (copy the kept agents' plurality, so their
  vote follows the kept team).
- Early stopping: the env's ``stop_on_consensus`` (all agents agree).

Every place where the env forces a deviation: docs/baselines.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from algorithms.checkpoint import write_metrics
from algorithms.heuristics import Features
from algorithms.topology_methods.common import (
    CONCEDE,
    PERSIST,
    REFINE,
    GraphTrainConfig,
    check_start,
    training_env,
)
from deliberation_env import VectorDeliberationEnv

__all__ = ["DyLANConfig", "DyLANPolicy", "propagate", "train"]


@dataclass
class DyLANConfig(GraphTrainConfig):
    """DyLAN's agent importance, team selection and early stop (arXiv 2310.02170)."""

    drop: int = 1
    """Agents that leave the team in `select_round` (the least important; at most N-1)."""
    select_round: int = 1
    """The round (0-based) from which the dropped agents stop refining and being read
    (DyLAN selects at an intermediate layer); rounds before it give the ratings. A value
    >= max_rounds never drops anyone."""
    selection: Literal["question", "team"] = "question"
    """Whose importance decides: "question" (the ratings of this question so far, DyLAN's
    inference-time selection) or "team" (the mean importance per agent over the training
    questions, DyLAN's Agent Team Optimisation)."""
    early_stop: bool = True
    """End the deliberation once all agents agree (DyLAN's early stopping): sets the env's
    ``stop_on_consensus`` for training and evaluation (False: the env's own setting)."""
    rating_floor: float = 0.1
    """Rating of a read peer whose answer the rater did not adopt, relative to 1 for one
    it did (both times the peer's judge confidence)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selection == "question" and self.drop and self.select_round < 1:
            raise ValueError(
                "DyLANConfig: selection='question' rates the rounds before select_round, so "
                "select_round must be >= 1 (or use selection='team')"
            )
        if not self.rating_floor >= 0:
            raise ValueError(f"DyLANConfig.rating_floor must be >= 0, got {self.rating_floor}")


def propagate(ratings: list[np.ndarray], live: list[np.ndarray]) -> np.ndarray:
    """Agent importance ``[B, N]`` from one rating matrix ``[B, N, N]`` per round played
    (rows: rater i in round t+1, normalised; columns: rated j in round t) and which envs
    played it (`live`, ``[B]`` bool each). The last layer holds 1/N per agent; each layer
    passes its importance back through the ratings; an agent sums its layers."""
    if not ratings:
        raise ValueError("propagate needs the ratings of at least one round")
    B, N, _ = ratings[-1].shape
    node = np.full((B, N), 1.0 / N)
    total = node.copy()
    for w, on in zip(reversed(ratings), reversed(live)):
        back = np.einsum("bi,bij->bj", node, w)
        node = np.where(on[:, None], back, node)
        total += np.where(on[:, None], node, 0.0)
    return total


class DyLANPolicy:
    """Everyone REFINEs, rating the peers it reads; in `select_round` the `drop` least
    important agents CONCEDE from then on and nobody reads them; the env stops at
    consensus (``env_overrides``)."""

    name = "dylan"

    def __init__(
        self,
        drop: int = 1,
        select_round: int = 1,
        selection: str = "question",
        team_importance: np.ndarray | None = None,
        stop_on_consensus: bool = True,
        rating_floor: float = 0.1,
    ) -> None:
        self.drop = drop
        self.select_round = select_round
        self.selection = selection
        self.team_importance = None if team_importance is None else np.asarray(team_importance)
        """Mean importance per agent over the training questions (Agent Team Optimisation)."""
        self.rating_floor = rating_floor
        self.env_overrides = {"stop_on_consensus": bool(stop_on_consensus)}
        self.env: VectorDeliberationEnv | None = None

    # -- the evaluation harness' hooks ---------------------------------------------------
    def bind(self, env: VectorDeliberationEnv) -> None:
        """Start a batch of episodes in `env` (called after every reset)."""
        self.env = env
        self.graph = env.topology  # [B, T, N, N], the config's (complete by default)
        B, N = env.num_envs, env.num_agents
        self.dropped = np.zeros((B, N), bool)
        self.ratings: list[np.ndarray] = []
        self.live: list[np.ndarray] = []
        self.importance: np.ndarray | None = None
        self._round = 0
        self._before: dict[str, np.ndarray] | None = None
        self._actions: np.ndarray | None = None

    def act(
        self, obs: np.ndarray, action_mask: np.ndarray, deterministic: bool = True
    ) -> np.ndarray:
        env = self._env()
        self.observe(obs)
        if self._round == self.select_round and self.drop > 0:
            self._select()
        mask = np.asarray(action_mask)
        wanted = np.where(self.dropped, CONCEDE, REFINE)
        allowed = np.take_along_axis(mask, wanted[..., None], -1)[..., 0] > 0
        actions = np.where(allowed, wanted, PERSIST).astype(np.int64)
        self._before = env.solution_arrays()
        self._actions = actions
        self._round += 1
        return actions

    # -- ratings and importance -----------------------------------------------------------
    def observe(self, obs: np.ndarray) -> None:
        """Rate the round just played (if any) from the solutions before and after it;
        `obs` tells which envs played it (finished envs are frozen)."""
        if self._before is None or self._actions is None:
            return
        env = self._env()
        T = env.config.max_rounds
        played = np.rint(Features(obs, env.layout)["own.round"][:, 0] * T).astype(int)
        live = played == self._round
        t = self._round - 1
        now = env.solution_arrays()
        self.ratings.append(self._rate(t, self._before, now, self._actions))
        self.live.append(live)
        self._before = None

    def _rate(
        self, t: int, before: dict[str, np.ndarray], now: dict[str, np.ndarray],
        actions: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """``[B, N, N]`` normalised ratings of round t (row i rates the peers it read)."""
        B, N = actions.shape
        read = self.graph[:, t] & ~np.eye(N, dtype=bool)
        read &= (actions == REFINE)[:, :, None]
        prev = before["answer"]
        agree = (now["answer"][:, :, None] == prev[:, None, :]) & (prev[:, None, :] >= 0)
        raw = before["judge_confidence"][:, None, :] * (agree + self.rating_floor)
        raw = np.where(read, raw, 0.0)
        total = raw.sum(-1, keepdims=True)
        w = np.divide(raw, total, out=np.zeros_like(raw), where=total > 0)
        solo = total[..., 0] <= 0
        w[:, np.arange(N), np.arange(N)] = solo  # non-refiners pass importance to themselves
        return w

    def episode_importance(self) -> np.ndarray:
        """``[B, N]`` importance of every agent over the rounds rated so far."""
        return propagate(self.ratings, self.live)

    def _select(self) -> None:
        """Drop the `drop` least important agents of every env from this round on."""
        env = self._env()
        B, N = env.num_envs, env.num_agents
        drop = min(self.drop, N - 1)
        if drop <= 0:
            return
        if self.selection == "team" or not self.ratings:
            if self.team_importance is None:
                raise ValueError("selection='team' needs team_importance (train DyLAN first)")
            scores = np.broadcast_to(self.team_importance, (B, N))
        else:
            scores = self.episode_importance()
        self.importance = np.array(scores, float)
        # Lowest importance first; ties drop the higher-index agent (stable on -index).
        order = np.lexsort((-np.arange(N)[None].repeat(B, 0), scores), axis=-1)
        rows = np.arange(B)[:, None]
        self.dropped[rows, order[:, :drop]] = True
        graph = self.graph.copy()
        graph[:, self.select_round :] &= ~self.dropped[:, None, None, :]
        self.graph = graph
        env.set_topology(graph)

    def _env(self) -> VectorDeliberationEnv:
        if self.env is None:
            raise RuntimeError("DyLANPolicy acts in a bound env: call bind(env) after reset")
        return self.env

    def __repr__(self) -> str:
        return f"DyLANPolicy(drop={self.drop}, select_round={self.select_round}, " \
               f"selection={self.selection!r})"  # fmt: skip


def train(
    cfg: DyLANConfig | None = None,
    policy: Any = None,
    ref: Any = None,
    progress: bool = True,
) -> tuple[DyLANPolicy, list[dict[str, Any]]]:
    """Agent Team Optimisation: the full team deliberates on training questions and each
    agent's mean importance is recorded; returns the DyLAN policy and the history."""
    cfg = cfg if cfg is not None else DyLANConfig()
    check_start("dylan", policy, ref)
    B = cfg.questions_per_update * cfg.group_size
    stop = cfg.early_stop or cfg.env.stop_on_consensus
    env = training_env(cfg, B, stop_on_consensus=stop)
    recorder = DyLANPolicy(drop=0, stop_on_consensus=stop,
                           rating_floor=cfg.rating_floor)  # fmt: skip
    history: list[dict[str, Any]] = []
    sums = np.zeros(env.num_agents)
    try:
        for u in range(cfg.updates):
            obs, infos = env.reset(seed=cfg.seed * 1_000_003 + u,
                                   options={"group_size": cfg.group_size})  # fmt: skip
            recorder.bind(env)
            active = np.ones(B, bool)
            while active.any():
                obs, _, _, _, infos = env.step(recorder.act(obs, infos["action_mask"]))
                active = infos["active"]
            recorder.observe(obs)
            importance = recorder.episode_importance()
            sums += importance.mean(0)
            history.append({
                "update": u + 1,
                "agent_steps": int(np.sum(infos["rounds"]) * env.num_agents),
                "team_accuracy": float(np.mean(infos["team_correct"])),
                "tokens_per_question": float(np.mean(infos["episode_tokens"])),
                "rounds_per_question": float(np.mean(infos["rounds"])),
                "importance": importance.mean(0).tolist(),
            })  # fmt: skip
    finally:
        env.close()
    team = sums / cfg.updates
    result = DyLANPolicy(cfg.drop, cfg.select_round, cfg.selection, team,
                         stop, cfg.rating_floor)  # fmt: skip
    if cfg.out:
        write_metrics(cfg.out, history)
        _save(result, cfg.out)
    return result, history


def _save(policy: DyLANPolicy, out: str) -> None:
    """Write the policy's settings and the team importance as ``out/policy.json``."""
    team = policy.team_importance
    payload = {
        "algo": "dylan",
        "drop": policy.drop,
        "select_round": policy.select_round,
        "selection": policy.selection,
        "rating_floor": policy.rating_floor,
        "team_importance": None if team is None else team.tolist(),
        "env_overrides": policy.env_overrides,
    }
    Path(out, "policy.json").write_text(json.dumps(payload, indent=1))
