"""Communication topologies (`deliberation_env.topology`): the complete graph is today's env
bit for bit; named and per-round graphs; `set_topology` and the reset option; the
simulator, the text adapter's prompts and the token counts follow the visible peers; the
observation's ``visible`` flags; conformance on a ring; bad graphs; SoftRankPO on a ring."""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pytest

import deliberation_env
from agents.prompts import refine_messages, render_chat
from agents.simulated import SimulatedBackend
from deliberation_env import EnvConfig, topology
from deliberation_env.observation import ObservationLayout
from deliberation_env.protocol import BatchView, Solution
from deliberation_env.state import State
from deliberation_env.tasks import Task
from deliberation_env.testing import check_env
from deliberation_env.vector import VectorDeliberationEnv

REFINE = 1

GOLDEN_DEFAULT = "54535151b139e867617e26c90653b015bfcf332d96d1e85ad17f4135b6ca345d"
"""`_fingerprint()` of the env before topologies existed (computed on the parent commit's
code): every seeded observation, reward, termination, token count and correctness of
three configs through both views. A change here means the default env changed."""


def _fingerprint(**extra) -> str:
    h = hashlib.sha256()
    configs: tuple[dict, ...] = (
        {},
        {"profile": "llama3.1-8b/gsm8k@v0"},
        {"num_agents": 4, "concede_rule": "most_confident"},
    )
    for kw in configs:
        v = VectorDeliberationEnv(16, **kw, **extra)
        obs, info = v.reset(seed=3)
        h.update(obs.tobytes())
        h.update(info["tokens"].tobytes())
        rng = np.random.default_rng(0)
        for _ in range(7):
            obs, r, term, _, info = v.step(rng.integers(0, 3, (16, v.num_agents)))
            for x in (obs, r, term, info["tokens"], info["correct"], info["team_correct"]):
                h.update(np.ascontiguousarray(x).tobytes())
        env = deliberation_env.parallel_env(**kw, **extra)
        rng = np.random.default_rng(1)
        for e in range(3):
            obs, infos = env.reset(seed=5 if e == 0 else None)
            h.update(np.stack([obs[a] for a in env.agents]).tobytes())
            while env.agents:
                acts = {a: int(rng.integers(0, 3)) for a in env.agents}
                obs, rew, term, _, infos = env.step(acts)
                h.update(np.stack([obs[a] for a in obs]).tobytes())
                h.update(np.array([rew[a] for a in rew], np.float64).tobytes())
                h.update(np.array([infos[a]["tokens"] for a in infos]).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- bit identity
def test_default_env_is_bit_identical_to_the_env_before_topologies():
    assert _fingerprint() == GOLDEN_DEFAULT


def test_complete_by_name_is_the_default():
    assert EnvConfig().topology == "complete"
    assert _fingerprint(topology="complete") == GOLDEN_DEFAULT


def _trace(env: VectorDeliberationEnv, steps: int = 9, seed: int = 4) -> list:
    obs, info = env.reset(seed=seed)
    out = [obs, info["tokens"]]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        obs, r, term, _, info = env.step(rng.integers(0, 3, (env.num_envs, env.num_agents)))
        out += [obs, r, term, info["tokens"], info["correct"], info["episode_tokens"]]
    return out


def test_a_complete_matrix_plays_the_default_dynamics_and_only_adds_flags():
    plain = VectorDeliberationEnv(32)
    matrix = VectorDeliberationEnv(32, topology=np.ones((3, 3), int))
    assert plain.layout.groups == frozenset()
    assert matrix.layout.groups == {"topology"}
    keep = [matrix.layout.index(n) for n in plain.layout.names()]
    flags = [i for i in range(matrix.layout.size) if i not in keep]
    a, b = _trace(plain), _trace(matrix)
    for x, y in zip(a, b):
        if x.ndim == 3 and x.shape[-1] == plain.layout.size:  # observations
            np.testing.assert_array_equal(x, y[..., keep])
            present = y[..., [matrix.layout.index(f"peer{p}.present") for p in range(4)]]
            visible = y[..., [matrix.layout.index(f"peer{p}.visible") for p in range(4)]]
            np.testing.assert_array_equal(visible, present)  # every peer is read
            assert y[..., flags].any()
        else:
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("profile", ["llama3.1-8b/gsm8k", "llama3.1-8b/gsm8k@v0", "toy"])
@pytest.mark.parametrize("num_agents", [1, 2, 3, 5])
def test_the_masked_simulator_path_with_every_peer_is_the_unmasked_one(profile, num_agents):
    """``BatchView.peers`` = all others takes the topology path and draws the same."""
    backend, view = _refine_view(profile, num_agents, m=400, seed=num_agents)
    full = BatchView(**{**view.__dict__, "peers": view.peer_mask().copy()})
    assert view.peers is None
    a, b = backend.refine_batch(view), backend.refine_batch(full)
    for name, x in a.__dict__.items():
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, getattr(b, name), err_msg=name)


