"""Stable-Baselines3 PPO through SuperSuit: the seeding gap handled (a seeded run is
reproducible), the learning curve recorded, and the model usable as a `Policy`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.common import split_tasks
from algorithms.evaluate import evaluate
from algorithms.heuristics import make_protocol
from algorithms.sb3 import SB3Config, SB3Policy, make_vec_env, train_sb3
from deliberation_env.observation import ObservationLayout


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks: extra threads only contend with the other test worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(seed: int = 0) -> SB3Config:
    # 4 envs x 3 agents x 32 rounds = 384 agent-steps per rollout, 8 rollouts.
    return SB3Config(
        profile="toy", num_envs=4, n_steps=32, batch_size=128, total_timesteps=3000, seed=seed
    )


@pytest.fixture(scope="module")
def two_runs():
    torch.set_num_threads(1)
    return train_sb3(small(seed=3)), train_sb3(small(seed=3))


def test_make_vec_env_is_seeded():
    def trajectory(seed):
        env = make_vec_env(2, seed=seed, profile="toy")
        out = [env.reset()]
        for _ in range(4):  # past an episode end (3 rounds): SuperSuit auto-resets
            env.step_async(np.full(env.num_envs, 1))
            out.append(env.step_wait()[0])
        env.close()
        return np.stack(out)

    first = trajectory(7)
    assert first.shape == (5, 2 * 3, ObservationLayout(4).size)
    np.testing.assert_array_equal(first, trajectory(7))
    assert not np.array_equal(first, trajectory(8))


def test_seeded_training_is_deterministic(two_runs):
    (m1, h1), (m2, h2) = two_runs
    assert h1 == h2
    assert len(h1) == 8 and h1[-1]["step"] == 3072
    assert all(0.0 <= r["team_accuracy"] <= 1.0 and r["episodes"] > 0 for r in h1)
    p1, p2 = m1.policy.state_dict(), m2.policy.state_dict()
    assert all(torch.equal(p1[k], p2[k]) for k in p1)


def test_another_seed_gives_another_run(two_runs):
    (_, h1), _ = two_runs
    _, h = train_sb3(small(seed=4))
    assert h != h1


def test_sb3_policy_acts_and_respects_masks(two_runs):
    (model, _), _ = two_runs
    policy = SB3Policy(model)
    rng = np.random.default_rng(0)
    obs = rng.random((5, 3, ObservationLayout(4).size), dtype=np.float32)
    mask = np.ones((5, 3, 3), np.int8)
    mask[0, :, 1:] = 0  # env 0: only PERSIST allowed
    for deterministic in (True, False):
        actions = policy.act(obs, mask, deterministic=deterministic)
        assert actions.shape == (5, 3) and actions.dtype == np.int64
        assert set(np.unique(actions)) <= {0, 1, 2}
        assert (actions[0] == 0).all()


def test_sb3_policy_runs_in_the_evaluation_harness(two_runs):
    (model, _), _ = two_runs
    cfg = small()
    _, eval_tasks = split_tasks(cfg)
    (run,) = evaluate(SB3Policy(model), cfg.env_config(), eval_tasks, seeds=(0,), episodes=64)
    assert 0.0 <= run["team_accuracy"] <= 1.0


@pytest.mark.slow
def test_sb3_beats_random_on_toy():
    cfg = SB3Config(profile="toy", total_timesteps=20_000, seed=0)
    model, history = train_sb3(cfg)
    _, eval_tasks = split_tasks(cfg)

    def accuracy(policy):
        runs = evaluate(policy, cfg.env_config(), eval_tasks, seeds=(0,), episodes=2000)
        return runs[0]["team_accuracy"]

    assert accuracy(SB3Policy(model)) > accuracy(make_protocol("random")) + 0.03
