"""Stable-Baselines3 PPO, through SuperSuit and through `BatchedVecEnv`: the seeding gap
handled (a seeded run is reproducible), both paths the same run, the learning curve
recorded, and the model usable as a `Policy`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.common import TRAIN_TASKS, split_tasks
from algorithms.evaluate import evaluate
from algorithms.heuristics import make_protocol
from algorithms.sb3 import BatchedVecEnv, SB3Config, SB3Policy, make_vec_env, train_sb3
from deliberation_env import EnvConfig
from deliberation_env.observation import ObservationLayout

TOY = EnvConfig(profile="toy", tasks=TRAIN_TASKS)
"""The trainers' default env on the `toy` profile."""


def small(seed: int = 0, vec_env: str = "batched") -> SB3Config:
    # 4 envs x 3 agents x 32 rounds = 384 agent-steps per rollout, 8 rollouts.
    return SB3Config(
        env=TOY, num_envs=4, n_steps=32, batch_size=128, total_timesteps=3000, seed=seed,
        vec_env=vec_env,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture(scope="module")
def two_runs():
    return train_sb3(small(seed=3), progress=False), train_sb3(small(seed=3), progress=False)


def test_make_vec_env_is_seeded():
    def trajectory(seed):
        env = make_vec_env(2, seed=seed, config=EnvConfig(profile="toy"))
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


def test_batched_vec_env_steps_as_supersuits():
    """Slot b * N + i is agent i of env b in both; episode ends, terminal observations and
    the next episode's first observation agree step for step."""
    config = EnvConfig(profile="toy")
    batched, supersuit = BatchedVecEnv(3, config), make_vec_env(3, config=config)
    for env in (batched, supersuit):
        env.seed(11)
    np.testing.assert_array_equal(batched.reset(), supersuit.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(7):  # two episode ends (3 rounds each) and a step beyond
        actions = rng.integers(0, 2, batched.num_envs)  # PERSIST / REFINE: never masked
        out = []
        for env in (batched, supersuit):
            env.step_async(actions)
            out.append(env.step_wait())
        (obs_a, rew_a, done_a, info_a), (obs_b, rew_b, done_b, info_b) = out
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_allclose(rew_a, rew_b)
        np.testing.assert_array_equal(done_a, done_b)
        for k in np.flatnonzero(done_a):
            ended += 1
            np.testing.assert_array_equal(
                info_a[k]["terminal_observation"], info_b[k]["terminal_observation"]
            )
            assert info_a[k]["team_correct"] == info_b[k]["team_correct"]
    assert ended == 2 * batched.num_envs
    masks = batched.env_method("action_masks")
    assert len(masks) == 9 and all(m.shape == (3,) and m.dtype == bool for m in masks)
    with pytest.raises(AttributeError, match="only 'action_masks'"):
        batched.env_method("render")
    batched.close()
    supersuit.close()


def test_both_vec_envs_train_the_same_run(two_runs):
    (_, h1), _ = two_runs
    policy, h = train_sb3(small(seed=3, vec_env="supersuit"), progress=False)
    assert h == h1
    with pytest.raises(ValueError, match="vec_env must be 'batched' or 'supersuit'"):
        small(vec_env="gym")


def test_seeded_training_is_deterministic(two_runs):
    (a, h1), (b, h2) = two_runs
    assert h1 == h2
    assert len(h1) == 8 and h1[-1]["step"] == 3072
    assert [r["agent_steps"] for r in h1] == [384] * 8
    assert all(0.0 <= r["team_accuracy"] <= 1.0 and r["episodes"] > 0 for r in h1)
    p1, p2 = a.model.policy.state_dict(), b.model.policy.state_dict()
    assert all(torch.equal(p1[k], p2[k]) for k in p1)


def test_another_seed_gives_another_run(two_runs):
    (_, h1), _ = two_runs
    _, h = train_sb3(small(seed=4), progress=False)
    assert h != h1


def test_sb3_policy_acts_and_respects_masks(two_runs):
    (policy, _), _ = two_runs
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
    (policy, _), _ = two_runs
    cfg = small()
    _, eval_tasks = split_tasks(cfg)
    (run,) = evaluate(policy, cfg.env, eval_tasks, seeds=(0,), episodes=64)
    assert 0.0 <= run["team_accuracy"] <= 1.0


def test_out_writes_a_loadable_policy(tmp_path):
    cfg = SB3Config(env=TOY, num_envs=2, n_steps=8, batch_size=48, total_timesteps=48)
    cfg.out = str(tmp_path)
    policy, history = train_sb3(cfg, progress=False)
    loaded = SB3Policy.load(tmp_path / "policy.zip")
    obs = np.random.default_rng(0).random((4, 3, ObservationLayout(4).size), dtype=np.float32)
    mask = np.ones((4, 3, 3), np.int8)
    np.testing.assert_array_equal(loaded.act(obs, mask, True), policy.act(obs, mask, True))
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == len(history)


@pytest.mark.slow
def test_sb3_beats_random_on_toy():
    cfg = SB3Config(env=TOY, total_timesteps=20_000, seed=0)
    policy, _ = train_sb3(cfg, progress=False)
    _, eval_tasks = split_tasks(cfg)

    def accuracy(policy):
        runs = evaluate(policy, cfg.env, eval_tasks, seeds=(0,), episodes=2000)
        return runs[0]["team_accuracy"]

    assert accuracy(policy) > accuracy(make_protocol("random")) + 0.03
