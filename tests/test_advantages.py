"""The advantage maths (`algorithms.advantages`): SoftRankPO, GRPO, the group baseline,
RLOO and GAE against values worked out by hand, GRPO against TRL's formula, and the
properties each method promises (hypothesis); the reward transforms and the reward check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtri
from scipy.stats import rankdata

from algorithms import advantages
from algorithms.advantages import (
    REWARD_TRANSFORMS,
    check_rewards,
    explained_variance,
    gae,
    group_baseline,
    grpo,
    normal_scores,
    reward_transform,
    rloo,
    softrank,
)

# ---------------------------------------------------------------- hand-worked SoftRankPO


def test_three_distinct_rewards():
    # ranks 1, 2, 3 -> Hazen positions 1/6, 1/2, 5/6 -> normal scores -s, 0, s with
    # s = ndtri(5/6) = 0.967421566; mean 0; population std = s * sqrt(2/3);
    # so q / std = (-sqrt(3/2), 0, sqrt(3/2)) whatever s is; divided by tau = 0.8.
    s = 1.224744871391589  # sqrt(1.5)
    np.testing.assert_allclose(softrank([10.0, 20.0, 30.0], tau=1.0), [-s, 0.0, s])
    np.testing.assert_allclose(softrank([30.0, 10.0, 20.0], tau=0.8), [s / 0.8, -s / 0.8, 0.0])


def test_ties_share_mid_ranks():
    # [0, 0, 1, 1]: mid-ranks 1.5, 1.5, 3.5, 3.5 -> positions 1/4, 1/4, 3/4, 3/4 ->
    # scores -0.6745, -0.6745, +0.6745, +0.6745; std 0.6745 -> -1, -1, 1, 1.
    np.testing.assert_allclose(softrank([0, 0, 1, 1], tau=1.0), [-1, -1, 1, 1])
    # [5, 1, 1]: mid-ranks 3, 1.5, 1.5 -> positions 5/6, 1/3, 1/3 -> scores
    # 0.967422, -0.430727, -0.430727; mean 0.035323 -> centred 0.932099, -0.466050 (x2);
    # std 0.659094 -> sqrt(2), -1/sqrt(2), -1/sqrt(2).
    q = np.array([ndtri(5 / 6), ndtri(1 / 3), ndtri(1 / 3)])
    assert q[0] == pytest.approx(0.967422, abs=1e-6) and q[1] == pytest.approx(-0.430727, abs=1e-6)
    r2 = math.sqrt(2)
    np.testing.assert_allclose(softrank([5, 1, 1], tau=1.0), [r2, -1 / r2, -1 / r2])


def test_group_of_two_and_one():
    np.testing.assert_allclose(softrank([3.0, 7.0], tau=0.8), [-1.25, 1.25])
    np.testing.assert_array_equal(softrank([4.2], tau=0.8), [0.0])


def test_all_tied_group_is_zero():
    np.testing.assert_array_equal(softrank([2.0, 2.0, 2.0, 2.0]), np.zeros(4))


def test_batched_groups_are_independent():
    rewards = np.array([[[10.0, 20.0, 30.0], [1.0, 1.0, 1.0]], [[0.0, 5.0, -5.0], [3.0, 3.0, 9.0]]])
    out = softrank(rewards)
    for idx in np.ndindex(rewards.shape[:-1]):
        np.testing.assert_allclose(out[idx], softrank(rewards[idx]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rewards_are_rejected(bad):
    with pytest.raises(ValueError, match="finite"):
        softrank([1.0, bad, 2.0])
    with pytest.raises(ValueError, match="finite"):
        grpo([1.0, bad, 2.0])


def test_bad_tau_is_rejected():
    with pytest.raises(ValueError, match="tau"):
        softrank([1.0, 2.0], tau=0.0)


# ---------------------------------------------------------------- properties (hypothesis)

# Rewards on a grid of quarters: distinct values stay distinct under every transform.
groups = st.lists(st.integers(-40, 40).map(lambda k: k / 4), min_size=1, max_size=16)
transforms = {
    "x*0.1": lambda x: x * 0.1,
    "x*10": lambda x: x * 10,
    "exp": np.exp,
    "cube": lambda x: x**3,
    "shift": lambda x: x + 100.0,
}


@settings(max_examples=200, deadline=None)
@given(groups, st.sampled_from(sorted(transforms)), st.sampled_from([0.4, 0.8, 2.0]))
def test_softrank_invariant_to_increasing_transforms(rewards, name, tau):
    x = np.array(rewards)
    np.testing.assert_array_equal(softrank(x, tau), softrank(transforms[name](x), tau))


@settings(max_examples=200, deadline=None)
@given(groups, st.sampled_from([0.4, 0.8, 2.0]))
def test_softrank_zero_mean_and_bounded(rewards, tau):
    x = np.array(rewards)
    G = len(x)
    adv = softrank(x, tau)
    assert abs(adv.mean()) < 1e-9
    if np.ptp(x) == 0:
        np.testing.assert_array_equal(adv, 0.0)
        return
    # The bound |A| <= ndtri(1 - 0.5/G) / (std * tau) of docs/design_decisions.md, std the
    # group's std of the normal scores, holds exactly without ties (the scores are then
    # symmetric, mean 0).
    # Ties move the mean of the scores off 0 and the bound widens by that mean.
    scores = ndtri((rankdata(x) - 0.5) / G)
    slack = 0.0 if len(set(rewards)) == G else abs(scores.mean())
    assert np.abs(adv).max() <= (ndtri(1 - 0.5 / G) + slack) / (scores.std() * tau) + 1e-9
    # The group is standardised: unit std before the temperature.
    assert adv.std() * tau == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(groups)
def test_softrank_order_preserving(rewards):
    x = np.array(rewards)
    adv = softrank(x)
    for i in range(len(x)):
        for j in range(len(x)):
            if x[i] < x[j]:
                assert adv[i] < adv[j]
            if x[i] == x[j]:
                assert adv[i] == adv[j]


def test_grpo_is_not_scale_invariant_but_softrank_is():
    x = np.array([0.0, 1.0, 3.0, 10.0])
    assert not np.allclose(grpo(x, "none"), grpo(np.exp(x), "none"))
    np.testing.assert_array_equal(softrank(x), softrank(np.exp(x)))


# ---------------------------------------------------------------- GRPO = TRL's formula


def trl_grpo(rewards: torch.Tensor, G: int, scale_rewards: str) -> torch.Tensor:
    """TRL's GRPOTrainer advantage computation, transcribed (rewards flat, groups of G)."""
    mean = rewards.view(-1, G).mean(dim=1).repeat_interleave(G, dim=0)
    advantages = rewards - mean
    if scale_rewards == "group":
        std = rewards.view(-1, G).std(dim=1).repeat_interleave(G, dim=0)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        return advantages
    return advantages / (std + 1e-4)


