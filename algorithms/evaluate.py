"""The evaluation harness: every meta-policy (learned or heuristic) runs through `evaluate`,
on the same questions and seeds, hence the same initial answers for equal ``num_agents``.

One metrics dict per seed; means and intervals over seeds, tables and plots are in the
`experiments` package (`experiments.stats`, `experiments.compare`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from algorithms.common import check_env
from algorithms.policy import Policy
from deliberation_env import EnvConfig, VectorDeliberationEnv, voting
from deliberation_env.actions import NUM_ACTIONS, Action
from deliberation_env.tasks import Task

__all__ = [
    "ACTION_KEYS",
    "EFFECTIVE_KEYS",
    "effective_action_counts",
    "effective_counts",
    "effective_shares",
    "episode_seeds",
    "evaluate",
]

ACTION_KEYS = tuple(a.name.lower() for a in Action)
"""``("persist", "refine", "concede")``, in action-id order."""

EFFECTIVE_KEYS = ("persist", "refine", "concede", "concede_noop")
"""What the actions did: a CONCEDE that leaves my answer unchanged is a no-op."""


# --------------------------------------------------------------------------- evaluation
def evaluate(
    policy: Policy,
    env: EnvConfig,
    tasks: Sequence[Task] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    episodes: int = 1000,
    deterministic: bool = True,
) -> list[dict[str, Any]]:
    """Run `episodes` questions of `env` at once per seed; one metrics dict per seed.

    The env is ``VectorDeliberationEnv(episodes, config=EnvConfig.build(env,
    tasks=tasks, **policy.env_overrides), autoreset=False)`` (`tasks` None: the env's
    own), reset with ``episode_seeds(seed, episodes)``; ``policy.bind(env)`` is called
    after each reset when the policy has it. Stochastic policies acting with
    ``deterministic=False`` are reproducible only if they seed themselves (the
    heuristics' `random` does, through `bind`). Metrics: ``team_accuracy``,
    ``agent_accuracy`` (mean final agent correctness), ``consensus_rate`` (all agents hold
    one parsed answer at the end), ``tokens_per_question``, ``rounds_per_question``,
    ``action_shares`` and ``{persist,refine,concede}_share`` (over the agent-rounds
    played), ``action_shares_per_round``, ``accuracy_per_round`` (team accuracy of the
    initial answers, then after each round; finished episodes keep their final value), and
    what the actions did (`effective_counts`): ``effective_counts`` and
    ``effective_shares`` (also ``effective_shares_per_round``).
    """
    config = check_env(env, "evaluate")
    if tasks is not None:
        config = dataclasses.replace(config, tasks=tuple(tasks))
    config = EnvConfig.build(config, **(getattr(policy, "env_overrides", None) or {}))
    vec = VectorDeliberationEnv(episodes, config=config, autoreset=False)
    try:
        return [_run(policy, vec, int(seed), deterministic) for seed in seeds]
    finally:
        vec.close()


def episode_seeds(seed: int, episodes: int) -> np.ndarray:
    """The per-env reset seeds of evaluation seed `seed`: `episodes` 64-bit seeds drawn
    from ``SeedSequence(seed)``.

    Why not ``reset(seed=seed)``: the vector env gives env b the seed ``seed + b``, so
    evaluation seeds 0 and 1 would share all episodes but one and the interval over seeds
    would be meaningless. These blocks are independent across seeds and far from the
    small integers trainers reset with.
    """
    return np.random.SeedSequence(int(seed)).generate_state(episodes, np.uint64)


def _shares(counts: np.ndarray) -> dict[str, float]:
    total = counts.sum()
    return {k: float(c / total) if total else 0.0 for k, c in zip(ACTION_KEYS, counts)}


def _run(policy: Policy, env: VectorDeliberationEnv, seed: int, deterministic: bool) -> dict:
    obs, infos = env.reset(seed=episode_seeds(seed, env.num_envs))
    bind = getattr(policy, "bind", None)
    if callable(bind):
        bind(env)
    B, T = env.num_envs, env.config.max_rounds
    team = np.asarray(infos["team_correct"], bool)
    consensus = np.asarray(voting.agreement(env.solution_arrays()["answer"]).all(axis=(1, 2)))
    accuracy = [float(team.mean())]
    per_round: list[dict[str, float]] = []
    effective: list[dict[str, int]] = []
    total = np.zeros(NUM_ACTIONS, np.int64)
    active = np.ones(B, bool)
    while active.any():
        actions = np.asarray(policy.act(obs, infos["action_mask"], deterministic=deterministic))
        # The env counts the actions submitted in live envs (a masked CONCEDE included).
        counts = np.bincount(actions[active].ravel(), minlength=NUM_ACTIONS)[:NUM_ACTIONS]
        consensus_before = consensus
        obs, _, _, _, infos = env.step(actions)
        # Finished envs are frozen: their infos keep the values of their last round.
        team = np.where(active, infos["team_correct"], team)
        consensus = np.where(active, infos["consensus"], consensus)
        accuracy.append(float(team.mean()))
        per_round.append(_shares(counts))
        effective.append(effective_counts(actions, infos["changed"], consensus_before, active))
        total += counts
        active = infos["active"]
    # stop_on_consensus can end every episode early: later rounds keep the final value.
    accuracy += accuracy[-1:] * (T + 1 - len(accuracy))
    shares = _shares(total)
    effective_total = {k: sum(r[k] for r in effective) for k in effective[0]}
    return {
        "seed": seed,
        "episodes": B,
        "num_agents": env.num_agents,
        "max_rounds": T,
        "team_accuracy": float(team.mean()),
        "agent_accuracy": float(np.mean(infos["correct"])),
        "consensus_rate": float(consensus.mean()),
        "tokens_per_question": float(np.mean(infos["episode_tokens"])),
        "rounds_per_question": float(np.mean(infos["rounds"])),
        **{f"{k}_share": v for k, v in shares.items()},
        "action_shares": shares,
        "action_shares_per_round": per_round,
        "accuracy_per_round": accuracy,
        "effective_counts": effective_total,
        "effective_shares": effective_shares(effective_total),
        "effective_shares_per_round": [effective_shares(r) for r in effective],
    }


# --------------------------------------------------------------------------- effective actions
def effective_counts(
    actions: np.ndarray,
    changed: np.ndarray,
    consensus_before: np.ndarray,
    active: np.ndarray | None = None,
) -> dict[str, int]:
    """Count one round's actions ``[B, N]`` by what they did.

    A CONCEDE changes nothing when the peer it copies already holds my answer (the env
    then treats it as PERSIST): it is counted as ``concede_noop``, not ``concede``. Since a
    real CONCEDE always changes the answer (it copies a peer holding another one), a
    CONCEDE is a no-op exactly when the agent's answer is unchanged (`changed` ``[B, N]``,
    the env's step info). ``concede_all_agree`` counts the no-ops where every peer
    already shared my answer, i.e. the team was unanimous before the round
    (`consensus_before` ``[B]``; a subset of ``concede_noop``). `active` ([B]) keeps the
    envs that played the round.
    """
    actions = np.asarray(actions)
    live = np.ones(actions.shape, bool)
    if active is not None:
        live &= np.asarray(active, bool)[:, None]
    unanimous = np.asarray(consensus_before, bool)[:, None] & (actions.shape[-1] > 1)
    concede = (actions == Action.CONCEDE) & live
    noop = concede & ~np.asarray(changed, bool)
    return {
        "persist": int(((actions == Action.PERSIST) & live).sum()),
        "refine": int(((actions == Action.REFINE) & live).sum()),
        "concede": int((concede & ~noop).sum()),
        "concede_noop": int(noop.sum()),
        "concede_all_agree": int((concede & unanimous).sum()),
    }


def effective_action_counts(
    actions: np.ndarray,
    answer_before: np.ndarray,
    answer_after: np.ndarray,
    active: np.ndarray | None = None,
) -> dict[str, int]:
    """`effective_counts` from the agents' answer ids ``[B, N]`` (-1 unparseable) before
    and after the round."""
    before, after = np.asarray(answer_before), np.asarray(answer_after)
    unanimous = np.asarray(voting.agreement(before).all(axis=(1, 2)))
    return effective_counts(actions, after != before, unanimous, active)


def effective_shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Shares of persist / refine / real concede / no-op concede (they sum to 1), plus
    ``concede_all_agree`` and ``keeps_answer_without_llm`` (persist + no-op concede)."""
    total = sum(counts[k] for k in EFFECTIVE_KEYS)
    share = {k: counts[k] / total if total else 0.0 for k in (*EFFECTIVE_KEYS, "concede_all_agree")}
    share["keeps_answer_without_llm"] = share["persist"] + share["concede_noop"]
    return share
