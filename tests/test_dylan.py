"""DyLAN (`algorithms.topology_methods.dylan`): agent importance propagated by hand, early
stop at consensus, the least important agent leaves the team (stops refining, is no
longer read, concedes), team selection from training keeps the strong agent, and the
registered method runs through `run_compare` with its env override."""

from __future__ import annotations

import numpy as np
import pytest
from strong_agent import NAME as STRONG

from algorithms.evaluate import evaluate
from algorithms.heuristics import make_protocol
from algorithms.topology_methods import load_policy
from algorithms.topology_methods.dylan import DyLANConfig, DyLANPolicy, propagate, train
from deliberation_env import EnvConfig, VectorDeliberationEnv, load_tasks
from deliberation_env.actions import Action
from experiments.compare import run_compare

ENV = EnvConfig(tasks="arithmetic:400")
SMALL = {"updates": 2, "questions_per_update": 8, "group_size": 4}
STRONG_ENV = EnvConfig(backend=STRONG, tasks="arithmetic:200")


def test_importance_propagation_by_hand():
    # Two agents, one round: agent 0 read agent 1 (rating 1); agent 1 read nobody (passes
    # its weight to itself). Last layer 1/2 each; layer 0: agent 0 gets nothing, agent 1
    # gets 1/2 + 1/2. Agent importance sums the layers: [0.5, 1.5].
    w = np.array([[[0.0, 1.0], [0.0, 1.0]]])
    np.testing.assert_allclose(propagate([w], [np.array([True])]), [[0.5, 1.5]])
    # Two rounds, three agents, ratings split: the totals stay one per layer.
    w1 = np.array([[[0.0, 0.5, 0.5], [1.0, 0.0, 0.0], [0.25, 0.75, 0.0]]])
    out = propagate([w1, w1], [np.array([True])] * 2)
    assert out.sum() == pytest.approx(3.0)
    # A round an env did not play (it had stopped) adds nothing.
    frozen = propagate([w1, w1], [np.array([True]), np.array([False])])
    np.testing.assert_allclose(frozen, propagate([w1], [np.array([True])]))


def test_stops_early_at_consensus():
    policy, history = train(DyLANConfig(env=ENV, **SMALL), progress=False)
    assert policy.env_overrides == {"stop_on_consensus": True}
    assert all(h["rounds_per_question"] < ENV.max_rounds for h in history)
    tasks = load_tasks("arithmetic:400")[:100]
    run = evaluate(policy, ENV, tasks, (0,), 100)[0]
    debate = evaluate(make_protocol("debate"), ENV, tasks, (0,), 100)[0]
    assert run["rounds_per_question"] < ENV.max_rounds == debate["rounds_per_question"]
    assert 0 < run["tokens_per_question"] < debate["tokens_per_question"]
    # Without early stopping every question plays all rounds.
    full, _ = train(DyLANConfig(env=ENV, early_stop=False, **SMALL), progress=False)
    assert evaluate(full, ENV, tasks, (0,), 100)[0]["rounds_per_question"] == ENV.max_rounds


def _play(policy: DyLANPolicy, env_config: EnvConfig, episodes: int = 64):
    """Drive `policy` by hand (as `evaluate` does), recording actions and graphs."""
    config = EnvConfig.build(env_config, **policy.env_overrides)
    env = VectorDeliberationEnv(episodes, config=config, autoreset=False)
    obs, infos = env.reset(seed=5)
    policy.bind(env)
    actions, graphs = [], []
    while True:
        a = policy.act(obs, infos["action_mask"])
        actions.append(a)
        graphs.append(env.topology)
        obs, _, _, _, infos = env.step(a)
        if not infos["active"].any():
            return env, actions, graphs


def test_drops_the_least_important_agent():
    policy, _ = train(DyLANConfig(env=STRONG_ENV, early_stop=False, **SMALL),
                      progress=False)  # fmt: skip
    env, actions, graphs = _play(policy, STRONG_ENV)
    N = env.num_agents
    dropped = policy.dropped
    assert (dropped.sum(1) == 1).all()  # drop=1: one agent per question
    # The dropped agent is the least important one of its question.
    assert policy.importance is not None
    np.testing.assert_allclose(policy.importance[dropped], policy.importance.min(1))
    # Ties drop the higher-index agent.
    tied = np.isclose(policy.importance[:, 1], policy.importance[:, 2]) & ~dropped[:, 0]
    assert tied.any() and dropped[tied, 2].all()
    # Round 0: everyone REFINEs on the complete graph; from select_round on the dropped
    # agent CONCEDEs (or PERSISTs where the mask forbids it) and nobody reads it.
    assert (actions[0] == Action.REFINE).all()
    for t in (1, 2):
        assert (actions[t][dropped] != Action.REFINE).all()
        assert (actions[t][~dropped] == Action.REFINE).all()
        read = graphs[t][:, t] & ~np.eye(N, dtype=bool)
        assert not (read & dropped[:, None, :]).any()
    # The strong agent's answers are adopted and confident: it is dropped least.
    counts = dropped.sum(0)
    assert counts[0] < min(counts[1], counts[2])


def test_team_selection_keeps_the_strong_agent():
    policy, history = train(DyLANConfig(env=STRONG_ENV, selection="team", **SMALL),
                            progress=False)  # fmt: skip
    team = policy.team_importance
    assert team is not None and np.argmax(team) == 0
    assert len(history) == SMALL["updates"] and len(history[0]["importance"]) == 3
    _play(policy, STRONG_ENV)
    assert not policy.dropped[:, 0].any()
    assert (policy.dropped[:, np.argmin(team)]).all()


def test_config_checks():
    with pytest.raises(ValueError, match="select_round must be >= 1"):
        DyLANConfig(select_round=0)
    DyLANConfig(select_round=0, selection="team")
    with pytest.raises(ValueError, match="no start or reference policy"):
        train(DyLANConfig(env=ENV, **SMALL), ref=object())


def test_runs_through_run_compare(tmp_path):
    results = run_compare(budget="tiny", out=tmp_path, tasks="arithmetic:400",
                          methods=("dylan",), progress=False)  # fmt: skip
    row = results["methods"]["dylan"]
    assert row["env_overrides"] == {"stop_on_consensus": True}
    assert row["episodes"] == 40 and row["tokens_per_question"]["mean"] > 0
    assert row["rounds_per_question"]["mean"] < 3
    saved = load_policy(tmp_path / "dylan" / "policy.json")
    assert isinstance(saved, DyLANPolicy) and saved.env_overrides == row["env_overrides"]
    assert saved.team_importance is not None and len(saved.team_importance) == 3
