"""AgileRL IPPO on the deliberation env: flat observations, the action mask from
``infos[agent]["action_mask"]`` (AgileRL's convention), one network shared by every
``agent_*`` (AgileRL groups agents by name prefix).

    .venv-agilerl/bin/python examples/agilerl_ippo.py --updates 5

AgileRL 2.58 needs pettingzoo < 1.27 (`.ci/integrations` builds ``.venv-agilerl``).
Prints the mean episode return (sum over agents) of each update's rollout.
"""

from __future__ import annotations

import argparse

import numpy as np
from agilerl.algorithms import IPPO
from agilerl.vector.dummy_vec_env import PzDummyVecEnv

import deliberation_env


def listed_masks(infos: dict) -> dict:
    """Masks as Python lists: AgileRL 2.58's IPPO tests ``None in masks``, which a list of
    NumPy masks of grouped agents cannot answer (it raises "truth value ... ambiguous")."""
    return {
        a: {**i, "action_mask": np.asarray(i["action_mask"]).tolist()} for a, i in infos.items()
    }


def rollout_and_learn(agent: IPPO, env: PzDummyVecEnv, obs, info, seed: list[int]):
    """One AgileRL on-policy rollout of `agent.learn_step` rounds, then one update."""
    fields: dict[str, dict[str, list]] = {
        k: {a: [] for a in agent.agent_ids}
        for k in ("states", "actions", "log_probs", "rewards", "dones", "values")
    }
    done = {a: np.zeros(1) for a in agent.agent_ids}
    returns, score = [], 0.0
    for _ in range(agent.learn_step):
        action, log_prob, _, value = agent.get_action(obs=obs, infos=listed_masks(info))
        next_obs, reward, termination, truncation, info = env.step(action)
        score += float(sum(np.asarray(r).sum() for r in reward.values()))
        for a in agent.agent_ids:
            for key, item in (
                ("states", obs[a]), ("actions", action[a]), ("log_probs", log_prob[a]),
                ("rewards", reward[a]), ("dones", done[a]), ("values", value[a]),
            ):  # fmt: skip
                fields[key][a].append(item)
        next_done = {
            a: np.logical_or(termination[a], truncation[a]).astype(float) for a in termination
        }
        obs, done = next_obs, next_done
        if all(d.all() for d in next_done.values()):
            returns.append(score)
            score = 0.0
            seed[0] += 1
            obs, info = env.reset(seed=seed[0])
            done = {a: np.zeros(1) for a in agent.agent_ids}
    experiences = tuple(
        fields[k] for k in ("states", "actions", "log_probs", "rewards", "dones", "values")
    )
    agent.learn((*experiences, obs, done))
    return obs, info, float(np.mean(returns)) if returns else float("nan")


def train(updates: int = 5, learn_step: int = 96, seed: int = 0) -> list[float]:
    """IPPO on ``profile="toy"``; the mean episode return of every update's rollout."""
    env = PzDummyVecEnv(deliberation_env.parallel_env(profile="toy"))
    agent = IPPO(
        observation_spaces=[env.single_observation_space(a) for a in env.agents],
        action_spaces=[env.single_action_space(a) for a in env.agents],
        agent_ids=list(env.agents),
        batch_size=48,
        learn_step=learn_step,
        lr=1e-3,
        net_config={"encoder_config": {"hidden_size": [32]}, "head_config": {"hidden_size": [32]}},
    )
    counter = [seed]
    obs, info = env.reset(seed=seed)
    curve = []
    for _ in range(updates):
        obs, info, mean_return = rollout_and_learn(agent, env, obs, info, counter)
        curve.append(mean_return)
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=5)
    args = p.parse_args()
    for i, ret in enumerate(train(args.updates)):
        print(f"update {i}: mean episode return {ret:.3f}")


if __name__ == "__main__":
    main()
