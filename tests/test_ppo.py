"""PPO (IPPO / MAPPO): GAE against hand-worked values, smoke tests of the update, and a
learning test on the `toy` profile against the trivial protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms.common import make_policy, split_tasks
from algorithms.evaluate import evaluate
from algorithms.heuristics import make_protocol
from algorithms.policy import MetaPolicy
from algorithms.ppo import PPOConfig, explained_variance, gae, train, with_value_head
from deliberation_env.observation import ObservationLayout


def col(*xs: float) -> np.ndarray:
    """A single env, single agent trajectory ``[T, 1, 1]``."""
    return np.array(xs, np.float64)[:, None, None]


# --------------------------------------------------------------------------- gae
def test_gae_lambda_one_is_return_to_go_minus_value():
    # gamma = lam = 1: A_t = (sum of rewards from t) - V_t.
    # Returns-to-go of rewards (1, 0, 2): (3, 2, 2); minus V (0.5, 1.0, 1.5).
    adv, ret = gae(col(1, 0, 2), col(0.5, 1.0, 1.5), np.ones((3, 1), bool), gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv[:, 0, 0], [2.5, 1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(ret[:, 0, 0], [3.0, 2.0, 2.0], atol=1e-6)


def test_gae_hand_worked_gamma_and_lambda():
    # gamma = 0.9, lam = 0.95, so gamma * lam = 0.855. V after the last round is 0.
    # delta_2 = 2 - 1.5                = 0.5
    # delta_1 = 0 + 0.9 * 1.5 - 1.0    = 0.35
    # delta_0 = 1 + 0.9 * 1.0 - 0.5    = 1.4
    # A_2 = 0.5
    # A_1 = 0.35 + 0.855 * 0.5         = 0.7775
    # A_0 = 1.4 + 0.855 * 0.7775       = 2.0647625
    # returns = A + V = (2.5647625, 1.7775, 2.0)
    adv, ret = gae(col(1, 0, 2), col(0.5, 1.0, 1.5), np.ones((3, 1), bool), gamma=0.9, lam=0.95)
    np.testing.assert_allclose(adv[:, 0, 0], [2.0647625, 0.7775, 0.5], atol=1e-6)
    np.testing.assert_allclose(ret[:, 0, 0], [2.5647625, 1.7775, 2.0], atol=1e-6)


def test_gae_lambda_half():
    # gamma = 1, lam = 0.5: deltas (1.5, 0.5, 0.5) as 1 + 1.0 - 0.5, 0 + 1.5 - 1.0, 2 - 1.5.
    # A_2 = 0.5; A_1 = 0.5 + 0.5 * 0.5 = 0.75; A_0 = 1.5 + 0.5 * 0.75 = 1.875.
    adv, ret = gae(col(1, 0, 2), col(0.5, 1.0, 1.5), np.ones((3, 1), bool), gamma=1.0, lam=0.5)
    np.testing.assert_allclose(adv[:, 0, 0], [1.875, 0.75, 0.5], atol=1e-6)
    np.testing.assert_allclose(ret[:, 0, 0], [2.375, 1.75, 2.0], atol=1e-6)


def test_gae_gamma_zero_is_one_step_advantage():
    adv, ret = gae(col(1, 0, 2), col(0.5, 1.0, 1.5), np.ones((3, 1), bool), gamma=0.0, lam=0.95)
    np.testing.assert_allclose(adv[:, 0, 0], [0.5, -1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(ret[:, 0, 0], [1.0, 0.0, 2.0], atol=1e-6)


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


def test_explained_variance():
    y = np.array([1.0, 2.0, 3.0])
    assert explained_variance(y, y) == 1.0
    assert explained_variance(np.zeros(3), y) == 0.0
    assert math.isnan(explained_variance(y, np.ones(3)))


def test_config_validation():
    with pytest.raises(ValueError, match="gamma"):
        PPOConfig(gamma=1.5)
    with pytest.raises(ValueError, match="gae_lambda"):
        PPOConfig(gae_lambda=-0.1)


# --------------------------------------------------------------------------- smoke
def tiny(**kw) -> PPOConfig:
    return PPOConfig(**{"profile": "toy", "questions_per_update": 16, "updates": 1, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {"centralised_critic": False},
        {"centralised_critic": True},
        {"centralised_critic": False, "share_parameters": False},
        {"centralised_critic": True, "beta": 0.1},
    ],
    ids=["ippo", "mappo", "ippo-separate", "mappo-kl"],
)
def test_one_update_changes_parameters(kw):
    cfg = tiny(**kw)
    state = ObservationLayout(4).state_size if cfg.centralised_critic else 0
    policy = make_policy(cfg, value_head=True, critic_state_size=state)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    trained, history = train(cfg, policy=policy, progress=False)
    assert trained is policy
    after = policy.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(".value." in k for k in changed), "the value head did not train"
    assert any(".head." in k for k in changed), "the policy head did not train"
    (row,) = history
    for key in ("loss", "pg_loss", "value_loss", "entropy", "approx_kl", "clipfrac"):
        assert math.isfinite(row[key]), key
    assert "explained_variance" in row
    assert row["agent_steps"] == 16 * 3 * 3


def test_with_value_head_keeps_the_actor():
    cfg = tiny()
    sft = make_policy(cfg)  # no value head, as an SFT policy
    ppo = with_value_head(sft, critic_state_size=ObservationLayout(4).state_size)
    assert ppo.config.value_head and ppo is not sft
    obs = torch.rand(5, 3, ObservationLayout(4).size)
    torch.testing.assert_close(ppo(obs), sft(obs))
    assert ppo.value(obs, torch.rand(5, ObservationLayout(4).state_size)).shape == (5, 3)
    assert with_value_head(ppo, ObservationLayout(4).state_size) is ppo


def test_resume_continues_from_the_checkpoint(tmp_path):
    cfg = tiny(updates=2, out=str(tmp_path), checkpoint_every=1)
    train(cfg, progress=False)
    cfg.updates = 3
    policy, history = train(cfg, resume=True, progress=False)
    assert [r["update"] for r in history] == [1, 2, 3]
    assert MetaPolicy.load(tmp_path / "policy.pt").config.value_head


# --------------------------------------------------------------------------- learning
def team_accuracy(policy, cfg: PPOConfig, episodes: int = 1000) -> float:
    _, eval_tasks = split_tasks(cfg)
    (run,) = evaluate(policy, cfg.env_config(), eval_tasks, seeds=(0,), episodes=episodes)
    return run["team_accuracy"]


def test_ppo_beats_random_and_always_persist_on_toy():
    # ~30 updates of 32 questions (8.6k agent-steps), a few seconds on one core.
    # Measured (seed 0): PPO 0.82, always PERSIST 0.74, random 0.73; seeds 1-3: 0.76-0.84.
    cfg = PPOConfig(profile="toy", questions_per_update=32, updates=30, lr=1e-3, seed=0)
    policy, history = train(cfg, progress=False)
    ppo = team_accuracy(policy, cfg)
    persist = team_accuracy(make_protocol("always_persist"), cfg)
    random = team_accuracy(make_protocol("random"), cfg)
    assert ppo > max(persist, random) + 0.03, (ppo, persist, random)
    assert history[-1]["explained_variance"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("centralised_critic", [False, True], ids=["ippo", "mappo"])
def test_ppo_default_batch_beats_baselines_on_toy(centralised_critic):
    cfg = PPOConfig(profile="toy", updates=30, seed=1, centralised_critic=centralised_critic)
    policy, _ = train(cfg, progress=False)
    ppo = team_accuracy(policy, cfg, episodes=2000)
    persist = team_accuracy(make_protocol("always_persist"), cfg, episodes=2000)
    assert ppo > persist + 0.04, (ppo, persist)
