"""SoftRankPO, GRPO and REINFORCE advantages: values worked out by hand, TRL's formula,
and the properties DESIGN section 6 promises (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtri
from scipy.stats import rankdata

from algorithms.grpo import grpo_advantages
from algorithms.reinforce import baseline_advantages
from algorithms.softrankpo import softrank_advantages

# ---------------------------------------------------------------- hand-worked SoftRankPO


def test_three_distinct_rewards():
    # ranks 1, 2, 3 -> Hazen positions 1/6, 1/2, 5/6 -> normal scores -s, 0, s with
    # s = ndtri(5/6) = 0.967421566; mean 0; population std = s * sqrt(2/3);
    # so q / std = (-sqrt(3/2), 0, sqrt(3/2)) whatever s is; divided by tau = 0.8.
    s = 1.224744871391589  # sqrt(1.5)
    np.testing.assert_allclose(softrank_advantages([10.0, 20.0, 30.0], tau=1.0), [-s, 0.0, s])
    np.testing.assert_allclose(
        softrank_advantages([30.0, 10.0, 20.0], tau=0.8), [s / 0.8, -s / 0.8, 0.0]
    )


def test_ties_share_mid_ranks():
    # [0, 0, 1, 1]: mid-ranks 1.5, 1.5, 3.5, 3.5 -> positions 1/4, 1/4, 3/4, 3/4 ->
    # scores -0.6745, -0.6745, +0.6745, +0.6745; std 0.6745 -> -1, -1, 1, 1.
    np.testing.assert_allclose(softrank_advantages([0, 0, 1, 1], tau=1.0), [-1, -1, 1, 1])
    # [5, 1, 1]: mid-ranks 3, 1.5, 1.5 -> positions 5/6, 1/3, 1/3 -> scores
    # 0.967422, -0.430727, -0.430727; mean 0.035323 -> centred 0.932099, -0.466050 (x2);
    # std 0.659094 -> sqrt(2), -1/sqrt(2), -1/sqrt(2).
    q = np.array([ndtri(5 / 6), ndtri(1 / 3), ndtri(1 / 3)])
    assert q[0] == pytest.approx(0.967422, abs=1e-6) and q[1] == pytest.approx(-0.430727, abs=1e-6)
    r2 = math.sqrt(2)
    np.testing.assert_allclose(softrank_advantages([5, 1, 1], tau=1.0), [r2, -1 / r2, -1 / r2])


def test_group_of_two_and_one():
    np.testing.assert_allclose(softrank_advantages([3.0, 7.0], tau=0.8), [-1.25, 1.25])
    np.testing.assert_array_equal(softrank_advantages([4.2], tau=0.8), [0.0])


def test_all_tied_group_is_zero():
    np.testing.assert_array_equal(softrank_advantages([2.0, 2.0, 2.0, 2.0]), np.zeros(4))


def test_batched_groups_are_independent():
    rewards = np.array([[[10.0, 20.0, 30.0], [1.0, 1.0, 1.0]], [[0.0, 5.0, -5.0], [3.0, 3.0, 9.0]]])
    out = softrank_advantages(rewards)
    for idx in np.ndindex(rewards.shape[:-1]):
        np.testing.assert_allclose(out[idx], softrank_advantages(rewards[idx]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rewards_are_rejected(bad):
    with pytest.raises(ValueError, match="finite"):
        softrank_advantages([1.0, bad, 2.0])
    with pytest.raises(ValueError, match="finite"):
        grpo_advantages([1.0, bad, 2.0])


def test_bad_tau_is_rejected():
    with pytest.raises(ValueError, match="tau"):
        softrank_advantages([1.0, 2.0], tau=0.0)


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
    np.testing.assert_array_equal(
        softrank_advantages(x, tau), softrank_advantages(transforms[name](x), tau)
    )


@settings(max_examples=200, deadline=None)
@given(groups, st.sampled_from([0.4, 0.8, 2.0]))
def test_softrank_zero_mean_and_bounded(rewards, tau):
    x = np.array(rewards)
    G = len(x)
    adv = softrank_advantages(x, tau)
    assert abs(adv.mean()) < 1e-9
    if np.ptp(x) == 0:
        np.testing.assert_array_equal(adv, 0.0)
        return
    # DESIGN's bound |A| <= ndtri(1 - 0.5/G) / (std * tau), std the group's std of the
    # normal scores, holds exactly without ties (the scores are then symmetric, mean 0).
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
    adv = softrank_advantages(x)
    for i in range(len(x)):
        for j in range(len(x)):
            if x[i] < x[j]:
                assert adv[i] < adv[j]
            if x[i] == x[j]:
                assert adv[i] == adv[j]


def test_grpo_is_not_scale_invariant_but_softrank_is():
    x = np.array([0.0, 1.0, 3.0, 10.0])
    assert not np.allclose(grpo_advantages(x, "none"), grpo_advantages(np.exp(x), "none"))
    np.testing.assert_array_equal(softrank_advantages(x), softrank_advantages(np.exp(x)))


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
    np.testing.assert_allclose(grpo_advantages([1.0, 2.0, 3.0]), np.array([-1, 0, 1]) / 1.0001)
    np.testing.assert_allclose(grpo_advantages([1.0, 2.0, 3.0], "none"), [-1, 0, 1])
    np.testing.assert_array_equal(grpo_advantages([5.0, 5.0]), [0.0, 0.0])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_matches_trl(scale):
    rng = np.random.default_rng(0)
    G = 8
    rewards = rng.normal(size=(5, G)).round(1)
    ours = grpo_advantages(rewards, scale)
    theirs = trl_grpo(torch.as_tensor(rewards.ravel()), G, scale).numpy().reshape(5, G)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def test_grpo_rejects_unknown_scaling():
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo_advantages([1.0, 2.0], "std")


def test_reinforce_baseline():
    np.testing.assert_allclose(baseline_advantages([[1.0, 2.0, 6.0]]), [[-2.0, -1.0, 3.0]])