# ---------------------------------------------------------------------- graphs
def test_named_graphs():
    i = np.arange(4)
    ring = np.zeros((4, 4), bool)
    ring[i, (i - 1) % 4] = True
    chain = np.zeros((4, 4), bool)
    chain[i[1:], i[:-1]] = True
    star = np.zeros((4, 4), bool)
    star[0] = star[:, 0] = True
    np.testing.assert_array_equal(topology.named("ring", 4), ring)
    np.testing.assert_array_equal(topology.named("chain", 4), chain)
    np.testing.assert_array_equal(topology.named("star", 4), star)
    np.testing.assert_array_equal(topology.named("none", 4), np.zeros((4, 4), bool))
    np.testing.assert_array_equal(topology.named("complete", 4), np.ones((4, 4), bool))
    graph = topology.resolve("ring", 4, 3)
    assert graph.shape == (3, 4, 4) and graph[:, i, i].all()  # diagonal set, ignored


def test_config_stores_a_matrix_as_tuples_and_pickles():
    import pickle

    cfg = EnvConfig(topology=np.eye(3, k=1, dtype=np.int64))
    assert cfg.topology == ((0, 1, 0), (0, 0, 1), (0, 0, 0))
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert cfg == EnvConfig(topology=[[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    assert EnvConfig(topology="[[1, 0], [1, 1]]", num_agents=2).topology == ((1, 0), (1, 1))


class Recorder(SimulatedBackend):
    """The simulator, recording the peer mask of every REFINE call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.views: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def refine_batch(self, view):
        mask = view.peer_mask().copy()
        self.views.append((view.env.copy(), view.agent.copy(), view.state.round[view.env], mask))
        return super().refine_batch(view)

    def masks(self) -> dict[tuple[int, int, int], np.ndarray]:
        """(env, round, agent) -> the peers it read."""
        out = {}
        for env, agent, round_, mask in self.views:
            for b, a, r, m in zip(env, agent, round_, mask):
                out[int(b), int(r), int(a)] = m
        return out


def _expected(edges: np.ndarray, agent: int) -> np.ndarray:
    row = np.asarray(edges, bool)[agent].copy()
    row[agent] = False
    return row


@pytest.mark.parametrize("name", ["ring", "star", "chain", "none", "complete"])
def test_refine_reads_the_in_neighbours_of_a_named_graph(name):
    rec = Recorder()
    env = VectorDeliberationEnv(3, backend=rec, num_agents=4, topology=name)
    env.reset(seed=0)
    env.step(np.full((3, 4), REFINE))
    edges = topology.named(name, 4)
    for (_, _, a), mask in rec.masks().items():
        np.testing.assert_array_equal(mask, _expected(edges, a))


def test_per_round_graphs_change_with_the_round():
    rounds = np.stack([topology.named(n, 3) for n in ("none", "ring", "complete")]).astype(int)
    rec = Recorder()
    env = deliberation_env.parallel_env(backend=rec, topology=rounds)
    obs, _ = env.reset(seed=1)
    vis = env.layout.index("peer1.visible")  # agent i's slot 1 is agent i-1: its ring edge
    seen = [obs["agent_0"][vis]]
    while env.agents:
        obs, *_ = env.step(dict.fromkeys(env.agents, REFINE))
        seen.append(obs["agent_0"][vis] if env.agents else None)
    assert seen[:3] == [0.0, 1.0, 1.0]  # the flags of the next round's graph
    for (_, r, a), mask in rec.masks().items():
        np.testing.assert_array_equal(mask, _expected(rounds[r], a))
    np.testing.assert_array_equal(env.topology, topology.resolve(rounds, 3, 3))


def test_set_topology_on_the_vector_env():
    rec = Recorder()
    env = VectorDeliberationEnv(2, backend=rec, topology="ring", max_rounds=2)
    env.reset(seed=0)
    per_env = np.stack([topology.named("chain", 3), topology.named("star", 3)])
    env.set_topology(per_env)
    env.step(np.full((2, 3), REFINE))
    for (b, _, a), mask in rec.masks().items():
        np.testing.assert_array_equal(mask, _expected(per_env[b], a))
    # [B, T, N, N]: round 1 of env 0 reads nobody; it holds through the autoreset.
    per_round = np.ones((2, 2, 3, 3), int)
    per_round[0, 1] = 0
    env.set_topology(per_round)
    rec.views.clear()
    env.step(np.full((2, 3), REFINE))  # round 1 (0-based): ends the episodes
    for (b, r, _), mask in rec.masks().items():
        assert r == 1
        assert mask.sum() == (0 if b == 0 else 2)
    np.testing.assert_array_equal(env.topology[:, :, :, :], topology.batch(per_round, 2, 3, 2))
    env.set_topology("none")  # a name: every env
    assert not (env.topology & ~np.eye(3, dtype=bool)).any()
    env.reset(seed=0)  # back to the config's ring
    np.testing.assert_array_equal(env.topology, topology.batch("ring", 2, 3, 2))
    env.reset(seed=0, options={"topology": "star"})
    np.testing.assert_array_equal(env.topology, topology.batch("star", 2, 3, 2))


def test_reset_option_sets_the_episode_graph_of_the_parallel_env():
    env = deliberation_env.parallel_env(topology="ring")
    env.reset(seed=0, options={"topology": "none"})
    assert env.core.visible()[0].sum() == 3  # only the diagonal
    env.reset(seed=0)
    np.testing.assert_array_equal(env.topology[0], topology.resolve("ring", 3, 3)[0])
    env.set_topology(np.zeros((3, 3, 3)))
    assert env.topology.sum() == 9


def test_the_set_graph_reaches_counterfactual_copies():
    from deliberation_env.counterfactual import counterfactual_rewards

    env = VectorDeliberationEnv(8, topology="none")
    env.reset(seed=2)
    actions = np.full((8, 3), REFINE)
    cf = counterfactual_rewards(env, actions)
    _, rewards, *_ = env.step(actions)
    np.testing.assert_allclose(cf[:, :, REFINE], rewards)


# ---------------------------------------------------------------------- the simulator
def _refine_view(profile: str, num_agents: int, m: int, seed: int = 0):
    """A bound simulator and a REFINE view of `m` single-question envs, random state."""
    backend = SimulatedBackend(profile)
    backend.bind([Task(id="t", question="q" * 200, answer="42", kind="numeric")], num_agents)
    rng = np.random.default_rng(seed)
    state = State.empty(m, num_agents)
    state.answer[:] = rng.integers(-1, 4, (m, num_agents))
    state.correct[:] = state.answer == 0
    state.length[:] = rng.integers(50, 400, (m, num_agents))
    view = BatchView(
        env=np.arange(m),
        agent=rng.integers(0, num_agents, m),
        task_index=np.zeros(m, np.int64),
        keys=rng.integers(0, 2**63, m).astype(np.uint64),
        state=state,
    )
    return backend, view


def _with_peers(view: BatchView, peers: np.ndarray) -> BatchView:
    return BatchView(**{**view.__dict__, "peers": peers})


def test_simulator_prompt_tokens_count_only_visible_peers():
    backend, view = _refine_view("llama3.1-8b/gsm8k", 3, m=500)
    full = backend.refine_batch(view)
    peers = view.peer_mask().copy()
    rows = np.arange(500)
    hidden = (view.agent + 1) % 3  # hide the next agent
    peers[rows, hidden] = False
    part = backend.refine_batch(_with_peers(view, peers))
    np.testing.assert_array_equal(
        full.prompt_tokens - part.prompt_tokens, view.state.length[rows, hidden]
    )
    alone = backend.refine_batch(_with_peers(view, np.zeros_like(peers)))
    own = view.state.length[rows, view.agent]
    others = view.state.length.sum(1) - own
    np.testing.assert_array_equal(full.prompt_tokens - alone.prompt_tokens, others)


@pytest.mark.parametrize("profile", ["llama3.1-8b/gsm8k", "llama3.1-8b/gsm8k@v0"])
def test_simulator_rates_follow_the_visible_peers(profile):
    """Agent 0 wrong; one peer right and one wrong: reading the right one fixes more often,
    and reading nobody gives the profile's solo rate."""
    m = 20_000
    backend, view = _refine_view(profile, 3, m=m)
    st = view.state
    st.answer[:] = [1, 0, 2]  # agent 0 wrong, agent 1 right, agent 2 wrong (another answer)
    st.correct[:] = st.answer == 0
    view = BatchView(**{**view.__dict__, "agent": np.zeros(m, np.int64)})
    reads_right = np.tile([False, True, False], (m, 1))
    reads_wrong = np.tile([False, False, True], (m, 1))
    fixed_right = backend.refine_batch(_with_peers(view, reads_right)).correct.mean()
    fixed_wrong = backend.refine_batch(_with_peers(view, reads_wrong)).correct.mean()
    fixed_alone = backend.refine_batch(_with_peers(view, np.zeros((m, 3), bool))).correct.mean()
    assert fixed_right > fixed_wrong + 0.1
    p = backend.profile
    solo = p.solo_rate[0] if p.refine_model == "v1" else p.fix_rate[0]
    assert abs(fixed_alone - solo) < 0.02


def test_debate_spends_fewer_tokens_on_sparser_graphs():
    tokens = {}
    for name in ("complete", "ring", "none"):
        env = VectorDeliberationEnv(500, topology=name)
        env.reset(seed=0)
        for _ in range(3):
            *_, info = env.step(np.full((500, 3), REFINE))
        tokens[name] = info["episode_tokens"].mean()
    assert tokens["complete"] > tokens["ring"] > tokens["none"]


# ---------------------------------------------------------------------- text backends
class EchoBackend:
    """A text `Backend`: agent k's initial solution names k; REFINE keeps the solution and
    records the request and its rendered prompt."""

    def __init__(self) -> None:
        self.requests: list = []
        self.prompts: dict[tuple[int, int], str] = {}

    def _solution(self, text: str, answer: str) -> Solution:
        return Solution(text, answer, 0.5, 0.5, None, 2, 2, 10 + len(text), 20)

    def solve(self, requests):
        return [self._solution(f"MARK-{r.agent} so the answer is 4{r.agent}", f"4{r.agent}") for r in requests]  # fmt: skip

    def refine(self, requests):
        self.requests.extend(requests)
        out = []
        for r in requests:
            prompt = render_chat(refine_messages(r.task, r.agent, r.own, r.peers))
            self.prompts[r.round, r.agent] = prompt
            out.append(self._solution(r.own.text, r.own.answer))
        return out


@pytest.mark.parametrize("name", ["chain", "star", "ring", "none", "complete"])
def test_text_prompts_hold_only_visible_peers(name):
    backend = EchoBackend()
    env = deliberation_env.parallel_env(backend=backend, num_agents=4, topology=name)
    env.reset(seed=0)
    env.step(dict.fromkeys(env.agents, REFINE))
    edges = topology.named(name, 4)
    assert len(backend.prompts) == 4
    for (_, a), prompt in backend.prompts.items():
        assert f"MARK-{a} " in prompt  # the agent's own solution
        for j in range(4):
            if j != a:
                assert (f"MARK-{j} " in prompt) == bool(edges[a, j]), (name, a, j)
    for r in backend.requests:  # the cyclic order of the visible peers is kept
        order = [int(p.text.split()[0][5:]) for p in r.peers]
        assert order == sorted(order, key=lambda j: (j - r.agent) % 4)


def test_text_prompts_are_shorter_with_fewer_peers():
    lengths = {}
    for name in ("complete", "ring", "none"):
        backend = EchoBackend()
        env = deliberation_env.parallel_env(backend=backend, num_agents=4, topology=name)
        env.reset(seed=0)
        env.step(dict.fromkeys(env.agents, REFINE))
        lengths[name] = len(backend.prompts[1, 0])
    assert lengths["complete"] > lengths["ring"] > lengths["none"]


# ---------------------------------------------------------------------- observations
def test_visible_flags_in_the_observation():
    env = VectorDeliberationEnv(2, num_agents=4, topology="chain")
    obs, _ = env.reset(seed=0)
    L = env.layout
    assert "topology" in L.groups and L.size == VectorDeliberationEnv(1).layout.size + 4 + 2
    for i in range(4):
        for p in range(4):
            j = (i + p + 1) % 4
            want = float(p < 3 and j == i - 1)
            assert obs[0, i, L.index(f"peer{p}.visible")] == want
        assert obs[0, i, L.index("summary.peer_visible")] == pytest.approx((i > 0) / 3)
        assert obs[0, i, L.index("summary.read_by")] == pytest.approx((i < 3) / 3)
    assert env.single_observation_space.contains(obs[0, 0])
    # Every (max_peers, groups) layout still has its own size.
    for max_peers in range(11):
        for groups in ({"topology"}, {"topology", "verifier"}):
            layout = ObservationLayout(max_peers, frozenset(groups))
            assert ObservationLayout.infer(layout.size) == layout
    # The default layout has no topology entry at all.
    with pytest.raises(ValueError, match="topology"):
        VectorDeliberationEnv(1).layout.index("peer0.visible")


def test_concede_still_reads_every_peer():
    # "none": nobody is read by REFINE, yet CONCEDE copies the plurality of all peers.
    a = VectorDeliberationEnv(64, topology="none")
    b = VectorDeliberationEnv(64)
    for env in (a, b):
        env.reset(seed=9)
        env.step(np.full((64, 3), 2))
    np.testing.assert_array_equal(a.core.state.answer, b.core.state.answer)


# ---------------------------------------------------------------------- conformance
@pytest.mark.parametrize(
    "kwargs",
    [
        {"topology": "ring"},
        {"topology": "star", "num_agents": 4, "obs_mode": "dict"},
        {"topology": np.stack([np.zeros((3, 3)), np.eye(3, k=1), np.ones((3, 3))])},
    ],
    ids=["ring", "star_dict", "per_round"],
)
def test_check_env_on_topologies(kwargs):
    check_env(functools.partial(deliberation_env.parallel_env, **kwargs))


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "spec, match",
    [
        ("rign", r"unknown topology 'rign'.*'ring'"),
        (np.ones((2, 2)), r"shape \(2, 2\).*\[N, N\] = \[3, 3\].*\[T, N, N\] = \[3, 3, 3\]"),
        (np.ones((2, 3, 3)), r"shape \(2, 3, 3\).*\[3, 3, 3\]"),
        ([[0, 2, 0], [1, 0, 1], [1, 1, 0]], r"only 0 and 1.*got 2"),
        ([[0, 0.5, 0], [1, 0, 1], [1, 1, 0]], r"only 0 and 1"),
        ([[0, 1], [1, 0, 1]], r"rectangular"),
        ([["a", "b", "c"]] * 3, r"matrix of numbers"),
        ("[[0, 1], [1, 0]", r"JSON"),
        (None, r"matrix of numbers"),
    ],
)
def test_bad_topologies_say_what_to_pass(spec, match):
    with pytest.raises(ValueError, match=match):
        EnvConfig(topology=spec)


def test_bad_set_topology_says_what_to_pass():
    env = VectorDeliberationEnv(2, topology="ring")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\[B, N, N\] = \[2, 3, 3\]"):
        env.set_topology(np.ones((5, 3, 3)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        env.set_topology(np.full((3, 3), -1))
    from deliberation_env.config import check_reset_options

    for view in ("DeliberationEnv", "VectorDeliberationEnv"):
        assert check_reset_options({"topology": "ring"}, view) == {"topology": "ring"}
        with pytest.raises(ValueError, match="topolgy.*'topology'"):
            check_reset_options({"topolgy": "ring"}, view)


# ---------------------------------------------------------------------- meta-policy
def test_softrankpo_trains_and_evaluates_on_a_ring():
    """Issue 12.6: the same trainers on a non-complete graph; the policy reads the flags."""
    from algorithms import softrankpo
    from algorithms.evaluate import evaluate

    cfg = softrankpo.SoftRankPOConfig(
        env=EnvConfig(profile="toy", tasks="arithmetic:200", topology="ring"),
        questions_per_update=8,
        group_size=4,
        updates=2,
        epochs=1,
        minibatches=1,
    )
    policy, history = softrankpo.train(cfg, progress=False)
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    assert "topology" in policy.config.groups
    env = VectorDeliberationEnv(4, cfg.env)
    assert policy.config.layout == env.layout  # the network's input includes `visible`
    (run,) = evaluate(policy, cfg.env, seeds=(0,), episodes=64)
    assert 0.0 <= run["team_accuracy"] <= 1.0 and run["tokens_per_question"] > 0


def test_command_line_takes_a_name_or_a_json_matrix():
    from experiments.options import parse

    assert parse(EnvConfig, ["--topology", "ring"], "t").topology == "ring"
    matrix = parse(EnvConfig, ["--topology", "[[0,1,0],[0,0,1],[1,0,0]]"], "t").topology
    assert matrix == ((0, 1, 0), (0, 0, 1), (1, 0, 0))
    assert parse(EnvConfig, [], "t").topology == "complete"


def test_recordings_hold_the_peers_each_refiner_read():
    """`RecordingBackend` records a REFINE's context as the visible peers only, so `fit` on
    a sparse graph's recordings sees what each agent read."""
    from agents.records import RecordingBackend
    from agents.simulated import SimulatedBackend
    from deliberation_env import VectorDeliberationEnv

    counts = {}
    for graph in ("complete", "ring", "none"):
        rec = RecordingBackend(SimulatedBackend("toy"))
        vec = VectorDeliberationEnv(8, backend=rec, tasks="arithmetic:50", topology=graph)
        vec.reset(seed=0)
        vec.step(np.ones((8, 3), np.int64))  # everyone REFINEs
        refines = [r for r in rec.records if r["round"] == 1]
        assert len(refines) == 24
        counts[graph] = {len(r["peer_answers"]) for r in refines}
    assert counts == {"complete": {2}, "ring": {1}, "none": {0}}


@pytest.mark.parametrize("num_envs", [2, 3])  # 3 = T: [T, N, N] must not read as [B, N, N]
def test_a_per_round_config_topology_holds_in_every_env(num_envs):
    from deliberation_env import VectorDeliberationEnv

    per_round = np.ones((3, 3, 3), int)
    per_round[0] = np.eye(3, dtype=int)  # round 0: nobody reads anybody
    vec = VectorDeliberationEnv(num_envs, topology=per_round.tolist())
    vec.reset(seed=0)
    assert (vec.topology[:, 0] == np.eye(3, dtype=bool)).all()
    assert vec.topology[:, 1:].all()
