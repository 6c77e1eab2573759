"""Grouped rollouts on `VectorDeliberationEnv`.

A *group* is G rollouts of the whole episode on one question: the same task and the same
initial solutions (the env's ``options={"group_size": G}``), with independent sampling
afterwards (the meta-policy's actions and the backend's refinements). The *group reward*
of agent i in rollout g is its episode return, the sum of its per-round rewards. SoftRankPO,
GRPO and REINFORCE compare these returns within each (question, agent) group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from algorithms.policy import MetaPolicy
from deliberation_env import VectorDeliberationEnv


@dataclass
class Rollout:
    """T rounds of B = Q x G envs with N agents (envs ordered question-major)."""

    obs: np.ndarray  # float32 [T, B, N, D]
    masks: np.ndarray  # int8 [T, B, N, 3]
    actions: np.ndarray  # int64 [T, B, N]
    logp: np.ndarray  # float32 [T, B, N], behaviour log-probabilities
    rewards: np.ndarray  # float32 [T, B, N]
    active: np.ndarray  # bool [T, B], env still running at round t
    states: np.ndarray  # float32 [T, B, S], global state (centralised critics)
    team_correct: np.ndarray  # bool [B]
    tokens: np.ndarray  # int64 [B]
    action_counts: np.ndarray  # int64 [B, 3]
    group_size: int

    @property
    def returns(self) -> np.ndarray:
        """Episode return of each agent ``[B, N]``: the group reward."""
        return (self.rewards * self.active[..., None]).sum(0)

    def by_group(self, x: np.ndarray) -> np.ndarray:
        """``[B, ...] -> [Q, G, ...]``."""
        return x.reshape(-1, self.group_size, *x.shape[1:])

    @property
    def agent_steps(self) -> int:
        return int(self.active.sum()) * self.obs.shape[2]


def distinct_rows(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, index) over the leading axis of `arrays` taken together: ``first`` the
    position of the first occurrence of each distinct row, ``index`` ``[R]`` the distinct
    row of each row (so ``x[first][index] == x``). Rows are compared as bytes (one sort of
    opaque records): equal bytes are equal inputs, hence equal network outputs."""
    R = arrays[0].shape[0]
    parts = [np.ascontiguousarray(x.reshape(R, -1)).view(np.uint8) for x in arrays]
    key = np.concatenate(parts, axis=1)
    records = key.view(np.dtype((np.void, key.shape[1])))[:, 0]
    _, first, index = np.unique(records, return_index=True, return_inverse=True)
    return first, index.reshape(R)


def policy_logits(policy: MetaPolicy, obs: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """``policy(obs, mask)`` with the network run once per distinct (obs, mask) row: the G
    rollouts of a group share their first round (and stay alike while they act alike)."""
    first, index = distinct_rows(obs, mask)
    if len(first) == len(index):
        return policy(torch.as_tensor(obs), torch.as_tensor(mask))
    logits = policy(torch.as_tensor(obs[first]), torch.as_tensor(mask[first]))
    return logits[torch.as_tensor(index)]


def sample_actions(
    logits: torch.Tensor, generator: torch.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """(actions, their log-probabilities) drawn from `generator`: the numbers of
    ``Categorical(logits=logits)``'s ``sample`` and ``log_prob`` (the same operations in
    the same order), without building the distribution object."""
    logp = logits - logits.logsumexp(-1, keepdim=True)
    probs = logp.softmax(-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, True, generator=generator)
    actions = flat.reshape(probs.shape[:-1])
    return actions.numpy(), logp.gather(-1, actions[..., None])[..., 0].numpy()


def collect(
    env: VectorDeliberationEnv,
    policy: MetaPolicy,
    seed: int,
    group_size: int,
    generator: torch.Generator | None = None,
) -> Rollout:
    """Play one episode in every env of `env` (built with ``autoreset=False``) with actions
    sampled from `policy` with `generator` (None: torch's global generator); the env's own
    randomness comes from `seed`. Consecutive blocks of `group_size` envs form a group."""
    if env.autoreset:
        raise ValueError("collect needs a VectorDeliberationEnv built with autoreset=False")
    obs, info = env.reset(seed=seed, options={"group_size": group_size})
    active = np.ones(env.num_envs, bool)
    steps: list[tuple] = []
    final: dict[str, np.ndarray] = {}
    while active.any():
        mask = info["action_mask"]
        state = env.state()
        with torch.inference_mode():
            actions, logp = sample_actions(policy_logits(policy, obs, mask), generator)
        next_obs, rewards, done, _, info = env.step(actions)
        steps.append((obs, mask, actions, logp, rewards, active, state))
        final = info
        active = info["active"]
        obs = next_obs
    cols = list(zip(*steps))
    return Rollout(
        obs=np.stack(cols[0]),
        masks=np.stack(cols[1]),
        actions=np.stack(cols[2]),
        logp=np.stack(cols[3]),
        rewards=np.stack(cols[4]),
        active=np.stack(cols[5]),
        states=np.stack(cols[6]),
        team_correct=final["team_correct"].copy(),
        tokens=final["episode_tokens"].copy(),
        action_counts=final["episode_actions"].copy(),
        group_size=group_size,
    )