def test_grpo_hand_worked():
    # [1, 2, 3]: mean 2, unbiased std 1 -> (-1, 0, 1) / 1.0001.
    np.testing.assert_allclose(grpo([1.0, 2.0, 3.0]), np.array([-1, 0, 1]) / 1.0001)
    np.testing.assert_allclose(grpo([1.0, 2.0, 3.0], "none"), [-1, 0, 1])
    np.testing.assert_array_equal(grpo([5.0, 5.0]), [0.0, 0.0])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_matches_trl(scale):
    rng = np.random.default_rng(0)
    G = 8
    rewards = rng.normal(size=(5, G)).round(1)
    ours = grpo(rewards, scale)
    theirs = trl_grpo(torch.as_tensor(rewards.ravel()), G, scale).numpy().reshape(5, G)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_grpo_rejects_unknown_scaling():
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo([1.0, 2.0], "std")


def test_reinforce_baseline():
    np.testing.assert_allclose(group_baseline([[1.0, 2.0, 6.0]]), [[-2.0, -1.0, 3.0]])


@settings(max_examples=100, deadline=None)
@given(groups, st.sampled_from(["group", "batch", "none"]))
def test_grpo_and_baseline_have_zero_mean_per_group(rewards, scale):
    x = np.array(rewards)
    assert abs(grpo(x, scale).mean()) < 1e-9
    assert abs(group_baseline(x).mean()) < 1e-9


# ---------------------------------------------------------------- RLOO


def test_rloo_hand_worked():
    # [0, 1, 1, 3]: baselines (1+1+3)/3, (0+1+3)/3, (0+1+3)/3, (0+1+1)/3
    np.testing.assert_allclose(rloo([0.0, 1.0, 1.0, 3.0]), [-5 / 3, -1 / 3, -1 / 3, 7 / 3])
    # G = 2: each rollout against the other one.
    np.testing.assert_allclose(rloo([2.0, 5.0]), [-3.0, 3.0])
    np.testing.assert_array_equal(rloo([4.0, 4.0, 4.0]), [0.0, 0.0, 0.0])


def test_rloo_needs_two_rollouts():
    with pytest.raises(ValueError, match="group_size >= 2"):
        rloo([1.0])
    with pytest.raises(ValueError, match="finite"):
        rloo([1.0, np.nan])


