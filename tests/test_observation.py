"""The observation layout entry by entry, on scripted solutions worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scripted_backend import TASKS, W1, R, Say, ScriptedBackend, X

import deliberation_env
from deliberation_env import Action
from deliberation_env.observation import (
    AGENT_FEATURES,
    OWN_FEATURES,
    PEER_FEATURES,
    SUMMARY_FEATURES,
    ObservationLayout,
    agent_features,
    build_observations,
)

P, F, C = Action.PERSIST, Action.REFINE, Action.CONCEDE
LAYOUT = ObservationLayout(4)

INITIAL = [
    Say(R, conf=0.75, judge=0.25, steps=3, operators=5),
    Say(W1, conf=0.5, judge=0.5, steps=10, operators=20),
    Say(R, conf=0.25, judge=0.75, logprob=0.5, steps=30, operators=50),  # clipped to 1
    Say(X, conf=0.125, judge=0.375, steps=3, operators=5),
]
REFINED_1 = Say(R, conf=0.625, judge=0.5, steps=4, operators=6)


def expected(values: dict[str, float]) -> np.ndarray:
    """A flat observation from named entries; every entry not named is 0."""
    out = np.zeros(LAYOUT.size, np.float32)
    for name, value in values.items():
        out[LAYOUT.index(name)] = value
    return out


def block(prefix: str, **values: float) -> dict[str, float]:
    return {f"{prefix}.{k}": v for k, v in values.items()}


@pytest.fixture
def env():
    env = deliberation_env.parallel_env(
        num_agents=4, max_rounds=2, backend=ScriptedBackend(INITIAL, {1: [REFINED_1]}), tasks=TASKS
    )
    return env


def test_layout_tables():
    names = LAYOUT.names()
    assert len(names) == len(set(names)) == LAYOUT.size
    assert LAYOUT.size == LAYOUT.peers.stop
    assert LAYOUT.state_size == 5 * (LAYOUT.own.stop + 1)
    assert names[LAYOUT.own][0] == "own.support"
    for p in range(4):
        for feature, _ in LAYOUT.agent_features:
            assert f"peer{p}.{feature}" in names
            assert f"own.{feature}" in names
    assert not any("verifier" in n for n in names)  # an optional group, off by default


def test_optional_group_appends_at_the_end_of_each_block():
    base, ver = LAYOUT, ObservationLayout(4, frozenset({"verifier"}))
    assert ver == ObservationLayout(4, {"verifier"}) and hash(ver) != hash(base)
    assert ver.size == base.size + 1 + 2 + 4 * 1
    assert ver.state_size == 5 * (ver.own.stop + 1)
    names = ver.names()
    # Base entries keep their order; group entries close their block.
    assert [n for n in names if "verifier" not in n] == base.names()
    assert names[ver.own.stop - 1] == "own.verifier_score"
    assert names[ver.summary][-2:] == [
        "summary.peer_verifier_score_mean",
        "summary.peer_verifier_score_max",
    ]
    for p in range(4):
        assert names[ver.peer(p)][-1] == f"peer{p}.verifier_score"
    assert [f.name for f in AGENT_FEATURES if f.group is None] == [
        f.name for f in base.agent_features
    ]
    with pytest.raises(ValueError, match="optional observation group"):
        base.index("own.verifier_score")
    with pytest.raises(ValueError, match="unknown observation group"):
        ObservationLayout(4, frozenset({"nope"}))


@pytest.mark.parametrize("groups", [frozenset(), frozenset({"verifier"})])
@pytest.mark.parametrize("max_peers", [0, 1, 4, 7])
def test_infer_recovers_the_layout_from_its_size(max_peers, groups):
    layout = ObservationLayout(max_peers, groups)
    assert ObservationLayout.infer(layout.size) == layout


def test_infer_refuses_a_size_no_layout_has():
    with pytest.raises(ValueError, match="fits 0"):
        ObservationLayout.infer(LAYOUT.size + 1)


def test_initial_observation_by_hand(env):
    obs, _ = env.reset(seed=0)
    # Answers (R, W1, R, X). Agent 0 shares R with agent 2: support 2/4; parsed answers
    # {R, W1}: distinct 2/4; R has 2 votes: agent 0 is in the plurality.
    # Peers of agent 0 in cyclic order: agent 1, agent 2, agent 3.
    agent0 = {
        **block("own", support=0.5, distinct=0.5, in_plurality=1.0, round=0.0),
        **block("own", self_confidence=0.75, judge_confidence=0.25, steps=3 / 20),
        **block("own", operators=5 / 40, parsed=1.0),
        "summary.peer_agree": 1 / 3,
        "summary.peer_self_confidence_mean": (0.5 + 0.25 + 0.125) / 3,
        "summary.peer_self_confidence_max": 0.5,
        "summary.peer_judge_confidence_mean": (0.5 + 0.75 + 0.375) / 3,
        "summary.peer_judge_confidence_max": 0.75,
        "summary.num_agents": 4 / 5,
        **block("peer0", present=1.0, agrees=0.0, in_plurality=0.0, self_confidence=0.5),
        **block("peer0", judge_confidence=0.5, steps=10 / 20, operators=20 / 40, parsed=1.0),
        **block("peer1", present=1.0, agrees=1.0, in_plurality=1.0, self_confidence=0.25),
        **block("peer1", judge_confidence=0.75, logprob_confidence=0.5, has_logprob=1.0),
        **block("peer1", steps=1.0, operators=1.0, parsed=1.0),
        **block("peer2", present=1.0, agrees=0.0, in_plurality=0.0, self_confidence=0.125),
        **block("peer2", judge_confidence=0.375, steps=3 / 20, operators=5 / 40, parsed=0.0),
        # peer3: no fifth agent, all zeros (present = 0).
    }
    np.testing.assert_allclose(obs["agent_0"], expected(agent0), atol=1e-7)

    # Agent 3 (unparsed): agrees with nobody, not in the plurality; its peers are agents
    # 0, 1, 2 in that order, of which 0 and 2 hold the team answer.
    agent3 = {
        **block("own", support=0.0, distinct=0.5, in_plurality=0.0, round=0.0),
        **block("own", self_confidence=0.125, judge_confidence=0.375, steps=3 / 20),
        **block("own", operators=5 / 40, parsed=0.0),
        "summary.peer_agree": 0.0,
        "summary.peer_self_confidence_mean": (0.75 + 0.5 + 0.25) / 3,
        "summary.peer_self_confidence_max": 0.75,
        "summary.peer_judge_confidence_mean": (0.25 + 0.5 + 0.75) / 3,
        "summary.peer_judge_confidence_max": 0.75,
        "summary.num_agents": 4 / 5,
        **block("peer0", present=1.0, in_plurality=1.0, self_confidence=0.75),
        **block("peer0", judge_confidence=0.25, steps=3 / 20, operators=5 / 40, parsed=1.0),
        **block("peer1", present=1.0, in_plurality=0.0, self_confidence=0.5),
        **block("peer1", judge_confidence=0.5, steps=10 / 20, operators=20 / 40, parsed=1.0),
        **block("peer2", present=1.0, in_plurality=1.0, self_confidence=0.25),
        **block("peer2", judge_confidence=0.75, logprob_confidence=0.5, has_logprob=1.0),
        **block("peer2", steps=1.0, operators=1.0, parsed=1.0),
    }
    np.testing.assert_allclose(obs["agent_3"], expected(agent3), atol=1e-7)


def test_observation_after_a_round_by_hand(env):
    env.reset(seed=0)
    obs, _, _, _, infos = env.step({"agent_0": P, "agent_1": F, "agent_2": P, "agent_3": C})
    # Agent 1 refines W1 -> R; agent 3 concedes: its peers hold R twice (a0 .75, a2 .25)
    # and W1 once, so it copies agent 0's solution. Everyone holds R now.
    assert [infos[a]["answer"] for a in env.possible_agents] == ["42"] * 4
    agent0 = {
        **block("own", support=1.0, distinct=0.25, in_plurality=1.0, round=0.5),
        **block("own", self_confidence=0.75, judge_confidence=0.25, steps=3 / 20),
        **block("own", operators=5 / 40, parsed=1.0, changed=0.0, last_persist=1.0),
        "summary.peer_agree": 1.0,
        "summary.peer_self_confidence_mean": (0.625 + 0.25 + 0.75) / 3,
        "summary.peer_self_confidence_max": 0.75,
        "summary.peer_judge_confidence_mean": (0.5 + 0.75 + 0.25) / 3,
        "summary.peer_judge_confidence_max": 0.75,
        "summary.peer_changed": 2 / 3,  # agents 1 and 3
        "summary.peer_last_persist": 1 / 3,
        "summary.peer_last_refine": 1 / 3,
        "summary.peer_last_concede": 1 / 3,
        "summary.num_agents": 4 / 5,
        **block("peer0", present=1.0, agrees=1.0, in_plurality=1.0, self_confidence=0.625),
        **block("peer0", judge_confidence=0.5, steps=4 / 20, operators=6 / 40, parsed=1.0),
        **block("peer0", changed=1.0, last_refine=1.0),
        **block("peer1", present=1.0, agrees=1.0, in_plurality=1.0, self_confidence=0.25),
        **block("peer1", judge_confidence=0.75, logprob_confidence=0.5, has_logprob=1.0),
        **block("peer1", steps=1.0, operators=1.0, parsed=1.0, last_persist=1.0),
        **block("peer2", present=1.0, agrees=1.0, in_plurality=1.0, self_confidence=0.75),
        **block("peer2", judge_confidence=0.25, steps=3 / 20, operators=5 / 40, parsed=1.0),
        **block("peer2", changed=1.0, last_concede=1.0),
    }
    np.testing.assert_allclose(obs["agent_0"], expected(agent0), atol=1e-7)


def test_state_stacks_own_blocks_with_a_presence_flag(env):
    obs, _ = env.reset(seed=0)
    state = env.state().reshape(5, -1)
    for k, agent in enumerate(env.possible_agents):
        assert state[k, 0] == 1.0
        np.testing.assert_array_equal(state[k, 1:], obs[agent][LAYOUT.own])
    np.testing.assert_array_equal(state[4], 0.0)


def test_dict_mode_carries_the_same_observation_and_the_mask():
    flat = deliberation_env.parallel_env(
        num_agents=3, backend=ScriptedBackend([Say(X), Say(X), Say(R)]), tasks=TASKS
    )
    nested = deliberation_env.parallel_env(
        num_agents=3,
        backend=ScriptedBackend([Say(X), Say(X), Say(R)]),
        tasks=TASKS,
        obs_mode="dict",
    )
    a, _ = flat.reset(seed=0)
    b, infos = nested.reset(seed=0)
    for agent in flat.possible_agents:
        np.testing.assert_array_equal(b[agent]["observation"], a[agent])
        np.testing.assert_array_equal(b[agent]["action_mask"], infos[agent]["action_mask"])
        assert b[agent]["action_mask"].dtype == np.int8
    # Agent 2's peers are both unparsed: nothing to concede to.
    assert b["agent_2"]["action_mask"].tolist() == [1, 1, 0]


def test_summary_reductions_name_peer_features():
    peer_names = {f.name for f in PEER_FEATURES}
    for f in SUMMARY_FEATURES:
        assert (f.reduce is None) == (f.of is None), f.name
        assert f.of is None or f.of in peer_names, f.name
    for table in (OWN_FEATURES, SUMMARY_FEATURES, PEER_FEATURES):
        assert len({f.name for f in table}) == len(table)
    name, description = OWN_FEATURES[0]  # the tables still unpack as (name, description)
    assert (name, description) == (OWN_FEATURES[0].name, OWN_FEATURES[0].description)


def reference_observation(
    a: dict, same, in_plurality, round_frac, b: int, i: int, max_peers, groups=frozenset()
):
    """One agent's observation entry by entry, by name, with plain Python loops."""
    N = same.shape[1]
    layout = ObservationLayout(max_peers, groups)
    verifier = "verifier" in groups
    out = np.zeros(layout.size)

    def agent(j: int) -> dict[str, float]:
        lp = a["logprob_confidence"][b, j]
        last = a["last_action"][b, j]
        return {
            "self_confidence": a["self_confidence"][b, j],
            "judge_confidence": a["judge_confidence"][b, j],
            "logprob_confidence": 0.0 if np.isnan(lp) else lp,
            "has_logprob": float(not np.isnan(lp)),
            "steps": min(a["steps"][b, j] / 20, 1.0),
            "operators": min(a["operators"][b, j] / 40, 1.0),
            "parsed": float(a["parsed"][b, j]),
            "changed": float(a["changed"][b, j]),
            "last_persist": float(last == 0),
            "last_refine": float(last == 1),
            "last_concede": float(last == 2),
        } | (
            {"verifier_score": np.nan_to_num(a["verifier_score"][b, j], nan=0.0)}
            if verifier
            else {}
        )

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    holders = [sum(same[b, k, j] for j in range(N)) for k in range(N)]
    own = {
        "support": holders[i] / N,
        "distinct": sum(1 / h for h in holders if h > 0) / N,
        "in_plurality": float(in_plurality[b, i]),
        "round": round_frac[b],
        **agent(i),
    }
    for key, value in own.items():
        out[layout.index(f"own.{key}")] = value
    peers = [(i + p) % N for p in range(1, N)]
    rows = []
    for p, j in enumerate(peers):
        row = {
            "present": 1.0,
            "agrees": float(same[b, i, j]),
            "in_plurality": float(in_plurality[b, j]),
            **agent(j),
        }
        rows.append(row)
        for key, value in row.items():
            out[layout.index(f"peer{p}.{key}")] = value
    if rows:
        summary: dict[str, float] = {
            "peer_agree": mean([r["agrees"] for r in rows]),
            "peer_self_confidence_mean": mean([r["self_confidence"] for r in rows]),
            "peer_self_confidence_max": max(r["self_confidence"] for r in rows),
            "peer_judge_confidence_mean": mean([r["judge_confidence"] for r in rows]),
            "peer_judge_confidence_max": max(r["judge_confidence"] for r in rows),
            "peer_changed": mean([r["changed"] for r in rows]),
            "peer_last_persist": mean([r["last_persist"] for r in rows]),
            "peer_last_refine": mean([r["last_refine"] for r in rows]),
            "peer_last_concede": mean([r["last_concede"] for r in rows]),
        }
        if verifier:
            summary["peer_verifier_score_mean"] = mean([r["verifier_score"] for r in rows])
            summary["peer_verifier_score_max"] = max(r["verifier_score"] for r in rows)
        for key, value in summary.items():
            out[layout.index(f"summary.{key}")] = value
    out[layout.index("summary.num_agents")] = N / (max_peers + 1)
    return out


