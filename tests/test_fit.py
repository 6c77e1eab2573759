"""`SimulatedBackend.fit` / `agents.fit`: records from real runs -> a simulator profile.

Two sources of records: a known simulated profile (the fit must recover its parameters,
for each REFINE model: v0 from ``TRUTH``, v1 from ``TRUTH_V1``), and the tiny Hugging Face
model played through the env (the schema end to end).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.fit import RECORD_KEYS, RecordingBackend, fit_profile, load_records, record_from_call
from agents.profiles import SimProfile, get_profile
from agents.simulated import SimulatedBackend
from deliberation_env import RefineRequest, Solution, SolveRequest, Task, VectorDeliberationEnv
from deliberation_env.tasks import load_tasks

TASKS = load_tasks("arithmetic:300")
TRUTH = get_profile("qwen2.5-3b/gsm8k@v0").with_(  # the v0 REFINE model
    name="truth",
    accuracy=0.55,
    concentration=3.0,
    fix_rate=(0.08, 0.3, 0.65),
    break_all_right=0.05,
    break_mixed=0.2,
    break_wrong_agree=0.6,
    break_wrong_split=0.25,
    conform_wrong=0.6,
    conform_break=0.5,
    redraw_wrong=0.3,
    self_auroc=0.7,
    self_mean=0.8,
    judge_auroc=0.75,
    logprob_auroc=0.65,
    completion_tokens=180.0,
    unparsed_wrong=0.15,
    distractor_decay=0.4,
    steps=5.0,
    operators_per_step=2.0,
    wrong_length_factor=1.3,
    token_sigma=0.3,
)
BASE = "toy"  # different values everywhere: what is recovered comes from the records
TRUTH_V1 = get_profile("qwen2.5-3b/gsm8k").with_(
    name="truth-v1",
    accuracy=0.55,
    concentration=3.0,
    conformity=0.55,
    fix_rate=(0.1, 0.3, 0.5),
    break_rate=(0.35, 0.2, 0.05),
    solo_rate=(0.2, 0.1),
    conform_break=0.5,
    redraw_wrong=0.3,
    unparsed_wrong=0.15,
    distractor_decay=0.4,
)
BASE_V1 = "llama3.1-8b/math"  # a v1 profile, different REFINE values everywhere


def play(
    backend, B: int, steps: int, seed: int = 0, p=(0.2, 0.6, 0.2), num_agents: int = 3
) -> None:
    vec = VectorDeliberationEnv(
        num_envs=B, backend=backend, tasks=TASKS, max_rounds=3, num_agents=num_agents
    )
    vec.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        vec.step(rng.choice(3, size=(B, num_agents), p=p))


@pytest.fixture(scope="module")
def simulated_records():
    rec = RecordingBackend(SimulatedBackend(TRUTH))
    play(rec, B=2000, steps=12)  # 4 episodes per env, REFINE-heavy random actions
    return rec.records


@pytest.fixture(scope="module")
def fitted(simulated_records):
    return fit_profile(simulated_records, base=BASE, tasks=TASKS)


@pytest.mark.parametrize(
    "field, tol",
    [
        ("accuracy", 0.04),  # 300 questions: the set's mean difficulty varies by ~0.015
        ("unparsed_wrong", 0.02),
        ("distractor_decay", 0.05),
        ("break_all_right", 0.02),
        ("break_mixed", 0.03),
        ("break_wrong_agree", 0.06),
        ("break_wrong_split", 0.04),
        ("conform_wrong", 0.06),
        ("conform_break", 0.06),
        ("redraw_wrong", 0.06),
        ("self_auroc", 0.02),
        ("judge_auroc", 0.02),
        ("logprob_auroc", 0.02),
        ("self_mean", 0.02),
        ("wrong_length_factor", 0.05),
        ("token_sigma", 0.02),
    ],
)
def test_fit_recovers_a_simulated_profile(fitted, field, tol):
    assert abs(getattr(fitted, field) - getattr(TRUTH, field)) < tol, getattr(fitted, field)
    assert getattr(fitted, field) != getattr(get_profile(BASE), field)
    assert fitted.sources[field].startswith("fit:")


def test_fit_recovers_fix_rates_tokens_and_profile(fitted):
    np.testing.assert_allclose(fitted.fix_rate, TRUTH.fix_rate, atol=0.03)
    assert fitted.distractors == TRUTH.distractors
    assert 2.0 < fitted.concentration < 4.5
    for field in ("completion_tokens", "steps", "operators_per_step", "solve_instruction_tokens"):
        assert getattr(fitted, field) == pytest.approx(getattr(TRUTH, field), rel=0.05), field
    assert fitted.refine_instruction_tokens == pytest.approx(
        TRUTH.refine_instruction_tokens, rel=0.1
    )
    assert fitted.name == "fitted" and fitted.concede_tokens == get_profile(BASE).concede_tokens


def test_a_fitted_simulator_reproduces_debate(fitted):
    """All-REFINE debate for 3 rounds: the same accuracy trajectory as the true profile."""

    def trajectory(profile: SimProfile) -> list[float]:
        vec = VectorDeliberationEnv(num_envs=6000, profile=profile, tasks=TASKS, max_rounds=3)
        vec.reset(seed=1)
        out = []
        for _ in range(3):
            *_, infos = vec.step(np.ones((6000, 3), np.int64))
            out.append(float(infos["correct"].mean()))
        return out

    np.testing.assert_allclose(trajectory(fitted), trajectory(TRUTH), atol=0.03)


@pytest.fixture(scope="module")
def fitted_v1():
    """Fitted to records of `TRUTH_V1`: teams of 3 (REFINE-heavy random actions, as above)
    and lone agents refining (N = 1, for `solo_rate`), from the v1 base `BASE_V1`."""
    rec = RecordingBackend(SimulatedBackend(TRUTH_V1))
    play(rec, B=2000, steps=12)
    solo = RecordingBackend(SimulatedBackend(TRUTH_V1))
    play(solo, B=1000, steps=3, p=(0.0, 1.0, 0.0), num_agents=1)
    return fit_profile(rec.records + solo.records, base=BASE_V1, tasks=TASKS)


@pytest.mark.parametrize(
    "field, tol",
    [
        # ~6,000 refiners facing a peer majority: the standard error is ~0.01
        ("conformity", 0.04),
        # soft counts >= 1,400 per knot, net of conformity: standard errors <= 0.015
        ("fix_rate", 0.04),
        ("break_rate", 0.04),
        ("solo_rate", 0.03),  # 3,000 lone refines
        ("conform_break", 0.06),
        ("redraw_wrong", 0.06),
    ],
)
def test_fit_recovers_the_v1_refine_model(fitted_v1, field, tol):
    profiles = (fitted_v1, TRUTH_V1, get_profile(BASE_V1))
    got, truth, base = (np.atleast_1d(getattr(p, field)) for p in profiles)
    np.testing.assert_allclose(got, truth, atol=tol, err_msg=field)
    assert (np.abs(got - truth) < np.abs(base - truth)).all(), (field, got, base)
    assert fitted_v1.refine_model == "v1" and fitted_v1.sources[field].startswith("fit:")


def test_a_fitted_v1_simulator_reproduces_debate(fitted_v1):
    def trajectory(profile: SimProfile) -> list[float]:
        vec = VectorDeliberationEnv(num_envs=6000, profile=profile, tasks=TASKS, max_rounds=3)
        vec.reset(seed=1)
        out = []
        for _ in range(3):
            *_, infos = vec.step(np.ones((6000, 3), np.int64))
            out.append(float(infos["team_correct"].mean()))
        return out

    np.testing.assert_allclose(trajectory(fitted_v1), trajectory(TRUTH_V1), atol=0.03)


def test_simulated_backend_fit_classmethod(simulated_records):
    sim = SimulatedBackend.fit(simulated_records[:5000], base=BASE, name="mine", seed=3)
    assert isinstance(sim, SimulatedBackend) and sim.seed == 3
    assert sim.profile.name == "mine"


def test_few_records_shrink_toward_the_base():
    base = get_profile(BASE)
    one = {"task_id": "q", "action": "solve", "answer": "1", "correct": True,
           "self_confidence": 0.9, "judge_confidence": 0.5, "logprob_confidence": None,
           "steps": 2, "operators": 3, "prompt_tokens": 50, "completion_tokens": 40}  # fmt: skip
    fitted = fit_profile([one], base=base)
    assert fitted.accuracy == pytest.approx((1 + 2 * base.accuracy) / 3)
    assert fitted.fix_rate == base.fix_rate and fitted.self_auroc == base.self_auroc
    assert "concentration" not in fitted.sources


def test_records_from_files_and_objects(tmp_path, simulated_records):
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in simulated_records[:200]) + "\n")
    assert load_records(path) == simulated_records[:200]

    class Cache:
        def records(self):
            yield from simulated_records[:200]

    assert load_records(Cache()) == simulated_records[:200]
    with pytest.raises(ValueError, match="lacks \\['correct'\\]"):
        load_records([{"task_id": "q", "action": "solve", "answer": None}])
    with pytest.raises(ValueError, match="'guess' is not"):
        load_records([{"task_id": "q", "action": "guess", "answer": None, "correct": False}])
    with pytest.raises(ValueError, match="no usable records"):
        fit_profile([{"task_id": "q", "action": "solve", "answer": None, "correct": None}])


def test_record_from_call():
    task = Task("t/0", "What is 6 * 7?", "42", "numeric")

    def sol(answer):
        return Solution("...", answer, 0.8, 0.6, 0.7, 3, 4, 100, 50)

    solve = record_from_call(SolveRequest(task, 1, seed=5), sol("42"))
    assert set(solve) == set(RECORD_KEYS)
    assert solve["correct"] is True and solve["action"] == "solve" and solve["round"] == 0
    assert solve["peers_correct"] is None and solve["prev_correct"] is None
    refine = record_from_call(
        RefineRequest(task, 0, sol("41"), (sol("42"), sol(None)), seed=6), sol("42"), round=2
    )
    assert refine["action"] == "refine" and refine["round"] == 2
    assert (refine["prev_answer"], refine["prev_correct"]) == ("41", False)
    assert refine["peer_answers"] == ["42", None]
    assert refine["peers_correct"] == [True, False]
    code = Task("c/0", "Write f.", "f", "code")
    assert record_from_call(SolveRequest(code, 0, 1), sol("def f(): pass"))["correct"] is None


# ---------------------------------------------------------------------- a real model
pytest.importorskip("transformers")
from tiny_model import tiny_model_dir  # noqa: E402, F401


def test_records_of_the_tiny_model_through_the_env_fit(tiny_model_dir):  # noqa: F811
    import deliberation_env

    tasks = TASKS[:6]
    rec = RecordingBackend("hf", model=str(tiny_model_dir), max_new_tokens=8, device="cpu")
    env = deliberation_env.parallel_env(backend=rec, tasks=tasks)
    for seed in range(3):
        env.reset(seed=seed)
        while env.agents:
            env.step(dict.fromkeys(env.agents, 1))  # everyone REFINEs
    records = rec.records
    assert len(records) == 3 * (3 + 3 * 3)
    for r in records:
        assert set(r) == set(RECORD_KEYS)
        assert r["prompt_tokens"] > 0 and 0 < r["completion_tokens"] <= 8
        assert 0 <= r["self_confidence"] <= 1 and 0 <= r["logprob_confidence"] <= 1
        json.dumps(r)  # plain JSON types only
    # A refine record's previous answer is that agent's answer in the round before.
    last: dict[int, object] = {}
    for r in records:
        if r["action"] == "refine":
            assert r["prev_answer"] == last[r["agent"]]
            assert len(r["peer_answers"]) == len(r["peers_correct"]) == 2
        last[r["agent"]] = r["answer"]
    assert [r["round"] for r in records[:12]] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3

    profile = fit_profile(records, tasks=tasks)
    assert profile.sources["accuracy"] == "fit: mean correctness of 9 solve records"
    assert profile.completion_tokens <= 8
    sim = SimulatedBackend.fit(records)
    env = deliberation_env.parallel_env(backend=sim, tasks=tasks)
    env.reset(seed=0)
    env.step(dict.fromkeys(env.agents, 1))


def test_fit_reads_a_verifier_auroc_where_records_carry_scores(simulated_records):
    rng = np.random.default_rng(0)
    d = np.sqrt(2) * 0.8416  # AUROC 0.8 = Phi(d / sqrt 2)
    rows = [
        {**r, "verifier_score": float(rng.normal() + d * bool(r["correct"]))}
        for r in simulated_records
    ]
    assert fit_profile(simulated_records, base=BASE, tasks=TASKS).verifier_auroc is None
    assert abs(fit_profile(rows, base=BASE, tasks=TASKS).verifier_auroc - 0.8) < 0.02
