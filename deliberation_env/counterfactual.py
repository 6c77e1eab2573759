"""Exact one-round counterfactuals of a vector env's current state: what each alternative
action would earn, the best joint action (the oracle's), and hindsight labels for SFT.

Every random draw of the env is keyed by (episode key, round, agent), so stepping a
scratch copy of a state with the same actions reproduces exactly what the env does:
these counterfactuals are exact, REFINE included, for any backend whose outcome depends
only on the request (the simulated one does). The env itself is never modified.

REFINE is a noisy action: the env's own draw is one sample of it. With ``samples=K`` the
joint actions that contain a REFINE are also stepped on K - 1 scratch copies whose
episode key is replaced by `refine_sample_keys` (``rng.derive(key, tag, k)``, so the
estimate is reproducible), and their rewards are averaged: an estimate of the *expected*
reward of the round. Joint actions without REFINE stay exact (their outcome does not
depend on the key with the default ``tie_break="confidence"``).

Each function takes the `VectorDeliberationEnv` (the core it wraps is accepted too, for
the env's own code); `active` defaults to ``env.active``, so envs whose episode has ended
count as the env counts them: reward 0, all-PERSIST.
"""

from __future__ import annotations

import itertools

import numpy as np

from deliberation_env import rng
from deliberation_env.actions import NUM_ACTIONS, Action
from deliberation_env.core import DeliberationCore, StepResult
from deliberation_env.vector import VectorDeliberationEnv

EnvLike = VectorDeliberationEnv | DeliberationCore

LABEL_PREFERENCE = (Action.PERSIST, Action.CONCEDE, Action.REFINE)
"""Order in which hindsight labels break ties between equally rewarded actions: cheapest
first (PERSIST costs nothing, CONCEDE a few bookkeeping tokens, REFINE an LLM call)."""


_SAMPLE_TAG = 0xC0F
"""Tag of the keys of extra REFINE samples (distinct from the core's stream tags 1-6)."""


