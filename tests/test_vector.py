"""`VectorDeliberationEnv`: parity with B separate `DeliberationEnv`s, group rollouts,
automatic resets and batching."""

from __future__ import annotations

import numpy as np
import pytest
from scripted_backend import TASKS, W1, W2, R, Say, ScriptedBackend

import deliberation_env
from deliberation_env import VectorDeliberationEnv
from deliberation_env.observation import ObservationLayout
from deliberation_env.protocol import Solution

LAYOUT = ObservationLayout(4)
ROUND = LAYOUT.index("own.round")


def masked_actions(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """A uniformly random allowed action for every env and agent ``[B, N]``."""
    scores = rng.random(masks.shape) * masks - (1 - masks)
    return scores.argmax(-1)


def stacked(d: dict, key: str | None = None) -> np.ndarray:
    agents = sorted(d, key=lambda a: int(a.split("_")[1]))
    return np.stack([d[a] if key is None else d[a][key] for a in agents])


PARITY_CONFIGS = {
    "default": {},
    "terminal_stop_on_consensus": {"reward": "terminal", "stop_on_consensus": True},
    "four_agents_token_cost": {"num_agents": 4, "token_cost": 0.3, "tie_break": "random"},
    "weighted_vote_most_confident": {"vote": "weighted", "concede_rule": "most_confident"},
}


@pytest.mark.parametrize("kwargs", PARITY_CONFIGS.values(), ids=PARITY_CONFIGS)
def test_vector_matches_separate_envs(kwargs):
    B, seed, steps = 4, 10, 30
    vec = VectorDeliberationEnv(num_envs=B, **kwargs)
    singles = [deliberation_env.parallel_env(**kwargs) for _ in range(B)]
    obs, infos = vec.reset(seed=seed)
    firsts = [env.reset(seed=seed + b) for b, env in enumerate(singles)]
    for b, (o, i) in enumerate(firsts):
        np.testing.assert_array_equal(obs[b], stacked(o))
        np.testing.assert_array_equal(infos["action_mask"][b], stacked(i, "action_mask"))
        np.testing.assert_array_equal(infos["tokens"][b], stacked(i, "tokens"))

    rng = np.random.default_rng(0)
    mismatches: dict[str, list[tuple[int, int]]] = {}
    lengths, ended_apart = [], False

    def check(name: str, ok: bool, t: int, b: int) -> None:
        if not ok:
            mismatches.setdefault(name, []).append((t, b))

    episode_start = [0] * B
    answers = [stacked(i, "answer") for _, i in firsts]
    for t in range(steps):
        actions = masked_actions(rng, infos["action_mask"])
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        assert rewards.shape == (B, vec.num_agents) and rewards.dtype == np.float32
        assert not truncated.any()
        ended_apart |= bool(terminated.any() and not terminated.all())
        for b, env in enumerate(singles):
            o, r, term, trunc, i = env.step(
                {a: int(actions[b, k]) for k, a in enumerate(env.agents)}
            )
            done = all(term.values())
            check("terminated", bool(terminated[b]) == done, t, b)
            check("rewards", np.array_equal(rewards[b], stacked(r).astype(np.float32)), t, b)
            check("tokens", np.array_equal(infos["tokens"][b], stacked(i, "tokens")), t, b)
            check("correct", np.array_equal(infos["correct"][b], stacked(i, "correct")), t, b)
            answer = stacked(i, "answer")
            check("changed", np.array_equal(infos["changed"][b], answer != answers[b]), t, b)
            agree = answer[0] is not None and all(x == answer[0] for x in answer)
            check("consensus", bool(infos["consensus"][b]) == agree, t, b)
            check("rounds", int(infos["rounds"][b]) == t + 1 - episode_start[b], t, b)
            for name, values in infos["reward_terms"].items():
                single = [i[a]["reward_terms"][name] for a in env.possible_agents]
                check(f"reward_terms.{name}", np.array_equal(values[b], single), t, b)
            if done:
                lengths.append(t + 1 - episode_start[b])
                episode_start[b] = t + 1
                check("final_obs", np.array_equal(infos["final_obs"][b], stacked(o)), t, b)
                check(
                    "team_correct",
                    bool(infos["team_correct"][b]) == i["agent_0"]["team_correct"],
                    t,
                    b,
                )
                check(
                    "episode_tokens",
                    int(infos["episode_tokens"][b]) == i["agent_0"]["total_tokens"],
                    t,
                    b,
                )
                check(
                    "episode_actions",
                    infos["episode_actions"][b].tolist() == list(i["agent_0"]["actions"].values()),
                    t,
                    b,
                )
                o, i = env.reset()  # the next episode of the same seed stream
            answers[b] = stacked(i, "answer")
            check("obs", np.array_equal(obs[b], stacked(o)), t, b)
            check(
                "action_mask",
                np.array_equal(infos["action_mask"][b], stacked(i, "action_mask")),
                t,
                b,
            )
    assert len(lengths) >= 2 * B, "too few whole episodes to test automatic resets"
    if kwargs.get("stop_on_consensus"):
        assert len(set(lengths)) > 1 and ended_apart, "episodes should end at different times"
    assert not mismatches, {k: v[:5] for k, v in mismatches.items()}


def test_tokens_info_at_an_autoreset_step_is_the_last_rounds():
    # Every agent REFINEs in the only round: each spends prompt + completion tokens in that
    # step. The vector env must report those, not the next episode's initial tokens.
    vec = VectorDeliberationEnv(num_envs=2, max_rounds=1)
    single = deliberation_env.parallel_env(max_rounds=1)
    vec.reset(seed=10)
    single.reset(seed=10)
    _, _, terminated, _, infos = vec.step(np.ones((2, 3), np.int64))
    *_, single_infos = single.step(dict.fromkeys(single.agents, 1))
    assert terminated.all()
    _, next_infos = single.reset()
    assert infos["tokens"][0].tolist() == stacked(single_infos, "tokens").tolist(), (
        f"got {infos['tokens'][0].tolist()}; those are the next episode's initial tokens: "
        f"{stacked(next_infos, 'tokens').tolist()}"
    )


def test_list_of_seeds_equals_consecutive_seeds():
    a = VectorDeliberationEnv(num_envs=3)
    b = VectorDeliberationEnv(num_envs=3)
    oa, ia = a.reset(seed=7)
    ob, ib = b.reset(seed=[7, 8, 9])
    np.testing.assert_array_equal(oa, ob)
    np.testing.assert_array_equal(ia["task_index"], ib["task_index"])
    actions = np.ones((3, 3), np.int64)
    for x, y in zip(a.step(actions), b.step(actions), strict=True):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)