@pytest.mark.parametrize("groups", [frozenset(), frozenset({"verifier"})])
@pytest.mark.parametrize(
    ("num_agents", "max_peers"), [(1, 0), (1, 4), (2, 1), (3, 4), (5, 4), (4, 6)]
)
def test_build_observations_matches_a_by_name_reference(num_agents, max_peers, groups):
    rng = np.random.default_rng(num_agents * 10 + max_peers)
    B, N = 6, num_agents
    answer = rng.integers(-1, 3, (B, N))
    parsed = answer >= 0
    a = {
        "self_confidence": rng.random((B, N)).astype(np.float32),
        "judge_confidence": rng.random((B, N)).astype(np.float32),
        "logprob_confidence": np.where(rng.random((B, N)) < 0.5, np.nan, rng.random((B, N))),
        "steps": rng.integers(0, 40, (B, N)).astype(np.float32),
        "operators": rng.integers(0, 80, (B, N)).astype(np.float32),
        "parsed": parsed,
        "changed": rng.random((B, N)) < 0.4,
        "last_action": rng.integers(-1, 3, (B, N)).astype(np.int8),
    }
    a["logprob_confidence"] = a["logprob_confidence"].astype(np.float32)
    score = np.where(rng.random((B, N)) < 0.2, np.nan, rng.random((B, N)))
    a["verifier_score"] = score.astype(np.float32)
    same = (answer[:, :, None] == answer[:, None, :]) & parsed[:, :, None] & parsed[:, None, :]
    in_plurality = rng.random((B, N)) < 0.5
    round_frac = rng.integers(0, 4, B) / 3
    feats = agent_features(**a, groups=groups)
    obs = build_observations(feats, same, in_plurality, round_frac, max_peers, groups)
    assert obs.shape == (B, N, ObservationLayout(max_peers, groups).size)
    for b in range(B):
        for i in range(N):
            want = reference_observation(a, same, in_plurality, round_frac, b, i, max_peers, groups)
            np.testing.assert_allclose(obs[b, i], want, rtol=1e-6, atol=1e-7)


def test_build_observations_refuses_too_few_peer_slots():
    feats = np.zeros((len(LAYOUT.agent_features), 1, 3), np.float32)
    same = np.eye(3, dtype=bool)[None]
    with pytest.raises(ValueError, match="max_peers >= 2"):
        build_observations(feats, same, np.zeros((1, 3), bool), np.zeros(1), max_peers=1)
