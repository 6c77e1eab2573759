"""AgentPrune (`algorithms.topology_methods.agentprune`): the one-shot pruning keeps exactly
the budgeted edges (the top-weighted ones), a token budget is met by the token fit, the
low-rank term is the nuclear norm worked out by hand, the pruned graph saves tokens
against the complete graph, and the registered method runs through `run_compare`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from strong_agent import NAME as STRONG

from algorithms.evaluate import evaluate
from algorithms.heuristics import make_protocol
from algorithms.topology_methods import load_policy
from algorithms.topology_methods.agentprune import (
    AgentPruneConfig,
    nuclear_norm,
    prune,
    token_fit,
    train,
)
from algorithms.topology_methods.common import EdgeDistribution, off_diagonal
from deliberation_env import EnvConfig, load_tasks
from experiments.compare import run_compare

ENV = EnvConfig(tasks="arithmetic:400")
SMALL = {"updates": 3, "questions_per_update": 8, "group_size": 4}


def _weights_ok(policy) -> None:
    """Every kept edge weighs at least as much as every pruned potential edge."""
    w = np.asarray(policy.info["edge_weights"])
    potential = off_diagonal(w.shape[1], w.shape[0])
    kept, pruned = w[policy.graph], w[potential & ~policy.graph]
    if kept.size and pruned.size:
        assert kept.min() >= pruned.max()


@pytest.mark.parametrize(("keep", "edges"), [(0.5, 9), (0.25, 4), (1.0, 18), (0.0, 0)])
def test_keeps_exactly_the_budgeted_edges(keep, edges):
    policy, history = train(AgentPruneConfig(env=ENV, keep=keep, **SMALL), progress=False)
    assert policy.edges == edges  # N=3, T=3: 18 potential edges, round(keep * 18) kept
    assert not policy.graph[:, np.arange(3), np.arange(3)].any()
    _weights_ok(policy)
    assert len(history) == SMALL["updates"]
    assert all(h["agent_steps"] > 0 and np.isfinite(h["loss"]) for h in history)


def test_share_rounds_prunes_pairs():
    policy, _ = train(AgentPruneConfig(env=ENV, keep=0.5, share_rounds=True, **SMALL),
                      progress=False)  # fmt: skip
    assert (policy.graph == policy.graph[:1]).all()  # the same pairs every round
    assert policy.edges == 3 * 3  # 3 of the 6 pairs, in each of the 3 rounds


def test_token_budget_keeps_the_top_edges_that_fit():
    full, _ = train(AgentPruneConfig(env=ENV, **SMALL), progress=False)
    a, b = full.info["tokens_intercept"], full.info["tokens_per_edge"]
    assert b > 0  # reading a peer costs prompt tokens
    budget = a + 5.5 * b
    policy, _ = train(AgentPruneConfig(env=ENV, token_budget=budget, **SMALL), progress=False)
    assert policy.edges == 5
    assert policy.info["estimated_tokens"] <= budget < policy.info["estimated_tokens"] + b
    _weights_ok(policy)


def test_prune_and_token_fit_by_hand():
    w = np.array([[[0.0, 0.9, 0.2], [0.4, 0.0, 0.4], [0.1, 0.8, 0.0]]])
    kept = prune(w, off_diagonal(3, 1), 3)
    # 0.9 and 0.8, then the tie at 0.4: the lower flat index (agent 1 reads agent 0).
    assert kept.astype(int).tolist() == [[[0, 1, 0], [1, 0, 0], [0, 1, 0]]]
    assert prune(w, off_diagonal(3, 1), 99).sum() == 6
    assert token_fit([0, 1, 2, 3], [10, 12, 14, 16]) == pytest.approx((10.0, 2.0))
    assert token_fit([2, 2], [5, 7]) == (6.0, 0.0)


def test_low_rank_penalty_is_the_nuclear_norm():
    # Every off-diagonal probability 0.5: [[0, .5, .5], ...] has eigenvalues 1, -.5, -.5,
    # so each round's nuclear norm is 2.
    dist = EdgeDistribution(3, 3, share_rounds=False)
    assert float(nuclear_norm(dist).detach()) == pytest.approx(6.0)
    _, history = train(AgentPruneConfig(env=ENV, low_rank=0.5, **SMALL), progress=False)
    assert history[0]["penalty"] == pytest.approx(3.0, rel=1e-5)
    # The regulariser alone pulls every edge down.
    dist.logits.grad = None
    nuclear_norm(dist).backward()
    assert dist.logits.grad is not None
    assert (dist.logits.grad[torch.as_tensor(off_diagonal(3, 3))] > 0).all()


def test_learns_the_edges_into_the_strong_agent():
    env = EnvConfig(backend=STRONG, tasks="arithmetic:200")
    cfg = AgentPruneConfig(env=env, updates=25, questions_per_update=8, group_size=4,
                           keep=1 / 3, share_rounds=True)  # fmt: skip
    policy, _ = train(cfg, progress=False)
    w = np.asarray(policy.info["edge_weights"])[0]
    assert min(w[1, 0], w[2, 0]) > max(w[1, 2], w[2, 1])
    # Two of the six pairs kept: both weak agents read the strong one, in every round.
    assert policy.graph[:, [1, 2], [0, 0]].all() and policy.edges == 2 * 3


def test_pruned_graph_saves_tokens_and_is_counted(tmp_path):
    policy, _ = train(AgentPruneConfig(env=ENV, keep=0.5, out=str(tmp_path), **SMALL),
                      progress=False)  # fmt: skip
    tasks = load_tasks("arithmetic:400")[:100]
    pruned = evaluate(policy, ENV, tasks, (0,), 100)[0]
    debate = evaluate(make_protocol("debate"), ENV, tasks, (0,), 100)[0]
    assert pruned["refine_share"] == 1.0  # everyone REFINEs, on the pruned graph
    assert 0 < pruned["tokens_per_question"] < debate["tokens_per_question"]
    saved = json.loads((tmp_path / "policy.json").read_text())
    assert saved["algo"] == "agentprune" and np.asarray(saved["graph"]).sum() == 9
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == SMALL["updates"]
    again = load_policy(tmp_path / "policy.json")  # the saved graph runs as trained
    assert (again.graph == policy.graph).all()
    assert evaluate(again, ENV, tasks, (0,), 100)[0] == pruned
    # `deliberate eval --policy` reads it too, from the file or its run folder.
    from algorithms.checkpoint import load_policy as load_any_policy

    for where in (tmp_path / "policy.json", tmp_path):
        assert (load_any_policy(where).graph == policy.graph).all()


def test_refuses_a_start_policy_and_bad_budgets():
    with pytest.raises(ValueError, match="no start or reference policy"):
        train(AgentPruneConfig(env=ENV, **SMALL), policy=object())
    with pytest.raises(ValueError, match="keep must lie in"):
        AgentPruneConfig(keep=1.5)
    with pytest.raises(ValueError, match="token_budget must be > 0"):
        AgentPruneConfig(token_budget=0)


def test_runs_through_run_compare(tmp_path):
    results = run_compare(budget="tiny", out=tmp_path, tasks="arithmetic:400",
                          methods=("agentprune",), progress=False)  # fmt: skip
    row = results["methods"]["agentprune"]
    assert row["episodes"] == 40
    assert (
        0
        < row["tokens_per_question"]["mean"]
        < results["methods"]["debate"]["tokens_per_question"]["mean"]
    )
    assert (tmp_path / "agentprune" / "policy.json").exists()
    assert "| agentprune |" in (tmp_path / "results.md").read_text()
