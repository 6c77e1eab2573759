"""Hand-worked rewards, votes and CONCEDE targets on scripted solutions.

Every case drives the real env with `ScriptedBackend`, so the answers, confidences and
token counts are known, and the expected reward of every agent is derived in a comment from

    r_i = w_local * (c_i_after - c_i_before) + w_global * (C(all) - C(all \\ i)) - cost_i

where C(S) is "the plurality answer of the agents in S is correct" after the round.
Answer ids: R = gold, W1/W2/W3 = wrong answers, X = unparseable. Confidences are
dyadic fractions, so float32 stores them exactly and sums cannot tie by rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from scripted_backend import TASKS, W1, W2, R, Say, ScriptedBackend, X, answer_text

import deliberation_env
from deliberation_env import Action
from deliberation_env.observation import ObservationLayout

P, F, C = Action.PERSIST, Action.REFINE, Action.CONCEDE
LAYOUT = ObservationLayout(4)


def scripted_env(initial, refines=None, **kwargs):
    backend = ScriptedBackend(initial, refines)
    env = deliberation_env.parallel_env(
        num_agents=len(initial), backend=backend, tasks=TASKS, **kwargs
    )
    obs, infos = env.reset(seed=0)
    return env, backend, obs, infos


def play(env, *actions):
    return env.step({f"agent_{i}": int(a) for i, a in enumerate(actions)})


def column(infos, key):
    return [infos[f"agent_{i}"][key] for i in range(len(infos))]


def terms(infos, name):
    return [infos[f"agent_{i}"]["reward_terms"][name] for i in range(len(infos))]


def rewards_list(rewards):
    return [rewards[f"agent_{i}"] for i in range(len(rewards))]


def check_consensus(out, local, global_):
    """The reported terms are the hand-derived ones and the reward is their sum."""
    _, rewards, _, _, infos = out
    assert terms(infos, "local") == local
    assert terms(infos, "global") == global_
    assert terms(infos, "token_cost") == [0.0] * len(local)
    assert rewards_list(rewards) == [lo + gl for lo, gl in zip(local, global_, strict=True)]


# --- (a) REFINE to the right answer --------------------------------------------------


@pytest.mark.parametrize(
    ("new_conf", "global_"),
    [
        # After: a0=R(.75), a1=R(new_conf), a2=W1(.5).
        # C(all) = R (2 votes of 3) = 1.
        # C(all\0) = {a1 R(.25), a2 W1(.5)}: a 1-1 tie, W1 has more confidence -> 0, so g0 = 1.
        # C(all\1) = {a0 R(.75), a2 W1(.5)}: R wins the tie -> 1, so g1 = 0.
        # C(all\2) = {R, R} -> 1, so g2 = 0.
        (0.25, [1.0, 0.0, 0.0]),
        # Same, but the refined R is confident: C(all\0) = {R(.875), W1(.5)} -> R -> g0 = 0.
        (0.875, [0.0, 0.0, 0.0]),
    ],
)
def test_refine_to_right_answer(new_conf, global_):
    env, backend, _, _ = scripted_env(
        [Say(R, conf=0.75), Say(W1, conf=0.5), Say(W1, conf=0.5)],
        refines={1: [Say(R, conf=new_conf)]},
        max_rounds=1,
    )
    out = play(env, P, F, P)
    _, _, terminations, _, infos = out
    # Before (R, W1, W1), after (R, R, W1): only agent 1 changed correctness, 0 -> 1.
    check_consensus(out, local=[0.0, 1.0, 0.0], global_=global_)
    assert column(infos, "answer") == ["42", "42", "wrong1"]
    assert column(infos, "correct") == [True, True, False]
    assert column(infos, "self_confidence") == [0.75, new_conf, 0.5]
    assert all(terminations.values())
    assert infos["agent_0"]["team_answer"] == "42"
    assert infos["agent_0"]["team_correct"] is True
    # One batched REFINE call holding agent 1 only, made on the pre-round answers.
    (refine,) = backend.refine_calls()
    assert refine[1] == [(0, 1)]
    assert refine[2].tolist() == [[R, W1, W1]]


def test_persist_rounds_repeat_the_static_global_term():
    # (R .25, W1 .5, W1 .5), everyone persists for 3 rounds: nobody's correctness changes,
    # local = 0. C(all) = W1 (2 votes) = 0. C(all\0) = {W1, W1} = 0 -> g0 = 0.
    # C(all\1) = {R .25, W1 .5}: tie, W1 more confident -> 0 -> g1 = 0; same for agent 2.
    env, _, _, _ = scripted_env([Say(R, conf=0.25), Say(W1), Say(W1)])
    for _ in range(3):
        check_consensus(play(env, P, P, P), local=[0.0] * 3, global_=[0.0] * 3)
    # With agent 0 confident, C(all\1) = {R .75, W1 .5} -> R = 1 -> g1 = g2 = 0 - 1 = -1:
    # holding the wrong plurality answer costs the team a correct vote, every round.
    env, _, _, _ = scripted_env([Say(R, conf=0.75), Say(W1), Say(W1)])
    for _ in range(3):
        check_consensus(play(env, P, P, P), local=[0.0] * 3, global_=[0.0, -1.0, -1.0])


def test_weights_scale_the_two_terms():
    # Case (a) with new_conf .25: local (0, 1, 0), global (1, 0, 0), scaled by 0.5 and 2.
    env, _, _, _ = scripted_env(
        [Say(R, conf=0.75), Say(W1, conf=0.5), Say(W1, conf=0.5)],
        refines={1: [Say(R, conf=0.25)]},
        w_local=0.5,
        w_global=2.0,
    )
    out = play(env, P, F, P)
    check_consensus(out, local=[0.0, 0.5, 0.0], global_=[2.0, 0.0, 0.0])


# --- (b) CONCEDE copies the plurality peer ------------------------------------------


FOUR = [
    Say(W1, conf=0.25, judge=0.125, steps=7, operators=9, completion=111),
    Say(R, conf=0.5, judge=0.375, steps=2, operators=3, completion=222),
    Say(R, conf=0.75, judge=0.625, steps=4, operators=6, completion=333),
    Say(W2, conf=0.875, judge=0.25, steps=5, operators=8, completion=444),
]


def test_concede_copies_most_confident_holder_of_the_plurality_answer():
    env, _, _, _ = scripted_env(FOUR)
    out = play(env, C, P, P, P)
    obs, _, _, _, infos = out
    # Agent 0's peers hold R twice (a1 .5, a2 .75) and W2 once (a3 .875, the most confident
    # peer overall): the plurality answer R wins, copied from its most confident holder a2.
    assert infos["agent_0"]["answer"] == "42"
    assert infos["agent_0"]["correct"] is True
    assert infos["agent_0"]["self_confidence"] == 0.75
    own = obs["agent_0"]
    assert own[LAYOUT.index("own.self_confidence")] == 0.75
    assert own[LAYOUT.index("own.judge_confidence")] == 0.625
    assert own[LAYOUT.index("own.steps")] == pytest.approx(4 / 20)
    assert own[LAYOUT.index("own.operators")] == pytest.approx(6 / 40)
    assert own[LAYOUT.index("own.changed")] == 1.0
    assert own[LAYOUT.index("own.last_concede")] == 1.0
    # CONCEDE costs the backend's bookkeeping tokens; PERSIST costs nothing.
    assert column(infos, "tokens") == [30, 0, 0, 0]
    # Before (W1, R, R, W2), after (R, R, R, W2): local (1, 0, 0, 0).
    # C(all) = R (3 votes) = 1; every leave-one-out set keeps >= 2 R votes against <= 1 W2,
    # so C(all\i) = 1 and every global term is 0.
    check_consensus(out, local=[1.0, 0.0, 0.0, 0.0], global_=[0.0] * 4)


def test_concede_most_confident_rule():
    env, _, _, _ = scripted_env(FOUR, concede_rule="most_confident")
    out = play(env, C, P, P, P)
    _, _, _, _, infos = out
    # Agent 0 copies the most confident peer, a3 (W2, .875), not the plurality answer.
    assert infos["agent_0"]["answer"] == "wrong2"
    assert infos["agent_0"]["self_confidence"] == 0.875
    assert column(infos, "tokens") == [30, 0, 0, 0]
    # After (W2 .875, R .5, R .75, W2 .875): nobody's correctness changed, local = 0.
    # C(all): R and W2 both have 2 votes; summed confidence R 1.25 < W2 1.75 -> W2 -> 0.
    # C(all\0) = {R, R, W2} -> R -> 1: g0 = 0 - 1 = -1.
    # C(all\1) = {W2, R, W2} -> W2 -> 0: g1 = 0.   C(all\2) = {W2, R, W2}: g2 = 0.
    # C(all\3) = {W2, R, R} -> R -> 1: g3 = -1.
    check_consensus(out, local=[0.0] * 4, global_=[-1.0, 0.0, 0.0, -1.0])
    assert "team_answer" not in infos["agent_0"]  # not the last round


@pytest.mark.parametrize(
    ("c1", "c2", "expected_answer", "local", "tokens"),
    [
        # Peers of agent 0: a1 holds W1 (my answer), a2 holds R: a 1-1 tie among peers,
        # broken by the holder's confidence. a1 more confident -> the target shares my
        # answer -> CONCEDE is PERSIST: nothing changes, no tokens.
        # After (W1, W1, R): C(all) = W1 = 0; C(all\0) = {W1 .75, R .25} -> 0;
        # C(all\1) = {W1 .5, R .25} -> 0; C(all\2) = {W1, W1} -> 0. All rewards 0.
        (0.75, 0.25, "wrong1", [0.0, 0.0, 0.0], [0, 0, 0]),
        # a2 more confident -> agent 0 copies R. After (R, W1, R): local (1, 0, 0).
        # C(all) = R = 1; C(all\0) = {W1 .25, R .75} -> 1; C(all\1) = {R, R} -> 1;
        # C(all\2) = {R .75 (copied), W1 .25} -> 1. Global all 0.
        (0.25, 0.75, "42", [1.0, 0.0, 0.0], [30, 0, 0]),
    ],
)
def test_concede_peer_tie_is_broken_by_the_holders_confidence(
    c1, c2, expected_answer, local, tokens
):
    env, _, _, _ = scripted_env([Say(W1, conf=0.5), Say(W1, conf=c1), Say(R, conf=c2)])
    out = play(env, C, P, P)
    _, _, _, _, infos = out
    assert infos["agent_0"]["answer"] == expected_answer
    assert column(infos, "tokens") == tokens
    check_consensus(out, local=local, global_=[0.0, 0.0, 0.0])


def test_concede_when_all_peers_agree_equals_persist():
    initial = [Say(W1, conf=0.25), Say(W1, conf=0.5), Say(W1, conf=0.75)]
    conceding, _, _, _ = scripted_env(initial)
    persisting, _, _, _ = scripted_env(initial)
    a = play(conceding, C, P, P)
    b = play(persisting, P, P, P)
    for key in ("answer", "correct", "self_confidence", "tokens"):
        assert column(a[4], key) == column(b[4], key), key
    assert column(a[4], "tokens") == [0, 0, 0]
    assert a[1] == b[1]
    assert [i["reward_terms"] for i in a[4].values()] == [i["reward_terms"] for i in b[4].values()]
    # The observations differ only in the features that report the last action played.
    differs = np.zeros(LAYOUT.size, bool)
    for agent in a[0]:
        differs |= a[0][agent] != b[0][agent]
    names = {LAYOUT.names()[i] for i in np.flatnonzero(differs)}
    assert all("last_" in n for n in names), names


def test_concede_of_an_unparsed_agent_copies_and_is_never_a_noop():
    # Agent 0 unparsed, peers W1 (.5) and R (.75): tie -> most confident holder a2 -> R.
    env, _, _, _ = scripted_env([Say(X, conf=0.25), Say(W1, conf=0.5), Say(R, conf=0.75)])
    out = play(env, C, P, P)
    _, _, _, _, infos = out
    assert infos["agent_0"]["answer"] == "42"
    assert column(infos, "tokens") == [30, 0, 0]
    # Before (X, W1, R), after (R, W1, R): local (1, 0, 0). C(all) = R = 1.
    # C(all\0) = {W1 .5, R .75} -> 1; C(all\1) = {R, R} -> 1; C(all\2) = {R .75, W1 .5} -> 1.
    check_consensus(out, local=[1.0, 0.0, 0.0], global_=[0.0, 0.0, 0.0])


# --- (d) tie-breaks on a 1-1-1 split ---------------------------------------------------

# a0 holds W2 (.25), a1 holds R (.75), a2 holds W1 (.5). W1 has a lower id than a0's W2,
# so "first" must mean the lowest agent index, not the lowest answer id.
SPLIT = [Say(W2, conf=0.25), Say(R, conf=0.75), Say(W1, conf=0.5)]


def test_tie_break_confidence_on_a_three_way_split():
    env, _, _, _ = scripted_env(SPLIT, tie_break="confidence", max_rounds=1)
    out = play(env, P, P, P)
    _, _, _, _, infos = out
    # C(all): one vote each; R has the highest confidence -> R -> 1.
    # C(all\0) = {R .75, W1 .5} -> R -> 1: g0 = 0.
    # C(all\1) = {W2 .25, W1 .5} -> W1 -> 0: g1 = 1.
    # C(all\2) = {W2 .25, R .75} -> R -> 1: g2 = 0.
    check_consensus(out, local=[0.0] * 3, global_=[0.0, 1.0, 0.0])
    assert infos["agent_0"]["team_answer"] == "42"
    assert infos["agent_0"]["team_correct"] is True


def test_tie_break_first_on_a_three_way_split():
    env, _, _, _ = scripted_env(SPLIT, tie_break="first", max_rounds=1)
    out = play(env, P, P, P)
    _, _, _, _, infos = out
    # C(all): the lowest-indexed holder is a0 -> W2 -> 0.
    # C(all\0) = {a1 R, a2 W1} -> a1's R -> 1: g0 = 0 - 1 = -1.
    # C(all\1) = {a0 W2, a2 W1} -> W2 -> 0: g1 = 0.
    # C(all\2) = {a0 W2, a1 R} -> W2 -> 0: g2 = 0.
    check_consensus(out, local=[0.0] * 3, global_=[-1.0, 0.0, 0.0])
    assert infos["agent_0"]["team_answer"] == "wrong2"
    assert infos["agent_0"]["team_correct"] is False


def test_tie_break_first_on_a_two_two_split():
    # (W1, R, R, W1): two votes each; the first holder is a0 -> W1 -> C(all) = 0.
    # C(all\0) = {R, R, W1} -> 1: g0 = -1.   C(all\1) = {W1, R, W1} -> 0: g1 = 0.
    # C(all\2) = {W1, R, W1} -> 0: g2 = 0.   C(all\3) = {W1, R, R} -> 1: g3 = -1.
    env, _, _, _ = scripted_env([Say(W1), Say(R), Say(R), Say(W1)], tie_break="first")
    check_consensus(play(env, P, P, P, P), local=[0.0] * 4, global_=[-1.0, 0.0, 0.0, -1.0])


def test_tie_break_random_is_seeded_and_consistent_with_the_rewards():
    outcomes = set()
    for seed in range(40):
        results = []
        for _ in range(2):
            env = deliberation_env.parallel_env(
                backend=ScriptedBackend(SPLIT), tasks=TASKS, tie_break="random", max_rounds=1
            )
            env.reset(seed=seed)
            results.append(play(env, P, P, P))
        (_, rewards, _, _, infos), again = results
        assert (
            rewards == again[1]
            and infos["agent_0"]["team_answer"] == again[4]["agent_0"]["team_answer"]
        ), f"seed {seed}: tie_break='random' is not reproducible"
        team = infos["agent_0"]["team_answer"]
        outcomes.add(team)
        # One draw decides the whole vote: the holder w of the team answer is the most
        # favoured agent, so removing anybody else leaves w's answer on top (g_i = 0), and
        # g_w = C(all) - C(all \ w).
        winner = column(infos, "answer").index(team)
        g = terms(infos, "global")
        for i in range(3):
            if i != winner:
                assert g[i] == 0.0, (seed, winner, g)
        assert g[winner] in (-1.0, 0.0, 1.0)
        assert infos["agent_0"]["team_correct"] is (team == "42")
    assert outcomes == {"42", "wrong1", "wrong2"}, outcomes


# --- (e) terminal reward ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("refined", "team_correct"),
    [
        # Round 2: agent 1 refines to R -> final (R, R, W1) -> R has 2 votes -> correct.
        (Say(R, conf=0.5), 1.0),
        # Agent 1 refines to W2 -> (R .25, W2 .5, W1 .75): a 1-1-1 split, W1 most confident
        # -> wrong.
        (Say(W2, conf=0.5), 0.0),
    ],
)
def test_terminal_reward(refined, team_correct):
    env, _, _, _ = scripted_env(
        [Say(R, conf=0.25), Say(W1, conf=0.5), Say(W1, conf=0.75)],
        refines={1: [refined]},
        reward="terminal",
    )
    for actions in ((P, P, P), (P, F, P)):
        _, rewards, terminations, _, infos = play(env, *actions)
        assert not any(terminations.values())
        assert rewards_list(rewards) == [0.0, 0.0, 0.0]
        assert set(infos["agent_0"]["reward_terms"]) == {"terminal", "token_cost"}
        assert terms(infos, "terminal") == [0.0, 0.0, 0.0]
    _, rewards, terminations, _, infos = play(env, P, P, P)
    assert all(terminations.values())
    assert rewards_list(rewards) == [team_correct] * 3
    assert terms(infos, "terminal") == [team_correct] * 3
    assert infos["agent_0"]["team_correct"] is bool(team_correct)


# --- (f) token cost --------------------------------------------------------------------


def test_token_cost_is_subtracted_exactly():
    initial = [Say(R, conf=0.75), Say(W1, conf=0.5), Say(W1, conf=0.25)]
    refines = {1: [Say(R, conf=0.5, prompt=300, completion=200)]}
    free, _, _, reset_infos = scripted_env(initial, refines, max_rounds=1)
    costly, _, _, _ = scripted_env(initial, refines, max_rounds=1, token_cost=0.5)
    assert column(reset_infos, "tokens") == [300, 300, 300]
    # a0 persists (0 tokens); a1 refines (300 + 200 = 500 tokens); a2 concedes: its peers
    # hold R (a0 .75) and W1 (a1 .5), a tie won by a0 -> a2 copies R for 30 tokens.
    a = play(free, P, F, C)
    b = play(costly, P, F, C)
    assert column(b[4], "tokens") == [0, 500, 30]
    assert column(b[4], "answer") == ["42", "42", "42"]
    # Before (R, W1, W1), after (R, R, R): local (0, 1, 1); C(all) = C(all\i) = 1: global 0.
    check_consensus(a, local=[0.0, 1.0, 1.0], global_=[0.0, 0.0, 0.0])
    cost = [-0.5 * 0 / 1000, -0.5 * 500 / 1000, -0.5 * 30 / 1000]  # (0, -0.25, -0.015)
    assert terms(b[4], "token_cost") == pytest.approx(cost, abs=1e-15)
    assert terms(b[4], "local") == [0.0, 1.0, 1.0]
    assert terms(b[4], "global") == [0.0, 0.0, 0.0]
    for agent in b[1]:
        assert b[1][agent] == pytest.approx(a[1][agent] + cost[int(agent[-1])], abs=1e-12)
        assert b[1][agent] == pytest.approx(sum(b[4][agent]["reward_terms"].values()), abs=1e-12)
    # 900 initial tokens + 530 in the round.
    assert b[4]["agent_0"]["total_tokens"] == 1430


def test_token_cost_applies_to_terminal_reward_at_every_step():
    env, _, _, _ = scripted_env(
        [Say(R), Say(R), Say(W1)],
        refines={2: [Say(W1, prompt=100, completion=100)] * 2},
        reward="terminal",
        token_cost=2.0,
        max_rounds=2,
    )
    _, rewards, _, _, infos = play(env, P, P, F)
    # Not the end: terminal term 0; agent 2 pays 2.0 * 200 / 1000 = 0.4.
    assert rewards_list(rewards) == pytest.approx([0.0, 0.0, -0.4], abs=1e-12)
    _, rewards, _, _, infos = play(env, P, P, F)
    # End: final (R, R, W1) is correct -> 1 for everyone, minus agent 2's 0.4.
    assert rewards_list(rewards) == pytest.approx([1.0, 1.0, 0.6], abs=1e-12)
    for agent, r in rewards.items():
        assert r == pytest.approx(sum(infos[agent]["reward_terms"].values()), abs=1e-12)


# --- (g) unparseable answers --------------------------------------------------------


def test_unparsed_answers_never_agree_or_vote():
    env, _, obs, infos = scripted_env(
        [Say(X, conf=0.875), Say(X, conf=0.875), Say(R, conf=0.125)],
        refines={2: [Say(X, conf=0.875)]},
        max_rounds=2,
    )
    a0, a2 = obs["agent_0"], obs["agent_2"]
    assert a0[LAYOUT.index("own.parsed")] == 0.0
    assert a0[LAYOUT.index("own.support")] == 0.0  # two X answers do not agree
    assert a0[LAYOUT.index("summary.peer_agree")] == 0.0
    assert a0[LAYOUT.index("peer0.agrees")] == 0.0  # agent 1, also X
    assert a0[LAYOUT.index("own.in_plurality")] == 0.0
    assert a2[LAYOUT.index("own.support")] == pytest.approx(1 / 3)
    assert a2[LAYOUT.index("own.in_plurality")] == 1.0
    assert a2[LAYOUT.index("own.distinct")] == pytest.approx(1 / 3)
    # Agent 2's peers have nothing to copy: CONCEDE is masked for it only.
    assert [m.tolist() for m in column(infos, "action_mask")] == [[1, 1, 1], [1, 1, 1], [1, 1, 0]]
    assert column(infos, "correct") == [False, False, True]

    out = play(env, P, P, P)
    # Nothing changes: local 0. The pair of X answers is no plurality: C(all) = R = 1.
    # C(all\0) = {X, R} -> R -> 1: g0 = 0; likewise g1 = 0.
    # C(all\2) = {X, X}: no parsed answer, no team answer -> 0: g2 = 1.
    check_consensus(out, local=[0.0] * 3, global_=[0.0, 0.0, 1.0])

    out = play(env, P, P, F)
    _, _, _, _, infos = out
    # Agent 2 refines to X: 1 -> 0 (an X answer is never correct), local (0, 0, -1).
    # Nobody holds a parsed answer: C(all) = C(all\i) = 0, global 0.
    check_consensus(out, local=[0.0, 0.0, -1.0], global_=[0.0] * 3)
    assert column(infos, "answer") == [None, None, None]
    assert column(infos, "correct") == [False, False, False]
    assert infos["agent_0"]["team_answer"] is None
    assert infos["agent_0"]["team_correct"] is False
    assert [m.tolist() for m in column(infos, "action_mask")] == [[1, 1, 0]] * 3


def test_masked_concede_is_a_persist():
    env, _, _, infos = scripted_env([Say(X), Say(X)], max_rounds=1)
    assert [m.tolist() for m in column(infos, "action_mask")] == [[1, 1, 0]] * 2
    _, rewards, _, _, infos = play(env, C, C)
    assert column(infos, "tokens") == [0, 0]
    assert column(infos, "answer") == [None, None]
    assert rewards_list(rewards) == [0.0, 0.0]


# --- (h) stop on consensus ----------------------------------------------------------


def test_stop_on_consensus_ends_the_episode_early():
    env, _, _, _ = scripted_env(
        [Say(R, conf=0.5), Say(W1, conf=0.75), Say(W1, conf=0.25)], stop_on_consensus=True
    )
    out = play(env, C, P, P)
    _, _, terminations, truncations, infos = out
    # Agent 0 concedes to W1 (both peers hold it): all agree after round 1 of 3.
    assert terminations == dict.fromkeys(terminations, True)
    assert not any(truncations.values())
    assert env.agents == []
    # Before (R, W1, W1), after (W1, W1, W1): local (-1, 0, 0); every vote is W1: global 0.
    check_consensus(out, local=[-1.0, 0.0, 0.0], global_=[0.0] * 3)
    assert infos["agent_0"]["self_confidence"] == 0.75
    assert infos["agent_0"]["team_answer"] == "wrong1"
    assert infos["agent_0"]["team_correct"] is False
    assert infos["agent_0"]["actions"] == {"persist": 2, "refine": 0, "concede": 1}
    with pytest.raises(RuntimeError, match="reset"):
        play(env, P, P, P)


def test_stop_on_consensus_needs_a_round_and_a_parsed_answer():
    # Agreement at reset does not end the episode before anybody acts...
    env, _, _, _ = scripted_env([Say(R)] * 3, stop_on_consensus=True)
    assert env.agents == ["agent_0", "agent_1", "agent_2"]
    _, _, terminations, _, _ = play(env, P, P, P)
    assert all(terminations.values())
    # ... and unparseable answers never form a consensus.
    env, _, _, _ = scripted_env([Say(X)] * 3, stop_on_consensus=True)
    for _ in range(2):
        _, _, terminations, _, _ = play(env, P, P, P)
        assert not any(terminations.values())
    _, _, terminations, _, _ = play(env, P, P, P)
    assert all(terminations.values())
    # Without the option the consensus changes nothing.
    env, _, _, _ = scripted_env([Say(R)] * 3)
    for _ in range(2):
        assert not any(play(env, P, P, P)[2].values())


# --- (i) simultaneity ---------------------------------------------------------------


def test_concede_reads_the_pre_round_answer_of_a_refining_peer():
    env, backend, _, _ = scripted_env(
        [Say(W1, conf=0.25), Say(W2, conf=0.75, judge=0.125), Say(W2, conf=0.5)],
        refines={1: [Say(R, conf=0.875, judge=0.875)]},
    )
    out = play(env, C, F, P)
    obs, _, _, _, infos = out
    # Agent 0's peers hold W2 twice; its most confident holder is a1 (.75), which refines to
    # R in the same round. Agent 0 gets a1's PRE-round solution: W2 with confidence .75.
    assert column(infos, "answer") == ["wrong2", "42", "wrong2"]
    assert column(infos, "self_confidence") == [0.75, 0.875, 0.5]
    assert obs["agent_0"][LAYOUT.index("own.judge_confidence")] == 0.125
    assert column(infos, "tokens") == [30, 300, 0]
    # The backend saw the round's starting answers (agent 0 still on W1).
    (refine,) = backend.refine_calls()
    assert refine[2].tolist() == [[W1, W2, W2]]
    # Before (W1, W2, W2), after (W2 .75, R .875, W2 .5): local (0, 1, 0).
    # C(all) = W2 (2 votes) = 0.
    # C(all\0) = {R .875, W2 .5} -> R -> 1: g0 = -1.   C(all\1) = {W2, W2} -> 0: g1 = 0.
    # C(all\2) = {W2 .75, R .875} -> R -> 1: g2 = -1.
    check_consensus(out, local=[0.0, 1.0, 0.0], global_=[-1.0, 0.0, -1.0])


def test_all_refines_of_a_round_are_one_batched_call():
    env, backend, _, _ = scripted_env(
        [Say(R), Say(W1), Say(W2)],
        refines={a: [Say(R), Say(R)] for a in range(3)},
    )
    play(env, F, F, F)
    play(env, P, F, F)
    play(env, P, P, P)
    kinds = [c[0] for c in backend.calls]
    assert kinds == ["solve", "refine", "refine"]
    assert backend.calls[0][1] == [(0, 0), (0, 1), (0, 2)]
    assert backend.calls[1][1] == [(0, 0), (0, 1), (0, 2)]
    assert backend.calls[2][1] == [(0, 1), (0, 2)]


def test_episode_summary_counts_actions_and_tokens():
    env, _, _, _ = scripted_env(
        [Say(R, conf=0.5), Say(W1, conf=0.25), Say(W2, conf=0.75)],
        refines={1: [Say(R, prompt=50, completion=50)]},
    )
    # Round 1: a1 refines to R (100 tokens); a2 concedes: its peers hold R (a0 .5) and W1
    # (a1 .25, pre-round), a tie won by a0 -> a2 copies R (30 tokens). All hold R now.
    _, _, _, _, infos = play(env, P, F, C)
    assert column(infos, "answer") == ["42"] * 3
    assert column(infos, "tokens") == [0, 100, 30]
    # Round 2: a0 concedes to peers who all agree with it: a PERSIST, 0 tokens.
    _, _, _, _, infos = play(env, C, P, P)
    assert column(infos, "tokens") == [0, 0, 0]
    _, _, _, _, infos = play(env, P, P, P)
    # Actions as played: 1 + 2 + 3 PERSIST, 1 REFINE, 2 CONCEDE.
    assert infos["agent_0"]["actions"] == {"persist": 6, "refine": 1, "concede": 2}
    # 3 x 300 initial tokens, then 100 + 30.
    assert infos["agent_0"]["total_tokens"] == 1030
    assert infos["agent_0"]["team_answer"] == answer_text(R)
    assert infos["agent_0"]["team_correct"] is True
