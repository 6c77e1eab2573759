"""Hindsight counterfactuals, the oracle and the heuristic protocols, on the real env.

Counterfactuals are checked against twin envs stepped through the public API (a vector
env reset with the same per-env seeds replays the same episode), the protocols' rules
against the hidden state the observation was built from, and hindsight labels on scripted
solutions where the right label is obvious.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scripted_backend import TASKS, W1, W2, R, Say, ScriptedBackend, X

from algorithms.evaluate import evaluate
from algorithms.heuristics import (
    PROTOCOLS,
    Features,
    applicable_protocols,
    make_protocol,
    register_protocol,
)
from algorithms.policy import Policy
from deliberation_env import Action, EnvConfig, VectorDeliberationEnv, voting
from deliberation_env.counterfactual import (
    best_joint_actions,
    counterfactual_rewards,
    hindsight_labels,
    hindsight_targets,
    joint_action_table,
)

P, F, C = int(Action.PERSIST), int(Action.REFINE), int(Action.CONCEDE)
SIM = EnvConfig(profile="llama3.1-8b/gsm8k", tasks="arithmetic:300", num_agents=3)


class RoundScripted(ScriptedBackend):
    """`ScriptedBackend` whose REFINE result is picked by the env's round rather than a
    per-env counter, so scratch copies of a state (other env indices) replay it."""

    def refine_batch(self, view):
        for env, agent in zip(view.env, view.agent):
            self._position[int(env), int(agent)] = int(view.state.round[env])
        return super().refine_batch(view)


def random_history(num_envs: int, rounds: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 3, (num_envs, SIM.num_agents)) for _ in range(rounds)]


def sim_env(num_envs: int, seed, history: int | list[np.ndarray] = 0, **kwargs):
    """A simulated vector env reset with `seed`, then stepped with `history` (a list of
    action arrays, or a number of rounds of seeded random actions)."""
    env = VectorDeliberationEnv(num_envs, SIM, autoreset=False, **kwargs)
    obs, infos = env.reset(seed=seed)
    if isinstance(history, int):
        history = random_history(num_envs, history)
    for actions in history:
        obs, _, _, _, infos = env.step(actions)
    return env, obs, infos


def scripted_env(initial, refines, num_envs: int = 2, **kwargs):
    backend = RoundScripted(initial, refines)
    env = VectorDeliberationEnv(
        num_envs, autoreset=False, backend=backend, tasks=TASKS, num_agents=len(initial), **kwargs
    )
    obs, infos = env.reset(seed=0)
    return env, obs, infos


# --------------------------------------------------------------------------- hindsight
@pytest.mark.parametrize(
    ("history", "kwargs"),
    [(0, {}), (1, {"token_cost": 0.5}), (2, {"tie_break": "random", "vote": "weighted"})],
)
def test_counterfactual_rewards_equal_a_twin_env_stepped_with_each_alternative(history, kwargs):
    B, N, seed = 12, 3, 5
    env, _, _ = sim_env(B, seed, history, **kwargs)
    actions = np.random.default_rng(1).integers(0, 3, (B, N))
    cf = counterfactual_rewards(env, actions)
    assert cf.shape == (B, N, 3)

    # Twin: copy k = (b, i, a) replays env b's episode, then agent i plays a.
    K = N * 3
    replay = [np.repeat(h, K, axis=0) for h in random_history(B, history)]
    twin, _, _ = sim_env(B * K, np.repeat(seed + np.arange(B), K), replay, **kwargs)
    alt = np.repeat(actions, K, axis=0).reshape(B, N, 3, N)
    for i in range(N):
        alt[:, i, :, i] = np.arange(3)
    _, rewards, _, _, _ = twin.step(alt.reshape(-1, N))
    rewards = rewards.reshape(B, N, 3, N)
    expected = np.stack([rewards[:, i, :, i] for i in range(N)], axis=1)
    np.testing.assert_array_equal(cf.astype(np.float32), expected)
    assert np.unique(expected).size > 2  # the test sees gains, losses and zeros


def test_counterfactual_of_the_played_action_is_the_reward_and_the_env_is_untouched():
    env, _, _ = sim_env(64, 11, history=1, token_cost=0.2)
    twin, _, _ = sim_env(64, 11, history=1, token_cost=0.2)  # never asked a counterfactual
    actions = np.random.default_rng(3).integers(0, 3, (64, 3))
    before, keys = env.solution_arrays(), env.episode_keys
    cf = counterfactual_rewards(env, actions)
    for name, values in env.solution_arrays().items():
        np.testing.assert_array_equal(values, before[name], err_msg=name)
    np.testing.assert_array_equal(env.episode_keys, keys)
    out, twin_out = env.step(actions), twin.step(actions)
    for x, y in zip(out[:4], twin_out[:4], strict=True):
        np.testing.assert_array_equal(x, y)
    for key in ("correct", "changed", "rounds", "episode_tokens", "episode_actions", "tokens"):
        np.testing.assert_array_equal(out[4][key], twin_out[4][key], err_msg=key)
    played = np.take_along_axis(cf, actions[..., None], -1)[..., 0]
    np.testing.assert_array_equal(played.astype(np.float32), out[1])


def test_counterfactual_rewards_are_zero_for_frozen_envs():
    env, _, _ = sim_env(8, 0)
    active = np.arange(8) % 2 == 0
    cf = counterfactual_rewards(env, np.full((8, 3), F), active)
    assert not cf[~active].any()


def test_best_joint_actions_match_brute_force_over_all_joint_actions():
    B, N, seed = 16, 3, 21
    env, _, infos = sim_env(B, seed, history=1, token_cost=0.1)
    best = best_joint_actions(env)

    table = joint_action_table(N)
    K = len(table)
    assert K == 27 and (table[0] == P).all()
    replay = [np.repeat(h, K, axis=0) for h in random_history(B, 1)]
    twin, _, _ = sim_env(B * K, np.repeat(seed + np.arange(B), K), replay, token_cost=0.1)
    _, _, _, _, info = twin.step(np.tile(table, (B, 1)))
    team = info["team_correct"].reshape(B, K).astype(int)
    n_correct = info["correct"].sum(-1).reshape(B, K)
    tokens = info["tokens"].sum(-1).reshape(B, K)
    masks = infos["action_mask"]
    for b in range(B):
        allowed = [k for k in range(K) if masks[b, np.arange(N), table[k]].all()]
        # Lexicographic: team correct, agents correct, fewest tokens, lowest index.
        k_best = min(allowed, key=lambda k: (-team[b, k], -n_correct[b, k], tokens[b, k], k))
        np.testing.assert_array_equal(best[b], table[k_best], err_msg=f"env {b}")
        assert team[b, k_best] == team[b].max()
    assert len({tuple(a) for a in best}) > 1  # not a constant answer
    np.testing.assert_array_equal(best_joint_actions(env, max_copies=3 * K), best)


def test_best_joint_actions_leave_inactive_envs_persisting():
    env, _, _ = sim_env(6, 2)
    active = np.array([True, False, True, False, False, True])
    best = best_joint_actions(env, active)
    assert (best[~active] == P).all()
    np.testing.assert_array_equal(best[active], best_joint_actions(env)[active])
    assert (best_joint_actions(env, np.zeros(6, bool)) == P).all()


def test_hindsight_label_concede_for_a_wrong_agent_whose_peers_agree_on_the_right_answer():
    # agent_0 wrong (W1), agents 1 and 2 right. REFINE keeps agent_0 wrong, breaks agent_1,
    # leaves agent_2 unchanged.
    env, _, _ = scripted_env(
        [Say(W1, conf=0.5), Say(R, conf=0.75), Say(R, conf=0.875)],
        {0: [Say(W1)], 1: [Say(W2)], 2: [Say(R, conf=0.875)]},
    )
    actions = np.full((2, 3), P)
    cf = counterfactual_rewards(env, actions)
    # agent_0: CONCEDE makes it right (+1 local; the team is right either way).
    np.testing.assert_array_equal(cf[:, 0], [[0, 0, 1]] * 2)
    # agent_1: REFINE breaks it (-1); CONCEDE copies agent_2's R (= PERSIST).
    np.testing.assert_array_equal(cf[:, 1], [[0, -1, 0]] * 2)
    np.testing.assert_array_equal(cf[:, 2], [[0, 0, 0]] * 2)
    # Ties go to the cheapest action: PERSIST, then CONCEDE, then REFINE.
    np.testing.assert_array_equal(hindsight_labels(env, actions), [[C, P, P]] * 2)


def test_hindsight_label_refine_when_only_a_revision_finds_the_answer():
    # Everyone wrong; agents 1 and 2 agree on W2. agent_0's revision finds R.
    env, _, _ = scripted_env(
        [Say(W1, conf=0.5), Say(W2, conf=0.5), Say(W2, conf=0.75)],
        {0: [Say(R)], 1: [Say(W2)], 2: [Say(W2, conf=0.75)]},
    )
    labels = hindsight_labels(env, np.full((2, 3), P))
    np.testing.assert_array_equal(labels, [[F, P, P]] * 2)


@pytest.mark.parametrize("samples", [2, 8])
def test_hindsight_labels_with_a_key_independent_refine_keep_the_single_draw_and_ties(samples):
    # RoundScripted's REFINE does not depend on the episode key: every sample is the same
    # draw, the expectation equals it, and exact ties still go PERSIST, CONCEDE, REFINE.
    env, _, _ = scripted_env(
        [Say(W1, conf=0.5), Say(R, conf=0.75), Say(R, conf=0.875)],
        {0: [Say(W1)], 1: [Say(W2)], 2: [Say(R, conf=0.875)]},
    )
    actions = np.full((2, 3), P)
    np.testing.assert_array_equal(
        counterfactual_rewards(env, actions, samples=samples), counterfactual_rewards(env, actions)
    )
    np.testing.assert_array_equal(hindsight_labels(env, actions, samples=samples), [[C, P, P]] * 2)


def test_hindsight_labels_never_pick_a_masked_concede():
    # Peers of agent_0 have no parsed answer: its CONCEDE is masked (and equals PERSIST).
    env, _, infos = scripted_env([Say(R), Say(X), Say(X)], {0: [Say(W1)], 1: [Say(X)], 2: [Say(X)]})
    assert infos["action_mask"][0, 0, C] == 0 and infos["action_mask"][0, 1, C] == 1
    actions = np.full((2, 3), P)
    cf = counterfactual_rewards(env, actions)
    np.testing.assert_array_equal(cf[:, 0, C], cf[:, 0, P])
    # The unparsed agents gain by conceding to agent_0's right answer.
    np.testing.assert_array_equal(hindsight_labels(env, actions), [[P, C, C]] * 2)


def test_hindsight_labels_take_the_best_allowed_reward_preferring_cheap_actions():
    env, _, infos = sim_env(256, 7, history=1)
    actions = np.random.default_rng(5).integers(0, 3, (256, 3))
    cf = counterfactual_rewards(env, actions)
    labels = hindsight_labels(env, actions)
    masked = np.where(infos["action_mask"] > 0, cf, -np.inf)
    best = masked.max(-1)
    np.testing.assert_array_equal(np.take_along_axis(cf, labels[..., None], -1)[..., 0], best)
    assert (np.take_along_axis(infos["action_mask"], labels[..., None], -1) > 0).all()
    assert (labels[cf[..., P] == best] == P).all()
    concede = (cf[..., C] == best) & (cf[..., P] < best) & (infos["action_mask"][..., C] > 0)
    assert concede.any() and (labels[concede] == C).all()  # CONCEDE before REFINE on ties
    refine_only = (cf[..., F] == best) & (cf[..., P] < best) & (cf[..., C] < best)
    assert (labels[refine_only] == F).all()
    assert set(np.unique(labels)) == {P, F, C}


def test_counterfactuals_follow_the_envs_own_episode_end():
    # stop_on_consensus ends some episodes early; without autoreset they stay frozen. The
    # counterfactuals read `env.active` by default, so they agree with what the env pays.
    env, _, infos = sim_env(64, 3, stop_on_consensus=True, max_rounds=3)
    for _ in range(2):
        _, _, _, _, infos = env.step(np.full((64, 3), C))
        if not env.active.all():
            break
    active = env.active
    assert active.any() and not active.all()
    np.testing.assert_array_equal(active, infos["active"])
    actions = np.random.default_rng(4).integers(0, 3, (64, 3))
    cf = counterfactual_rewards(env, actions)
    np.testing.assert_array_equal(cf, counterfactual_rewards(env, actions, active))
    assert not cf[~active].any()
    labels, informative = hindsight_targets(env, actions)
    np.testing.assert_array_equal(labels, hindsight_labels(env, actions))
    assert not informative[~active].any()
    best = best_joint_actions(env)
    assert (best[~active] == P).all()
    oracle = make_protocol("oracle")
    oracle.bind(env)
    np.testing.assert_array_equal(oracle.act(None, infos["action_mask"]), best)
    _, rewards, _, _, _ = env.step(actions)
    played = np.take_along_axis(cf, actions[..., None], -1)[..., 0]
    np.testing.assert_array_equal(played.astype(np.float32), rewards)


def test_counterfactuals_need_a_vector_env_and_a_matching_active_mask():
    import deliberation_env

    with pytest.raises(TypeError, match=r"need a VectorDeliberationEnv, got DeliberationEnv"):
        counterfactual_rewards(deliberation_env.parallel_env(), np.zeros((1, 3), np.int64))
    env, _, _ = sim_env(4, 0)
    with pytest.raises(ValueError, match=r"active must have shape \(4,\), got \(3,\)"):
        best_joint_actions(env, np.ones(3, bool))


# --------------------------------------------------------------------------- protocols
@pytest.fixture(scope="module")
def varied_states():
    """Observations, masks and the hidden state behind them, over rounds 0-2 of random play.

    The hidden state comes from the env's public accessors and the actions played, never
    from the observation the protocols read."""
    env, obs, infos = sim_env(400, 30)
    rng = np.random.default_rng(2)
    last_action = np.full((400, 3), -1)
    changed = np.zeros((400, 3), bool)
    states = []
    for _ in range(3):
        s = SimpleNamespace(**env.solution_arrays(), last_action=last_action, changed=changed)
        winner = voting.plurality(voting.agreement(s.answer), s.self_confidence, "confidence")
        in_plurality = voting.holds(voting.agreement(s.answer), winner)
        states.append((obs, infos["action_mask"], s, in_plurality))
        last_action = rng.integers(0, 3, (400, 3))
        obs, _, _, _, infos = env.step(last_action)
        changed = infos["changed"]
    return states


def _peer_max(x: np.ndarray) -> np.ndarray:
    N = x.shape[1]
    return np.stack([np.delete(x, i, axis=1).max(1) for i in range(N)], axis=1)


def _expected(name: str, s, in_plurality: np.ndarray) -> np.ndarray:
    same = voting.agreement(s.answer)
    peers_agree = same.sum(-1) - np.diagonal(same, axis1=1, axis2=2)
    conf = s.self_confidence
    if name == "concede_to_plurality":
        return np.where(in_plurality, P, C)
    if name == "confidence_threshold":
        return np.where(conf >= np.float32(0.9), P, np.where(_peer_max(conf) > conf, C, F))
    if name == "refine_minority":
        return np.where(peers_agree > 0, P, F)
    if name == "progressive_hint":
        first = s.last_action < 0
        keep = (s.last_action != F) | ~s.changed
        return np.where(first | ~keep, F, P)
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name", ["concede_to_plurality", "confidence_threshold", "refine_minority", "progressive_hint"]
)
def test_protocol_follows_its_rule_on_real_observations(name, varied_states):
    protocol = make_protocol(name)
    seen = set()
    for obs, mask, state, in_plurality in varied_states:
        expected = _expected(name, state, in_plurality)
        expected = np.where(
            np.take_along_axis(mask, expected[..., None], -1)[..., 0] > 0, expected, P
        )
        actions = protocol.act(obs, mask)
        assert actions.dtype == np.int64 and actions.shape == obs.shape[:2]
        np.testing.assert_array_equal(actions, expected)
        seen |= set(np.unique(actions).tolist())
    assert len(seen) >= 2  # the rule was exercised both ways


def test_progressive_hint_refines_first_then_stops_once_an_answer_holds():
    # agent_0's revision changes its answer, then repeats it; agent_1's never changes.
    env, obs, infos = scripted_env(
        [Say(W1), Say(R), Say(W2)],
        {0: [Say(W2), Say(W2), Say(W2)], 1: [Say(R)] * 3, 2: [Say(R), Say(W1), Say(W1)]},
        num_envs=1,
    )
    php = make_protocol("progressive_hint")
    played = []
    while True:
        actions = php.act(obs, infos["action_mask"])
        played.append(actions[0].tolist())
        obs, _, done, _, infos = env.step(actions)
        if done.all():
            break
    assert played == [[F, F, F], [F, P, F], [P, P, F]]


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("debate", F),
        ("reconcile", F),
        ("always_persist", P),
        ("self_consistency", P),
        ("single", P),
    ],
)
def test_constant_protocols(name, action, varied_states):
    obs, mask, _, _ = varied_states[1]
    assert (make_protocol(name).act(obs, mask) == action).all()


def test_single_runs_one_agent_and_reconcile_a_weighted_vote():
    class Spy:
        def __init__(self, inner):
            self.inner, self.env_overrides, self.envs = inner, inner.env_overrides, []

        def bind(self, env):
            self.envs.append(env)

        def act(self, obs, mask, deterministic=False):
            return self.inner.act(obs, mask, deterministic)

    single = Spy(make_protocol("single"))
    run = evaluate(single, SIM, seeds=(0,), episodes=50)[0]
    assert single.envs[0].num_agents == 1 and run["num_agents"] == 1
    assert run["agent_accuracy"] == run["team_accuracy"]
    reconcile = Spy(make_protocol("reconcile"))
    evaluate(reconcile, SIM, seeds=(0,), episodes=20)
    assert reconcile.envs[0].config.vote == "weighted"

    # One confident right agent against two unsure ones agreeing on W1: the weighted
    # vote (0.875 > 0.25 + 0.25) picks R, the plurality W1. Same actions, same answers.
    def script():
        return EnvConfig(
            backend=RoundScripted(
                [Say(R, conf=0.875), Say(W1, conf=0.25), Say(W1, conf=0.25)],
                {0: [Say(R, conf=0.875)], 1: [Say(W1, conf=0.25)], 2: [Say(W1, conf=0.25)]},
            ),
            max_rounds=1,
        )

    weighted = evaluate(make_protocol("reconcile"), script(), TASKS, seeds=(0,), episodes=4)[0]
    plurality = evaluate(make_protocol("debate"), script(), TASKS, seeds=(0,), episodes=4)[0]
    assert weighted["team_accuracy"] == 1.0 and plurality["team_accuracy"] == 0.0
    assert weighted["agent_accuracy"] == plurality["agent_accuracy"]


def test_random_protocol_plays_allowed_actions_uniformly_and_reproducibly():
    rng = np.random.default_rng(0)
    mask = (rng.random((2000, 3, 3)) < 0.7).astype(np.int8)
    mask[..., P] = 1
    obs = np.zeros((2000, 3, 1), np.float32)  # unread: random ignores the observation
    protocol = make_protocol("random", seed=4)
    actions = protocol.act(obs, mask)
    assert (np.take_along_axis(mask, actions[..., None], -1) > 0).all()
    full = mask.all(-1)
    shares = np.bincount(actions[full], minlength=3) / full.sum()
    np.testing.assert_allclose(shares, 1 / 3, atol=0.03)

    env, obs, infos = sim_env(32, 0)
    a, b = make_protocol("random", seed=4), make_protocol("random", seed=4)
    a.bind(env)
    b.bind(env)
    np.testing.assert_array_equal(
        a.act(obs, infos["action_mask"]), b.act(obs, infos["action_mask"])
    )
    c = make_protocol("random", seed=5)
    c.bind(env)
    assert (c.act(obs, infos["action_mask"]) != a.act(obs, infos["action_mask"])).any()


def test_oracle_plays_the_best_joint_actions_and_needs_bind():
    oracle = make_protocol("oracle")
    env, obs, infos = sim_env(40, 8)
    with pytest.raises(RuntimeError, match="bind"):
        oracle.act(obs, infos["action_mask"])
    oracle.bind(env)
    np.testing.assert_array_equal(oracle.act(obs, infos["action_mask"]), best_joint_actions(env))


def test_oracle_beats_every_protocol_on_the_same_questions():
    seeds, episodes = (0, 1), 300
    results = {
        name: evaluate(make_protocol(name), SIM, seeds=seeds, episodes=episodes)
        for name in applicable_protocols(SIM)
    }
    oracle = [r["team_accuracy"] for r in results["oracle"]]
    assert all(a <= 1.0 for a in oracle)
    for name, runs in results.items():
        for seed, run, best in zip(seeds, runs, oracle):
            assert best >= run["team_accuracy"], f"{name}, seed {seed}"
    # The oracle is strictly better than the plain vote (it fixes some wrong teams).
    assert np.mean(oracle) > np.mean([r["team_accuracy"] for r in results["always_persist"]])


# --------------------------------------------------------------------------- registry
def test_registry_builds_every_protocol_and_names_the_valid_ones():
    expected = {
        "single", "self_consistency", "debate", "always_persist", "concede_to_plurality",
        "confidence_threshold", "reconcile", "progressive_hint", "refine_minority", "random",
        "oracle", "verifier_threshold",
    }  # fmt: skip
    assert expected <= set(PROTOCOLS)
    for name in PROTOCOLS:
        protocol = make_protocol(name)
        assert isinstance(protocol, Policy) and protocol.name == name
        assert type(protocol).__doc__
    for name in expected - {"random", "oracle"}:  # protocols from papers cite them
        assert "arXiv" in type(make_protocol(name)).__doc__, name
    assert make_protocol("confidence_threshold", threshold=0.5).threshold == 0.5
    with pytest.raises(ValueError, match="valid protocols: .*debate"):
        make_protocol("delphi")
    with pytest.raises(ValueError, match="already registered"):
        register_protocol("debate", PROTOCOLS["debate"])
    with pytest.raises(ValueError, match="threshold"):
        make_protocol("confidence_threshold", threshold=1.5)


def test_features_reject_observations_of_another_layout():
    with pytest.raises(ValueError, match="observation size"):
        Features(np.zeros((2, 3, 5), np.float32))


# --------------------------------------------------------------------------- verifier rule
VERIFIED = EnvConfig(profile="llama3.1-8b/gsm8k/verifier", tasks="arithmetic:300")


def test_verifier_threshold_rule_reads_the_verifier_scores():
    env = VectorDeliberationEnv(64, VERIFIED, autoreset=False, concede_rule="most_verified")
    obs, infos = env.reset(seed=3)
    protocol = make_protocol("verifier_threshold", threshold=0.8)
    protocol.bind(env)
    actions = protocol.act(obs, infos["action_mask"])
    score = env.core.state.verifier_score
    for b in range(64):
        for i in range(3):
            peers = [score[b, (i + k) % 3] for k in (1, 2)]
            if score[b, i] >= np.float32(0.8):
                want = P
            elif max(peers) > score[b, i] and infos["action_mask"][b, i, C]:
                want = C
            elif max(peers) > score[b, i]:
                want = P  # masked CONCEDE
            else:
                want = F
            assert actions[b, i] == want, (b, i)


def test_verifier_threshold_concedes_to_the_best_scored_peer():
    env = VectorDeliberationEnv(200, VERIFIED, autoreset=False, concede_rule="most_verified")
    env.reset(seed=0)
    before = {k: v.copy() for k, v in env.solution_arrays().items()}
    env.step(np.full((200, 3), C))
    after = env.solution_arrays()
    parsed = before["answer"] >= 0
    valid = ~np.eye(3, dtype=bool) & parsed[:, None, :]  # CONCEDE copies parsed peers only
    best = np.argmax(np.where(valid, before["verifier_score"][:, None, :], -1), -1)
    rows = np.arange(200)[:, None]
    # CONCEDE copies the best-scored peer, unless it already shares my answer (= PERSIST).
    moves = valid.any(-1) & ((before["answer"][rows, best] != before["answer"]) | ~parsed)
    want = np.where(moves, before["verifier_score"][rows, best], before["verifier_score"])
    assert moves.mean() > 0.1
    np.testing.assert_array_equal(after["verifier_score"], want)


def test_verifier_threshold_refuses_an_env_without_a_verifier():
    env, obs, infos = sim_env(4, 0)
    protocol = make_protocol("verifier_threshold")
    protocol.bind(env)
    with pytest.raises(ValueError, match="needs an env with a verifier"):
        protocol.act(obs, infos["action_mask"])
    with pytest.raises(ValueError, match="most_verified.*needs a backend with a verifier"):
        evaluate(protocol, SIM, seeds=(0,), episodes=4)
    assert "verifier_threshold" not in applicable_protocols(SIM)
    assert "verifier_threshold" in applicable_protocols(VERIFIED)
    assert "verifier_threshold" in applicable_protocols(VectorDeliberationEnv(2, VERIFIED))


def test_verifier_threshold_beats_the_vote_with_a_verifier():
    vote, verified = (
        np.mean(
            [
                r["team_accuracy"]
                for r in evaluate(make_protocol(n), VERIFIED, seeds=(0, 1), episodes=1500)
            ]
        )
        for n in ("always_persist", "verifier_threshold")
    )
    assert verified > vote + 0.01


def test_features_take_the_env_layout_and_infer_it_otherwise():
    env = VectorDeliberationEnv(2, VERIFIED)
    obs, _ = env.reset(seed=0)
    assert Features(obs).layout == env.layout == Features(obs, env.layout).layout
    assert "verifier" in env.layout.groups
    np.testing.assert_array_equal(
        Features(obs)["own.verifier_score"], env.core.state.verifier_score
    )