@settings(max_examples=100, deadline=None)
@given(groups.filter(lambda g: len(g) >= 2), st.floats(-50, 50))
def test_rloo_is_the_scaled_group_baseline(rewards, shift):
    # leave-one-out = G / (G - 1) times the mean-centred reward: zero mean, and a constant
    # added to every reward changes nothing.
    x = np.array(rewards)
    G = len(x)
    np.testing.assert_allclose(rloo(x), G / (G - 1) * group_baseline(x), atol=1e-9)
    np.testing.assert_allclose(rloo(x + shift), rloo(x), atol=1e-9)
    assert abs(rloo(x).mean()) < 1e-9


def test_rloo_batched_groups_are_independent():
    r = np.random.default_rng(0).normal(size=(5, 3, 8))
    np.testing.assert_allclose(rloo(r), 8 / 7 * (r - r.mean(-1, keepdims=True)))


# ---------------------------------------------------------------- the reward check


def test_check_rewards_names_the_culprit():
    with pytest.raises(ValueError, match="group axis"):
        check_rewards(1.0)
    with pytest.raises(ValueError, match=r"nan at index \(1, 0\)"):
        check_rewards([[1.0, 2.0], [np.nan, 0.0]])
    out = check_rewards([[1, 2]])
    assert out.dtype == np.float64 and out.shape == (1, 2)


# ---------------------------------------------------------------- reward transforms


def test_reward_transforms_by_hand():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(REWARD_TRANSFORMS["identity"](x), x)
    np.testing.assert_array_equal(REWARD_TRANSFORMS["x1"](x), x)
    np.testing.assert_allclose(REWARD_TRANSFORMS["x0.1"](x), [-0.1, 0.0, 0.2])
    np.testing.assert_allclose(REWARD_TRANSFORMS["x10"](x), [-10.0, 0.0, 20.0])
    np.testing.assert_allclose(REWARD_TRANSFORMS["exp"](x), [math.exp(-1), 1.0, math.exp(2)])


def test_unknown_reward_transform_lists_the_names():
    with pytest.raises(ValueError, match=r"reward_transform='log'.*'exp'"):
        reward_transform("log")


@settings(max_examples=100, deadline=None)
@given(groups, st.sampled_from(sorted(REWARD_TRANSFORMS)))
def test_reward_transforms_are_strictly_increasing(rewards, name):
    x = np.unique(rewards)  # sorted, distinct
    y = reward_transform(name)(x)
    assert (np.diff(y) > 0).all()
    # ... so SoftRankPO does not see them at all.
    np.testing.assert_array_equal(
        softrank(np.array(rewards)), softrank(y[np.searchsorted(x, rewards)])
    )


# ---------------------------------------------------------------- GAE (PPO)


def col(*xs: float) -> np.ndarray:
    """A single env, single agent trajectory ``[T, 1, 1]``."""
    return np.array(xs, np.float64)[:, None, None]


# One agent over three rounds: rewards (1, 0, 2), values (0.5, 1.0, 1.5); the value after
# the last round is 0. (gamma, lam) -> advantages, returns (= advantages + values):
GAE_BY_HAND = {
    # gamma = lam = 1: A_t = (sum of rewards from t) - V_t.
    # Returns-to-go of rewards (1, 0, 2): (3, 2, 2); minus V (0.5, 1.0, 1.5).
    "lambda_one": (1.0, 1.0, [2.5, 1.0, 0.5], [3.0, 2.0, 2.0]),
    # gamma = 0.9, lam = 0.95, so gamma * lam = 0.855.
    # delta_2 = 2 - 1.5                = 0.5
    # delta_1 = 0 + 0.9 * 1.5 - 1.0    = 0.35
    # delta_0 = 1 + 0.9 * 1.0 - 0.5    = 1.4
    # A_2 = 0.5
    # A_1 = 0.35 + 0.855 * 0.5         = 0.7775
    # A_0 = 1.4 + 0.855 * 0.7775       = 2.0647625
    # returns = A + V = (2.5647625, 1.7775, 2.0)
    "gamma_0.9_lambda_0.95": (0.9, 0.95, [2.0647625, 0.7775, 0.5], [2.5647625, 1.7775, 2.0]),
    # gamma = 1, lam = 0.5: deltas (1.5, 0.5, 0.5) as 1 + 1.0 - 0.5, 0 + 1.5 - 1.0, 2 - 1.5.
    # A_2 = 0.5; A_1 = 0.5 + 0.5 * 0.5 = 0.75; A_0 = 1.5 + 0.5 * 0.75 = 1.875.
    "lambda_half": (1.0, 0.5, [1.875, 0.75, 0.5], [2.375, 1.75, 2.0]),
    # gamma = 0: the one-step advantage r_t - V_t.
    "gamma_zero": (0.0, 0.95, [0.5, -1.0, 0.5], [1.0, 0.0, 2.0]),
}


