"""Statistics of the simulated backend against its profiles, measured through the vector
env on many questions at once. Seeds are fixed, so these tests are deterministic; the
tolerances are several standard errors wide so that changes to how random numbers are
drawn do not make them flaky."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy.special import ndtri
from scipy.stats import mannwhitneyu

from agents.profiles import get_profile
from deliberation_env import Task, VectorDeliberationEnv
from deliberation_env.observation import ObservationLayout

N = 3
PERSIST, REFINE, CONCEDE = 0, 1, 2
LAYOUT = ObservationLayout(4)
TASKS = "arithmetic:5000"


def initial_round(profile, B: int, seed: int, **kwargs):
    """Observations and correctness of the initial answers of B envs.

    The vector env reports correctness after a step, so one all-PERSIST round (which
    changes nothing) reads it.
    """
    vec = VectorDeliberationEnv(num_envs=B, profile=profile, max_rounds=1, **kwargs)
    obs, infos = vec.reset(seed=seed)
    _, _, _, _, after = vec.step(np.full((B, N), PERSIST))
    return obs, infos, after


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    u = mannwhitneyu(score[positive], score[~positive]).statistic
    return float(u / (positive.sum() * (~positive).sum()))


def binomial_tolerance(p: float, n: int, sigmas: float = 4.0) -> float:
    return sigmas * np.sqrt(p * (1 - p) / n)


PROFILES = ["llama3.1-8b/gsm8k", "qwen2.5-7b/math", "toy"]


@pytest.mark.parametrize("profile", PROFILES)
def test_initial_accuracy_matches_the_profile(profile):
    _, _, after = initial_round(profile, B=20_000, seed=0, tasks=TASKS)
    accuracy = after["correct"].mean()
    assert abs(accuracy - get_profile(profile).accuracy) < 0.02, accuracy
    # The plurality of three answers beats one answer (voting helps on average).
    assert after["team_correct"].mean() > accuracy


def test_parse_failures_keep_the_profile_accuracy():
    # `SimProfile.accuracy` is "p0: mean single-sample accuracy of the initial answer", and
    # calibration.md asks for per-question difficulty "so that the mean equals p0". With
    # 100k envs over 50k questions the standard error is about 0.001.
    profile = get_profile("qwen2.5-7b/gsm8k")
    tasks = [Task(f"q{i}", "", "1", "numeric") for i in range(50_000)]
    _, _, after = initial_round(profile, B=100_000, seed=0, tasks=tasks)
    accuracy = after["correct"].mean()
    assert abs(accuracy - profile.accuracy) < 0.006, (
        f"initial accuracy {accuracy:.4f} vs profile p0 {profile.accuracy}; "
        f"p0 * (1 - parse_failure) = {profile.accuracy * (1 - profile.parse_failure):.4f}"
    )


@pytest.mark.parametrize("profile", PROFILES)
def test_confidence_aurocs_match_the_profile(profile):
    obs, _, after = initial_round(profile, B=20_000, seed=1, tasks=TASKS)
    correct = after["correct"]
    p = get_profile(profile)
    for feature, target in (
        ("own.self_confidence", p.self_auroc),
        ("own.judge_confidence", p.judge_auroc),
        ("own.logprob_confidence", p.logprob_auroc),
    ):
        measured = auroc(obs[..., LAYOUT.index(feature)], correct)
        assert abs(measured - target) < 0.03, (feature, measured, target)
    assert (obs[..., LAYOUT.index("own.has_logprob")] == 1).all()


@pytest.mark.parametrize("profile", ["llama3.1-8b/gsm8k", "toy"])
def test_debate_roughly_ties_the_initial_vote(profile):
    B, seed = 30_000, 2
    _, _, initial = initial_round(profile, B=B, seed=seed, tasks=TASKS)
    vec = VectorDeliberationEnv(num_envs=B, profile=profile, max_rounds=3, tasks=TASKS)
    vec.reset(seed=seed)  # the same seed gives the same initial answers
    per_agent = [initial["correct"].mean()]
    for _ in range(3):
        _, _, terminated, _, infos = vec.step(np.full((B, N), REFINE))
        per_agent.append(infos["correct"].mean())
    assert terminated.all()
    vote, debate = initial["team_correct"].mean(), infos["team_correct"].mean()
    # The literature: debate roughly ties the majority vote at equal cost.
    assert abs(debate - vote) < 0.03, (vote, debate)
    # Debate (REFINE seeing peers) raises the accuracy of the individual agents.
    assert per_agent[-1] > per_agent[0], per_agent


def refine_transitions(profile: str, B: int, seed: int):
    """Agent 0 REFINEs while its peers PERSIST: its correctness before and after, and the
    state of its peers before the round."""
    obs, _, before = initial_round(profile, B=B, seed=seed, tasks=TASKS)
    vec = VectorDeliberationEnv(num_envs=B, profile=profile, max_rounds=1, tasks=TASKS)
    vec.reset(seed=seed)
    actions = np.full((B, N), PERSIST)
    actions[:, 0] = REFINE
    _, _, _, _, after = vec.step(actions)
    c0 = before["correct"]
    peers_right = c0[:, 1:].sum(1)
    # Agent 0 right and both peers wrong: the peers agree iff agent 1's answer is held by
    # two agents (agent 1 and agent 2; not agent 0, who is right).
    peers_agree = np.isclose(obs[:, 1, LAYOUT.index("own.support")], 2 / 3)
    return c0[:, 0], after["correct"][:, 0], peers_right, peers_agree


@pytest.fixture(scope="module")
def toy_transitions():
    return refine_transitions("toy", B=60_000, seed=3)


def transition_cases():
    p = get_profile("toy")
    # (own right before, peers right, peers agree on a wrong answer or None, P(right after))
    return {
        "wrong_k0": (False, 0, None, p.fix_rate[0]),
        "wrong_k1": (False, 1, None, p.fix_rate[1]),
        "wrong_k2": (False, 2, None, p.fix_rate[2]),
        "right_k2": (True, 2, None, 1 - p.break_all_right),
        "right_k1": (True, 1, None, 1 - p.break_mixed),
        "right_k0_agree": (True, 0, True, 1 - p.break_wrong_agree),
        "right_k0_split": (True, 0, False, 1 - p.break_wrong_split),
    }


@pytest.mark.parametrize(
    ("own", "k", "agree", "target"), transition_cases().values(), ids=list(transition_cases())
)
def test_refine_transitions_match_the_profile_table(toy_transitions, own, k, agree, target):
    before, after, peers_right, peers_agree = toy_transitions
    rows = (before == own) & (peers_right == k)
    if agree is not None:
        rows &= peers_agree == agree
    assert rows.sum() > 500, f"only {rows.sum()} samples"
    measured = after[rows].mean()
    assert abs(measured - target) < 0.03, (measured, target, rows.sum())


def test_refine_break_rate_with_right_peers_is_the_profiles(toy_transitions):
    # calibration.md: P(right -> wrong | refine, both peers right) = 0.02. With ~12k
    # samples the standard error is ~0.0013, so 0.006 is over 4 standard errors.
    before, after, peers_right, _ = toy_transitions
    rows = before & (peers_right == 2)
    broke = 1 - after[rows].mean()
    p = get_profile("toy")
    assert abs(broke - p.break_all_right) < 0.006, (
        f"measured break rate {broke:.4f} (n={rows.sum()}) vs profile {p.break_all_right}; "
        f"1 - (1 - break) * (1 - parse_failure) = "
        f"{1 - (1 - p.break_all_right) * (1 - p.parse_failure):.4f}"
    )


V1 = get_profile("llama3.1-8b/gsm8k").with_(accuracy=0.6)  # more of every situation


@pytest.fixture(scope="module")
def v1_transitions():
    return refine_transitions(V1, B=60_000, seed=3)


def v1_cases():
    p, c = V1, V1.conformity
    # Two agreeing peers are a majority: conform with c, else the rates by peers right.
    return {
        "wrong_k2": (False, 2, None, c + (1 - c) * p.fix_rate[2]),
        "wrong_k1": (False, 1, None, p.fix_rate[1]),
        "right_k2": (True, 2, None, 1 - p.break_rate[2]),
        "right_k1": (True, 1, None, 1 - p.break_rate[1]),
        "right_k0_agree": (True, 0, True, (1 - c) * (1 - p.break_rate[0])),
        "right_k0_split": (True, 0, False, 1 - p.break_rate[0]),
    }


@pytest.mark.parametrize(("own", "k", "agree", "target"), v1_cases().values(), ids=list(v1_cases()))
def test_v1_refine_conforms_to_a_peer_majority(v1_transitions, own, k, agree, target):
    before, after, peers_right, peers_agree = v1_transitions
    rows = (before == own) & (peers_right == k)
    if agree is not None:
        rows &= peers_agree == agree
    assert rows.sum() > 500, f"only {rows.sum()} samples"
    assert abs(after[rows].mean() - target) < binomial_tolerance(target, rows.sum()) + 0.005


def test_v1_refine_alone_uses_the_solo_rates():
    B = 40_000
    vec = VectorDeliberationEnv(num_envs=B, profile=V1, max_rounds=2, tasks=TASKS, num_agents=1)
    vec.reset(seed=5)
    *_, before = vec.step(np.full((B, 1), PERSIST))  # reads the initial correctness
    *_, after = vec.step(np.full((B, 1), REFINE))
    was, now = before["correct"][:, 0], after["correct"][:, 0]
    fix, brk = V1.solo_rate
    assert abs(now[~was].mean() - fix) < binomial_tolerance(fix, (~was).sum())
    assert abs(1 - now[was].mean() - brk) < binomial_tolerance(brk, was.sum())


# sha256 (first 16 hex digits) of the answer ids and correctness of `v0_digest`'s episodes,
# recorded with the Deliberation-v0 release (commit 2899be9) under the unsuffixed names.
V0_RELEASE = {
    ("llama3.1-8b/gsm8k@v0", 1): "17f2d71312638ddf",
    ("llama3.1-8b/gsm8k@v0", 3): "b766638d4cc81953",
    ("llama3.1-8b/gsm8k@v0", 5): "8a6d7e688816ed29",
    ("qwen2.5-7b/math@v0", 3): "c44f934c8de6f01d",
    ("llama3.2-3b/aime@v0", 3): "4d4beed0fbf960ba",
    ("toy", 3): "3c4c0cb8741e0e82",  # toy is the same in v0 and v1
}


def v0_digest(profile: str, num_agents: int, B: int = 300, rounds: int = 3) -> str:
    vec = VectorDeliberationEnv(num_envs=B, profile=profile, num_agents=num_agents,
                                max_rounds=rounds, tasks="arithmetic:300", autoreset=False)  # fmt: skip
    vec.reset(seed=0)
    rng = np.random.default_rng(0)
    h = hashlib.sha256()
    for _ in range(rounds):
        vec.step(rng.choice(3, size=(B, num_agents), p=(0.2, 0.6, 0.2)))
        s = vec.solution_arrays()
        h.update(np.ascontiguousarray(s["answer"], np.int64).tobytes())
        h.update(np.ascontiguousarray(s["correct"], np.bool_).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(
    ("profile", "n"), list(V0_RELEASE), ids=[f"{p}-N{n}" for p, n in V0_RELEASE]
)
def test_v0_profiles_replay_the_v0_release(profile, n):
    assert v0_digest(profile, n) == V0_RELEASE[profile, n]
    assert get_profile(profile).refine_model == "v0"
    if profile != "toy":  # the same names without the suffix are v1: other numbers
        assert v0_digest(profile.removesuffix("@v0"), n) != V0_RELEASE[profile, n]


def test_profile_versions():
    v1, v0 = get_profile("llama3.1-8b/gsm8k"), get_profile("llama3.1-8b/gsm8k@v0")
    assert (v1.refine_model, v0.refine_model) == ("v1", "v0")
    assert v0.fix_rate == (0.03, 0.22, 0.58) and v0.name == "llama3.1-8b/gsm8k@v0"
    assert get_profile("llama3.1-8b/gsm8k@v1") == v1.with_(name="llama3.1-8b/gsm8k@v1")
    assert get_profile("toy@v0") is get_profile("toy") and get_profile("toy").refine_model == "v0"
    with pytest.raises(ValueError, match="version suffix"):
        get_profile("llama3.1-8b/gsm8k@v7")
    with pytest.raises(ValueError, match="refine_model='v2'"):
        v1.with_(refine_model="v2")


def test_token_costs():
    p = get_profile("llama3.1-8b/gsm8k")
    # No question and no instruction tokens: the reported tokens are the completion alone.
    bare = p.with_(question_tokens=0.0, solve_instruction_tokens=0.0)
    tasks = [Task(f"q{i}", "", "1", "numeric") for i in range(2000)]
    B = 20_000
    vec = VectorDeliberationEnv(num_envs=B, profile=bare, tasks=tasks, max_rounds=3)
    _, infos = vec.reset(seed=4)
    initial_total = infos["tokens"].sum(1)
    completion = infos["tokens"].mean()
    assert abs(completion / p.completion_tokens - 1) < 0.10, completion
    assert (infos["tokens"] >= 1).all()

    rng = np.random.default_rng(0)
    actions = rng.integers(0, 3, size=(B, N))
    obs, _, _, _, infos = vec.step(actions)
    tokens = infos["tokens"]
    assert (tokens[actions == PERSIST] == 0).all()
    assert (tokens[actions == REFINE] > 0).all()
    # CONCEDE costs the profile's bookkeeping tokens when it copies a different answer, and
    # nothing when the chosen peer already shares the agent's answer (then it is a PERSIST).
    changed = obs[..., LAYOUT.index("own.changed")] == 1
    conceded = actions == CONCEDE
    assert (tokens[conceded & changed] == p.concede_tokens).all()
    assert set(np.unique(tokens[conceded]).tolist()) <= {0, p.concede_tokens}
    assert (conceded & changed).sum() > 100
    # REFINE prompts carry the solutions of the whole team: they cost more than a solve.
    assert tokens[actions == REFINE].mean() > completion
    # The episode's running total counts the initial answers and this round.
    np.testing.assert_array_equal(infos["episode_tokens"], initial_total + tokens.sum(1))


def per_question_accuracy(seed: int, questions: range, B: int = 2000) -> np.ndarray:
    vec = VectorDeliberationEnv(num_envs=B, profile="toy", max_rounds=1, tasks=TASKS)
    out = []
    for q in questions:
        _, infos = vec.reset(seed=seed, options={"task_index": q})
        assert (infos["task_index"] == q).all()
        _, _, _, _, after = vec.step(np.full((B, N), PERSIST))
        out.append(after["correct"].mean())
    return np.array(out)


def test_question_difficulty_is_fixed_per_question_and_varies_across_questions():
    questions = range(0, 240, 20)
    a = per_question_accuracy(seed=1, questions=questions)
    b = per_question_accuracy(seed=2, questions=questions)
    # Same question, other seed: the same latent accuracy, up to binomial noise (6000
    # answers per question -> standard error <= 0.0065 per estimate).
    noise = np.sqrt(np.maximum(a * (1 - a), 1e-3) * 2 / 6000)
    assert (np.abs(a - b) < 4.5 * noise + 1e-3).all(), np.round(np.c_[a, b], 3)
    # Questions differ far more than that: Beta(2.4, 1.6) difficulties have sd ~0.22.
    assert a.std() > 0.1, np.round(a, 3)
    assert np.corrcoef(a, b)[0, 1] > 0.95


# --------------------------------------------------------------------------- verifier axis
def test_self_variant_is_the_profile_and_verifier_adds_only_its_score():
    """`/self` plays bit for bit as the unsuffixed profile; `/verifier` draws its score from
    a stream of its own, so every other value of the same episodes is unchanged."""
    B = 400
    runs = {}
    for variant in ("", "/self", "/verifier"):
        vec = VectorDeliberationEnv(B, profile=f"llama3.1-8b/gsm8k{variant}", tasks=TASKS)
        obs, _ = vec.reset(seed=11)
        actions = np.random.default_rng(0).integers(0, 3, (3, B, N))
        frames = [obs]
        for a in actions:
            obs, *_ = vec.step(a)
            frames.append(obs)
        runs[variant] = (vec.layout, np.stack(frames), vec.solution_arrays())
    (base, plain, sol), (_, same, sol_self), (ver, verified, sol_ver) = runs.values()
    np.testing.assert_array_equal(plain, same)
    assert "verifier" not in base.groups and "verifier" in ver.groups
    assert verified.shape[-1] == ver.size > base.size == plain.shape[-1]
    keep = [ver.index(n) for n in base.names()]
    np.testing.assert_array_equal(verified[..., keep], plain)
    for name, values in sol.items():
        if name != "verifier_score":
            np.testing.assert_array_equal(sol_ver[name], values, err_msg=name)
    assert np.isnan(sol["verifier_score"]).all() and not np.isnan(sol_ver["verifier_score"]).any()
    np.testing.assert_array_equal(
        verified[-1][..., ver.index("own.verifier_score")], sol_ver["verifier_score"]
    )


@pytest.mark.parametrize("profile", ["llama3.1-8b/gsm8k/verifier", "qwen2.5-3b/math/verifier"])
def test_verifier_score_has_the_profile_auroc(profile):
    p = get_profile(profile)
    vec = VectorDeliberationEnv(20000, profile=profile, tasks=TASKS, max_rounds=1)
    obs, _ = vec.reset(seed=0)
    arrays = vec.solution_arrays()
    measured = auroc(arrays["verifier_score"].ravel(), arrays["correct"].ravel())
    assert abs(measured - p.verifier_auroc) < 0.01
    np.testing.assert_array_equal(
        obs[..., vec.layout.index("own.verifier_score")], arrays["verifier_score"]
    )
    judge = auroc(arrays["judge_confidence"].ravel(), arrays["correct"].ravel())
    assert judge < measured  # the verifier is the stronger signal


def test_every_backbone_and_benchmark_has_self_and_verifier_variants():
    from agents.profiles import BACKBONES, BENCHMARKS, VERIFIER_AUROC, VERIFIER_SOURCE

    for bb in BACKBONES:
        for bm in BENCHMARKS:
            plain = get_profile(f"{bb}/{bm}")
            assert get_profile(f"{bb}/{bm}/self") == plain.with_(name=f"{bb}/{bm}/self")
            assert plain.verifier_auroc is None
            ver = get_profile(f"{bb}/{bm}/verifier")
            assert ver.verifier_auroc == VERIFIER_AUROC[VERIFIER_SOURCE[bm]]
            assert ver == plain.with_(name=ver.name, verifier_auroc=ver.verifier_auroc)
            assert "DERIVED" in ver.sources["verifier_auroc"]
    with pytest.raises(ValueError, match="verifier_auroc"):
        get_profile("toy").with_(verifier_auroc=1.2)


def test_verifier_auroc_is_derived_from_the_best_of_n_gains():
    from agents.profiles import BEST_OF_N, VERIFIER_AUROC, verifier_auroc_from_best_of_n

    for benchmark, (base, best, n) in BEST_OF_N.items():
        derived = verifier_auroc_from_best_of_n(base, best, n, concentration=2.0)
        assert round(derived, 3) == VERIFIER_AUROC[benchmark]
    with pytest.raises(ValueError, match="ceiling"):
        verifier_auroc_from_best_of_n(0.28, 0.99, 32)


def test_best_of_n_quadrature_matches_a_monte_carlo_of_the_model():
    from agents.profiles import best_of_n_accuracy

    rng = np.random.default_rng(0)
    auroc_, base, n, conc, Q = 0.75, 0.6, 8, 2.0, 200_000
    d = np.sqrt(2) * ndtri(auroc_)
    p = rng.beta(base * conc, (1 - base) * conc, Q)
    right = rng.random((Q, n)) < p[:, None]
    score = rng.normal(size=(Q, n)) + d * right
    mc = right[np.arange(Q), score.argmax(1)].mean()
    assert abs(best_of_n_accuracy(auroc_, base, n, conc) - mc) < 0.004
    assert abs(best_of_n_accuracy(0.5, base, n, conc) - base) < 1e-3  # a coin picks at random
    assert best_of_n_accuracy(0.7, base, n, None) < best_of_n_accuracy(0.8, base, n, None)