def refine_sample_keys(keys: np.ndarray, samples: int) -> np.ndarray:
    """``uint64 [samples, len(keys)]``: the episode keys under which REFINE is sampled.

    Sample 0 is the episode's own key (the draw the env itself makes), sample k >= 1 is
    ``rng.derive(key, _SAMPLE_TAG, k)``: deterministic, so labels are reproducible, and
    independent of the env's draw (the core keys REFINE by (episode key, round, agent)).
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1 (REFINE outcomes to average), got {samples}")
    keys = np.asarray(keys, np.uint64)
    extra = [rng.derive(keys, _SAMPLE_TAG, k) for k in range(1, samples)]
    return np.stack([keys, *extra])


def _unpack(env: EnvLike, active: np.ndarray | None) -> tuple[DeliberationCore, np.ndarray]:
    """The core behind `env` and the ``[B]`` bool mask of envs that play the round."""
    if isinstance(env, VectorDeliberationEnv):
        core = env.core
        default = env.active
    elif isinstance(env, DeliberationCore):
        core, default = env, np.ones(env.num_envs, bool)
    else:
        raise TypeError(
            f"counterfactuals need a VectorDeliberationEnv, got {type(env).__name__}; "
            "build one with VectorDeliberationEnv(num_envs, config=...)"
        )
    mask = default if active is None else np.asarray(active, bool)
    if mask.shape != (core.num_envs,):
        raise ValueError(f"active must have shape ({core.num_envs},), got {mask.shape}")
    return core, mask


def _step_copies(
    core: DeliberationCore,
    envs: np.ndarray,
    actions: np.ndarray,
    keys: np.ndarray | None = None,
) -> tuple[DeliberationCore, StepResult]:
    """Step scratch copies of the rows `envs` of `core` once with `actions` [M, N]; with
    `keys` ([M] uint64) the copies play under those episode keys instead of their own."""
    scratch = core.spawn(len(envs))
    rows = core.get_rows(envs)
    if keys is not None:
        rows.key = np.asarray(keys, np.uint64)
    scratch.set_rows(np.arange(len(envs)), rows)
    return scratch, scratch.step(actions)


def counterfactual_rewards(
    env: EnvLike, actions: np.ndarray, active: np.ndarray | None = None, samples: int = 1
) -> np.ndarray:
    """``[B, N, 3]``: the reward agent i would get this round for playing action a while
    its peers play `actions` ``[B, N]``.

    ``out[b, i, actions[b, i]]`` is the reward the env will actually give when
    ``samples=1``. With ``samples=K`` every alternative whose joint action contains a
    REFINE (agent i's or a peer's) is the mean reward over K REFINE outcomes (the env's
    own and K - 1 others, `refine_sample_keys`; the same K for the three alternatives of
    an agent, so they are compared on common draws); the others stay exact. A CONCEDE the
    action mask forbids behaves as PERSIST (the env treats it so). Envs where `active`
    ([B] bool, default ``env.active``) is False get 0, as the env rewards frozen envs.
    """
    core, live = _unpack(env, active)
    B, N = core.num_envs, core.num_agents
    actions = np.asarray(actions, np.int64)
    # Copy k = (b * N + i) * 3 + a plays `actions[b]` with agent i switched to a.
    joint = np.repeat(actions, N * NUM_ACTIONS, axis=0).reshape(B, N, NUM_ACTIONS, N)
    agent = np.arange(N)
    joint[:, agent, :, agent] = np.arange(NUM_ACTIONS)
    envs = np.repeat(np.arange(B), N * NUM_ACTIONS)
    flat = joint.reshape(-1, N)
    _, result = _step_copies(core, envs, flat)
    rewards = result.rewards
    if samples > 1:
        # Only copies of live envs whose joint action draws a REFINE are random.
        noisy = np.flatnonzero((flat == Action.REFINE).any(-1) & live[envs])
        if len(noisy):
            keys = refine_sample_keys(core.state.key[envs[noisy]], samples)
            total = rewards[noisy].astype(np.float64)
            for k in range(1, samples):
                _, res = _step_copies(core, envs[noisy], flat[noisy], keys[k])
                total = total + res.rewards
            rewards = rewards.astype(np.float64)
            rewards[noisy] = total / samples
    rewards = rewards.reshape(B, N, NUM_ACTIONS, N)[:, agent, :, agent]  # [N, B, 3]
    return rewards.transpose(1, 0, 2) * live[:, None, None]


def hindsight_labels(
    env: EnvLike, actions: np.ndarray, active: np.ndarray | None = None, samples: int = 1
) -> np.ndarray:
    """``int64 [B, N]``: for each agent, the allowed action with the best expected
    counterfactual reward given its peers' `actions` (exact ties: PERSIST, then CONCEDE,
    then REFINE).

    These are the SFT targets of MPDF's stage 1 ("for each recorded state, the action with
    the best counterfactual reward"): PERSIST and CONCEDE outcomes are exact, and
    outcomes that involve a REFINE are the mean over `samples` REFINE draws
    (`counterfactual_rewards`; 1: the backend's own draw for this state, which undervalues
    REFINE, a noisy action that one draw makes lose ties and close comparisons). With
    ``reward="terminal"`` every non-final round rewards 0, so its labels are all PERSIST.
    """
    return hindsight_targets(env, actions, active, samples)[0]


def hindsight_targets(
    env: EnvLike, actions: np.ndarray, active: np.ndarray | None = None, samples: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """`hindsight_labels` and ``informative [B, N]`` bool: False where every allowed
    action earns the same (expected) reward (the label is then only the tie-break)."""
    core, live = _unpack(env, active)
    rewards = counterfactual_rewards(core, actions, live, samples)
    rewards = np.where(core.action_masks() > 0, rewards, -np.inf)
    order = np.array(LABEL_PREFERENCE, np.int64)
    # argmax returns the first maximum: scanning in preference order breaks ties.
    labels = order[np.argmax(rewards[..., order], axis=-1)]
    allowed = np.isfinite(rewards)
    best = rewards.max(-1, keepdims=True)
    informative = ((rewards < best) & allowed).any(-1)
    return labels, informative


def joint_action_table(num_agents: int) -> np.ndarray:
    """``int64 [3**N, N]``: every joint action, in lexicographic order (all-PERSIST first)."""
    return np.array(list(itertools.product(range(NUM_ACTIONS), repeat=num_agents)), np.int64)


def best_joint_actions(
    env: EnvLike, active: np.ndarray | None = None, max_copies: int = 1 << 16
) -> np.ndarray:
    """``int64 [B, N]``: for each env, the joint action whose round ends best.

    Preference: (1) the team answer is correct after the round, (2) more agents are
    correct, (3) fewer tokens; remaining ties go to the lowest joint index (PERSIST-first
    lexicographic order). Joint actions the mask forbids are never chosen. Envs where
    `active` (default ``env.active``) is False get all-PERSIST. Cost: scratch steps over
    ``B * 3**N`` copies, at most `max_copies` at a time.
    """
    core, live = _unpack(env, active)
    B, N = core.num_envs, core.num_agents
    out = np.full((B, N), int(Action.PERSIST), np.int64)
    envs = np.flatnonzero(live)
    table = joint_action_table(N)
    masks = core.action_masks()
    chunk = max(1, max_copies // len(table))
    for start in range(0, len(envs), chunk):
        part = envs[start : start + chunk]
        out[part] = table[_best_rows(core, part, table, masks[part])]
    return out


def _best_rows(
    core: DeliberationCore, envs: np.ndarray, table: np.ndarray, masks: np.ndarray
) -> np.ndarray:
    """Index into `table` of the best joint action of each env in `envs`."""
    K, N = table.shape
    scratch, result = _step_copies(core, np.repeat(envs, K), np.tile(table, (len(envs), 1)))
    team = result.team_correct.reshape(-1, K).astype(np.int64)
    n_correct = scratch.state.correct.sum(-1).reshape(-1, K).astype(np.int64)
    tokens = result.tokens.sum(-1).reshape(-1, K)
    # One int64 score orders (team, agents correct, -tokens) lexicographically.
    token_span = int(tokens.max()) + 1
    score = (team * (N + 1) + n_correct) * token_span - tokens
    allowed = masks[:, np.arange(N), table].all(-1)  # [E, K]
    score = np.where(allowed, score, np.iinfo(np.int64).min)
    return np.argmax(score, axis=1)
