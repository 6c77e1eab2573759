"""SFT hindsight labels of best expected return: REFINE averaged over K sampled outcomes.

K = 1 is checked against the single-draw labelling of earlier versions (kept verbatim
below), K > 1 against twin envs whose episode key is replaced by each sample's key, and
the tie preference against a backend whose REFINE outcome does not depend on the key.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from algorithms import sft
from algorithms.heuristics import make_protocol
from deliberation_env import Action, EnvConfig, VectorDeliberationEnv
from deliberation_env.counterfactual import (
    LABEL_PREFERENCE,
    counterfactual_rewards,
    hindsight_targets,
    refine_sample_keys,
)

P, F, C = int(Action.PERSIST), int(Action.REFINE), int(Action.CONCEDE)
PROFILES = ["llama3.1-8b/gsm8k", "toy"]


def _single_draw_targets(env, actions, active):
    """The labelling before K samples (verbatim): one scratch step per alternative."""
    core = env.core
    B, N = core.num_envs, core.num_agents
    joint = np.repeat(actions, N * 3, axis=0).reshape(B, N, 3, N)
    agent = np.arange(N)
    joint[:, agent, :, agent] = np.arange(3)
    envs = np.repeat(np.arange(B), N * 3)
    scratch = core.spawn(len(envs))
    scratch.set_rows(np.arange(len(envs)), core.get_rows(envs))
    result = scratch.step(joint.reshape(-1, N))
    rewards = result.rewards.reshape(B, N, 3, N)[:, agent, :, agent].transpose(1, 0, 2)
    rewards = rewards * active[:, None, None]
    rewards = np.where(core.action_masks() > 0, rewards, -np.inf)
    order = np.array(LABEL_PREFERENCE, np.int64)
    labels = order[np.argmax(rewards[..., order], axis=-1)]
    informative = ((rewards < rewards.max(-1, keepdims=True)) & np.isfinite(rewards)).any(-1)
    return labels, informative


def _episodes(profile: str, num_envs: int = 128, seed: int = 3):
    """(env, actions, active) at every round of seeded random play, the env stepped on."""
    env = VectorDeliberationEnv(
        num_envs, config=EnvConfig(profile=profile, tasks="arithmetic:300"), autoreset=False
    )
    obs, info = env.reset(seed=seed)
    behaviour = make_protocol("random", seed=seed)
    active = np.ones(num_envs, bool)
    while active.any():
        actions = behaviour.act(obs, info["action_mask"])
        yield env, actions, active
        obs, _, _, _, info = env.step(actions)
        active = info["active"]


@pytest.mark.parametrize("profile", PROFILES)
def test_one_sample_reproduces_the_single_draw_labels_exactly(profile):
    for env, actions, active in _episodes(profile):
        labels, informative = hindsight_targets(env, actions, active, samples=1)
        ref_labels, ref_informative = _single_draw_targets(env, actions, active)
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(informative, ref_informative)


def test_sample_keys_start_at_the_episode_key_and_are_deterministic():
    keys = np.array([1, 2, 3], np.uint64)
    got = refine_sample_keys(keys, 4)
    assert got.shape == (4, 3) and got.dtype == np.uint64
    np.testing.assert_array_equal(got[0], keys)
    np.testing.assert_array_equal(got, refine_sample_keys(keys, 4))
    assert len(np.unique(got)) == got.size
    with pytest.raises(ValueError, match="samples must be >= 1"):
        refine_sample_keys(keys, 0)


@pytest.mark.parametrize("profile", PROFILES)
def test_k_samples_average_twin_envs_under_each_sample_key(profile):
    K = 4
    for r, (env, actions, active) in enumerate(_episodes(profile, num_envs=64)):
        got = counterfactual_rewards(env, actions, active, samples=K)
        keys = refine_sample_keys(env.core.state.key, K)
        draws = []
        for k in range(K):
            twin = copy.deepcopy(env)
            twin.core.state.key = keys[k].copy()
            draws.append(counterfactual_rewards(twin, actions, active, samples=1))
        draws = np.stack(draws)
        # Alternatives with a REFINE in their joint action are averaged; others exact.
        N = actions.shape[1]
        joint = np.repeat(actions[:, None, None, :], N, 1).repeat(3, 2)
        joint[:, np.arange(N), :, np.arange(N)] = np.arange(3)
        noisy = (joint == F).any(-1)
        np.testing.assert_allclose(got[noisy], draws.mean(0)[noisy], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(got[~noisy], draws[0][~noisy])
        if r == 1:
            break


def test_expected_labels_prefer_refine_more_often_and_stay_reproducible():
    counts = {}
    for K in (1, 8):
        cfg = sft.SFTConfig(
            env=EnvConfig(profile="toy", tasks="arithmetic:300"), episodes=256, refine_samples=K
        )
        data = sft.collect_dataset(cfg, _tasks(cfg), seed=0)
        again = sft.collect_dataset(cfg, _tasks(cfg), seed=0)
        np.testing.assert_array_equal(data.labels, again.labels)
        counts[K] = np.bincount(data.labels[data.informative], minlength=3)
    assert counts[8][F] > counts[1][F]


def _tasks(cfg):
    from algorithms.common import split_tasks

    return split_tasks(cfg)[0]
