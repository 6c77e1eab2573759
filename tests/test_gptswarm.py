"""GPTSwarm edge optimisation (`algorithms.topology_methods.gptswarm`): the Bernoulli
log-probabilities by hand, the edge probabilities move toward the edges that help when
one agent is much stronger, evaluation uses the distribution's mode, training is
reproducible, and the registered method runs through `run_compare`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from strong_agent import NAME as STRONG

from algorithms.evaluate import evaluate
from algorithms.topology_methods.common import EdgeDistribution
from algorithms.topology_methods.gptswarm import GPTSwarmConfig, train
from deliberation_env import EnvConfig, load_tasks
from experiments.compare import run_compare

ENV = EnvConfig(tasks="arithmetic:400")
SMALL = {"updates": 3, "questions_per_update": 8, "group_size": 4}


def test_log_probability_by_hand():
    dist = EdgeDistribution(3, 2, share_rounds=False)
    with torch.no_grad():
        dist.logits[:] = torch.tensor(np.log(0.8 / 0.2), dtype=torch.float32)
    graphs, log_prob = dist.sample(5, torch.Generator().manual_seed(0))
    assert graphs.shape == (5, 2, 3, 3) and not graphs[:, :, [0, 1, 2], [0, 1, 2]].any()
    k = graphs.sum(axis=(1, 2, 3))  # 12 potential edges per graph
    expected = k * np.log(0.8) + (12 - k) * np.log(0.2)
    np.testing.assert_allclose(log_prob.detach().numpy(), expected, rtol=1e-5)
    shared = EdgeDistribution(3, 4, share_rounds=True)
    graphs, log_prob = shared.sample(3, torch.Generator().manual_seed(1))
    assert (graphs == graphs[:, :1]).all()  # one graph for every round
    np.testing.assert_allclose(log_prob.detach().numpy(), 6 * np.log(0.5), rtol=1e-6)


def test_probabilities_move_toward_the_strong_agent():
    env = EnvConfig(backend=STRONG, tasks="arithmetic:200")
    cfg = GPTSwarmConfig(env=env, updates=30, questions_per_update=8, group_size=4)
    policy, history = train(cfg, progress=False)
    p = np.asarray(policy.info["edge_probabilities"])[0]
    # Reading agent 0 fixes a weak agent; reading the other weak agent can break it.
    # The edges into agent 0 rise far from 0.5; an edge between weak agents matters
    # less (once one weak agent is right the team is), so it drifts, and stays below.
    assert min(p[1, 0], p[2, 0]) > 0.75
    assert min(p[1, 0], p[2, 0]) > max(p[1, 2], p[2, 1]) + 0.1
    assert policy.graph[:, 1, 0].all() and policy.graph[:, 2, 0].all()
    early = np.mean([h["team_accuracy"] for h in history[:5]])
    late = np.mean([h["team_accuracy"] for h in history[-5:]])
    assert late > early


def test_evaluation_uses_the_mode_and_is_reproducible():
    policy, history = train(GPTSwarmConfig(env=ENV, **SMALL), progress=False)
    probs = np.asarray(policy.info["edge_probabilities"])
    np.testing.assert_array_equal(policy.graph, probs > 0.5)
    again, history2 = train(GPTSwarmConfig(env=ENV, **SMALL), progress=False)
    assert history == history2 and (again.graph == policy.graph).all()
    other, _ = train(GPTSwarmConfig(env=ENV, seed=1, **SMALL), progress=False)
    assert not np.allclose(other.info["edge_probabilities"], probs)
    tasks = load_tasks("arithmetic:400")[:50]
    run = evaluate(policy, ENV, tasks, (0, 1), 50)
    assert [r["refine_share"] for r in run] == [1.0, 1.0]
    assert all(r["tokens_per_question"] > 0 for r in run)


def test_config_checks():
    with pytest.raises(ValueError, match="threshold must lie strictly between 0 and 1"):
        GPTSwarmConfig(threshold=1.0)
    with pytest.raises(ValueError, match="baseline_momentum"):
        GPTSwarmConfig(baseline_momentum=1.0)
    with pytest.raises(ValueError, match="updates"):
        GPTSwarmConfig(updates=0)


def test_runs_through_run_compare(tmp_path):
    results = run_compare(budget="tiny", out=tmp_path, tasks="arithmetic:400",
                          methods=("gptswarm",), progress=False)  # fmt: skip
    row = results["methods"]["gptswarm"]
    assert row["episodes"] == 40 and row["tokens_per_question"]["mean"] > 0
    assert row["refine_share"]["mean"] == 1.0
    assert (tmp_path / "gptswarm" / "policy.json").exists()
    curves = (tmp_path / "learning_curves.json").read_text()
    assert '"gptswarm"' in curves