@pytest.mark.parametrize("case", sorted(GAE_BY_HAND))
def test_gae_hand_worked(case):
    gamma, lam, expected_adv, expected_ret = GAE_BY_HAND[case]
    adv, ret = gae(col(1, 0, 2), col(0.5, 1.0, 1.5), np.ones((3, 1), bool), gamma=gamma, lam=lam)
    np.testing.assert_allclose(adv[:, 0, 0], expected_adv, atol=1e-6)
    np.testing.assert_allclose(ret[:, 0, 0], expected_ret, atol=1e-6)


def test_gae_episode_ending_early_is_terminal():
    # Env 0 plays 3 rounds; env 1 ends after round 0 (e.g. stop_on_consensus).
    # Env 1's later rows hold junk (reward 5, value 9) that must neither count nor leak.
    # Env 1, gamma = 1, lam = 0.95: the value after its last round is 0, so
    # A_0 = 1 - 0.25 = 0.75 and the return is 1.0; its inactive rows are 0.
    # Env 0, rewards (0, 0, 1) and values 0: A = (0.9025, 0.95, 1) = return.
    rewards = np.zeros((3, 2, 1))
    values = np.zeros((3, 2, 1))
    rewards[:, 0, 0] = [0, 0, 1]
    rewards[:, 1, 0] = [1, 5, 5]
    values[:, 1, 0] = [0.25, 9, 9]
    active = np.array([[True, True], [True, False], [True, False]])
    adv, ret = gae(rewards, values, active, gamma=1.0, lam=0.95)
    np.testing.assert_allclose(adv[:, 0, 0], [0.9025, 0.95, 1.0], atol=1e-6)
    np.testing.assert_allclose(ret[:, 0, 0], [0.9025, 0.95, 1.0], atol=1e-6)
    np.testing.assert_allclose(adv[:, 1, 0], [0.75, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(ret[:, 1, 0], [1.0, 0.0, 0.0], atol=1e-6)


def test_gae_agents_are_independent():
    # Two agents of one env: agent 1's numbers equal a solo run of its own trajectory.
    rewards = np.stack([col(1, 0, 2)[:, :, 0], col(0, 0, 1)[:, :, 0]], axis=-1)  # [3, 1, 2]
    values = np.stack([col(0.5, 1.0, 1.5)[:, :, 0], np.zeros((3, 1))], axis=-1)
    adv, _ = gae(rewards, values, np.ones((3, 1), bool), gamma=0.9, lam=0.95)
    np.testing.assert_allclose(adv[:, 0, 0], [2.0647625, 0.7775, 0.5], atol=1e-6)
    # agent 1: deltas (0, 0, 1); A_1 = 0.855, A_0 = 0.855^2 = 0.731025.
    np.testing.assert_allclose(adv[:, 0, 1], [0.731025, 0.855, 1.0], atol=1e-6)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"active \[T, B\]"):
        gae(np.zeros((3, 2, 3)), np.zeros((3, 2, 3)), np.ones((3, 3), bool))


trajectories = st.integers(1, 5).flatmap(
    lambda T: st.tuples(
        st.lists(st.floats(-3, 3), min_size=T, max_size=T),
        st.lists(st.floats(-3, 3), min_size=T, max_size=T),
    )
)


@settings(max_examples=100, deadline=None)
@given(trajectories, st.floats(0, 1), st.floats(0, 1))
def test_gae_matches_the_lambda_return_definition(traj, gamma, lam):
    # A_t = sum_k (gamma * lam)^k delta_{t+k}, delta_t = r_t + gamma V_{t+1} - V_t, V_T = 0.
    r, v = (np.array(x) for x in traj)
    T = len(r)
    v_next = np.append(v[1:], 0.0)
    delta = r + gamma * v_next - v
    expected = [sum((gamma * lam) ** k * delta[t + k] for k in range(T - t)) for t in range(T)]
    adv, ret = gae(col(*r), col(*v), np.ones((T, 1), bool), gamma=gamma, lam=lam)
    np.testing.assert_allclose(adv[:, 0, 0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret[:, 0, 0], np.array(expected) + v, rtol=1e-5, atol=1e-5)


def test_explained_variance():
    y = np.array([1.0, 2.0, 3.0])
    assert explained_variance(y, y) == 1.0
    assert explained_variance(np.zeros(3), y) == 0.0
    assert math.isnan(explained_variance(y, np.ones(3)))


# ---------------------------------------------------------------- old import paths


def test_old_names_are_the_same_functions():
    from algorithms import grpo as grpo_module
    from algorithms import ppo, reinforce
    from algorithms import softrankpo as srpo

    assert srpo.softrank_advantages is advantages.softrank
    assert srpo.normal_scores is normal_scores
    assert grpo_module.grpo_advantages is advantages.grpo
    assert reinforce.baseline_advantages is advantages.group_baseline
    assert ppo.gae is gae and ppo.explained_variance is explained_variance