def test_group_rollouts_share_the_start_and_diverge_later():
    B, G, N = 8, 4, 3
    vec = VectorDeliberationEnv(num_envs=B, max_rounds=3)
    obs, infos = vec.reset(seed=5, options={"group_size": G})
    rng = np.random.default_rng(1)
    group_tasks, diverged = [], 0
    for _episode in range(6):
        # A new episode: every member of a group has the same task and initial solutions.
        tasks = infos["task_index"].reshape(B // G, G)
        assert (tasks == tasks[:, :1]).all(), tasks
        grouped = obs.reshape(B // G, G, N, -1)
        assert (grouped == grouped[:, :1]).all()
        group_tasks.append(tasks[:, 0].tolist())
        for _round in range(3):
            # Identical actions within a group; REFINE often, so the backend samples.
            per_group = masked_actions(rng, infos["action_mask"][::G])
            per_group[rng.random(per_group.shape) < 0.6] = 1
            actions = np.repeat(per_group, G, axis=0)
            obs, _, terminated, _, infos = vec.step(actions)
            if terminated.all():
                final = infos["final_obs"].reshape(B // G, G, N, -1)
            else:
                final = obs.reshape(B // G, G, N, -1)
        diverged += int((final != final[:, :1]).any(axis=(2, 3)).sum())
        assert terminated.all()
    assert diverged > 0, "no group member ever diverged from its leader"
    flat = [t for ep in group_tasks for t in ep]
    assert len(set(flat)) > 1, "every group and episode drew the same task"


def test_many_groups_diverge_after_a_refine():
    B, G = 400, 4
    vec = VectorDeliberationEnv(num_envs=B, max_rounds=1)
    obs, infos = vec.reset(seed=11, options={"group_size": G})
    assert (obs.reshape(B // G, G, 3, -1) == obs[::G, None]).all()
    _, _, _, _, infos = vec.step(np.ones((B, 3), np.int64))
    final = infos["final_obs"].reshape(B // G, G, 3, -1)
    differ = (final != final[:, :1]).any(axis=(1, 2, 3))
    assert differ.mean() > 0.5, f"only {differ.mean():.0%} of groups diverged after a REFINE"
    # Without groups, envs draw their own tasks.
    _, infos = vec.reset(seed=11)
    assert len(set(infos["task_index"][:G].tolist())) > 1


def test_autoreset_final_obs_and_shapes():
    B, N = 5, 3
    vec = VectorDeliberationEnv(num_envs=B, max_rounds=2)
    obs, infos = vec.reset(seed=3)
    assert obs.shape == (B, N, LAYOUT.size) and obs.dtype == np.float32
    assert infos["action_mask"].shape == (B, N, 3)
    assert infos["tokens"].shape == (B, N)
    assert vec.state().shape == (B, LAYOUT.state_size)
    first_tasks = infos["task_index"].copy()
    obs, rewards, terminated, truncated, infos = vec.step(np.zeros((B, N), np.int64))
    assert "final_obs" not in infos
    assert terminated.shape == truncated.shape == (B,) and not terminated.any()
    assert rewards.shape == (B, N) and rewards.dtype == np.float32
    np.testing.assert_allclose(obs[..., ROUND], 0.5)
    obs, rewards, terminated, _, infos = vec.step(np.ones((B, N), np.int64))
    assert terminated.all()
    final = infos["final_obs"]
    assert final.shape == (B, N, LAYOUT.size)
    np.testing.assert_allclose(final[..., ROUND], 1.0)  # last observation of the episode
    np.testing.assert_allclose(obs[..., ROUND], 0.0)  # first observation of the next one
    assert not np.array_equal(infos["task_index"], first_tasks)
    state = vec.state()
    assert state.shape == (B, LAYOUT.state_size)
    assert all(vec.state_space.contains(s) for s in state)
    for b in range(B):
        for k in range(N):
            assert vec.single_observation_space.contains(obs[b, k])
            assert vec.single_observation_space.contains(final[b, k])
    assert vec.action_space.shape == (B, N)


def test_no_autoreset_keeps_the_last_observation():
    vec = VectorDeliberationEnv(num_envs=2, autoreset=False, max_rounds=1)
    vec.reset(seed=0)
    obs, _, terminated, _, infos = vec.step(np.zeros((2, 3), np.int64))
    assert terminated.all()
    np.testing.assert_array_equal(obs, infos["final_obs"])
    np.testing.assert_allclose(obs[..., ROUND], 1.0)


def test_one_backend_call_per_round_covers_every_env():
    backend = ScriptedBackend(
        [Say(R), Say(W1), Say(W2)], refines={a: [Say(R)] * 3 for a in range(3)}
    )
    vec = VectorDeliberationEnv(num_envs=3, backend=backend, tasks=TASKS, max_rounds=3)
    vec.reset(seed=0)
    assert [c[0] for c in backend.calls] == ["solve"]
    assert len(backend.calls[0][1]) == 9
    actions = np.array([[1, 1, 0], [0, 0, 0], [0, 1, 2]])
    vec.step(actions)
    kind, pairs, _ = backend.calls[-1]
    assert kind == "refine"
    assert sorted(pairs) == [(0, 0), (0, 1), (2, 1)]
    vec.step(np.zeros((3, 3), np.int64))
    assert len(backend.calls) == 2  # nobody refined: no call
    vec.step(np.ones((3, 3), np.int64))  # the episodes end and restart together
    assert [c[0] for c in backend.calls] == ["solve", "refine", "refine", "solve"]
    assert len(backend.calls[-2][1]) == 9
    assert len(backend.calls[-1][1]) == 9


def test_infos_match_the_core_and_survive_the_autoreset():
    # Without autoreset the core still holds each step's state: the infos must equal it.
    # With autoreset the core has moved on, so the same episode's infos must equal those.
    from deliberation_env import voting

    kwargs = {"num_envs": 16, "max_rounds": 3, "stop_on_consensus": True, "tie_break": "random"}
    frozen = VectorDeliberationEnv(autoreset=False, **kwargs)
    auto = VectorDeliberationEnv(**kwargs)
    _, fi = frozen.reset(seed=9)
    _, ai = auto.reset(seed=9)
    core = frozen.core
    team = voting.winner_correct(core.state.correct, core.team_winner())
    np.testing.assert_array_equal(fi["team_correct"], team)
    np.testing.assert_array_equal(ai["team_correct"], team)
    assert 0 < team.mean() < 1
    rng = np.random.default_rng(0)
    ended = np.zeros(16, bool)
    while frozen.active.any():
        actions = masked_actions(rng, fi["action_mask"])
        before = frozen.solution_arrays()["answer"]
        _, _, done, _, fi = frozen.step(actions)
        _, _, adone, _, ai = auto.step(actions)
        s = core.state
        np.testing.assert_array_equal(fi["changed"], s.answer != before)
        np.testing.assert_array_equal(fi["correct"], s.correct)
        np.testing.assert_array_equal(fi["consensus"], voting.agreement(s.answer).all(axis=(1, 2)))
        np.testing.assert_array_equal(fi["rounds"], s.round)
        np.testing.assert_array_equal(fi["episode_tokens"], s.tokens)
        team = voting.winner_correct(s.correct, core.team_winner())
        np.testing.assert_array_equal(fi["team_correct"], team)
        # The autoreset env played the same episode; where it ends, its infos are final.
        new = adone & ~ended
        for key in ("changed", "correct", "team_correct", "consensus", "rounds",
                    "episode_tokens", "episode_actions"):  # fmt: skip
            np.testing.assert_array_equal(ai[key][new], fi[key][new], err_msg=key)
        ended |= adone
        np.testing.assert_array_equal(done, ended)
    assert len(set(fi["rounds"].tolist())) > 1  # consensus ended some episodes early
    assert fi["changed"].dtype == bool and fi["changed"].shape == (16, 3)


def test_accessors_are_copies_of_the_current_episode():
    vec = VectorDeliberationEnv(num_envs=4, autoreset=False)
    obs, infos = vec.reset(seed=2)
    keys = vec.episode_keys
    assert keys.dtype == np.uint64 and keys.shape == (4,) and len(set(keys.tolist())) == 4
    keys[:] = 0
    assert (vec.episode_keys != 0).all()  # a copy
    again = VectorDeliberationEnv(num_envs=4)
    again.reset(seed=2)
    np.testing.assert_array_equal(again.episode_keys, vec.episode_keys)
    arrays = vec.solution_arrays()
    assert set(arrays) == set(deliberation_env.vector.SOLUTION_ARRAYS)
    np.testing.assert_array_equal(arrays["correct"], infos["correct"])
    assert all(a.shape == (4, 3) for a in arrays.values())
    arrays["answer"][:] = -7
    assert (vec.solution_arrays()["answer"] != -7).all()
    assert vec.solutions(0) == [None] * 3  # the simulator keeps no text
    from agents.simulated import SimulatedBackend

    assert isinstance(vec.backend, SimulatedBackend)
    assert vec.backend.profile.name == vec.config.profile
    assert vec.active.all()
    vec.step(np.zeros((4, 3), np.int64))
    assert vec.active.all() and (vec.episode_keys == again.episode_keys).all()


class Echo:
    """A text `Backend` answering "42" with its agent index in the text."""

    def _solution(self, agent: int, seed: int) -> Solution:
        return Solution(f"agent {agent}, seed {seed}", "42", 0.5, 0.5, None, 1, 1, 3, 4)

    def solve(self, requests):
        return [self._solution(r.agent, r.seed) for r in requests]

    def refine(self, requests):
        return [self._solution(r.agent, r.seed) for r in requests]


def test_text_backend_records_and_the_backend_itself_are_public():
    backend = Echo()
    vec = VectorDeliberationEnv(num_envs=2, backend=backend, tasks=TASKS)
    single = deliberation_env.parallel_env(backend=backend, tasks=TASKS)
    assert vec.backend is backend and single.backend is backend  # not the env's adapter
    vec.reset(seed=0)
    single.reset(seed=0)
    records = vec.solutions(0)
    assert all(isinstance(r, Solution) for r in records)
    assert [r.text.split(",")[0] for r in records] == ["agent 0", "agent 1", "agent 2"]
    assert vec.solutions(1) != records  # other env, other sampling seeds
    sols = single.solutions()
    assert list(sols) == single.possible_agents
    assert [r.text for r in sols.values()] == [r.text for r in records]  # seed 0 = env 0
    vec.step(np.array([[0, 1, 0], [0, 0, 0]]))
    assert vec.solutions(0)[1] is not records[1] and vec.solutions(0)[0] is records[0]
