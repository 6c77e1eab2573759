"""Backend output is validated at the env's edge (`deliberation_env.validate`): hostile
values raise an error naming the backend, the field, the request and the value, or are
clipped with one warning; whatever a backend returns, observations stay inside their space.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import deliberation_env
from deliberation_env import Solution, Task, VectorDeliberationEnv
from deliberation_env.observation import ObservationLayout
from deliberation_env.protocol import BatchView, SolutionBatch
from deliberation_env.validate import (
    CONFIDENCE_FIELDS,
    COUNT_FIELDS,
    COUNT_MAX,
    OPTIONAL_FIELDS,
    BackendOutputWarning,
    ValidatedBackend,
)

TASKS = (Task(id="hostile/0", question="What is 6 * 7?", answer="42", kind="numeric"),)
LAYOUT = ObservationLayout(4)
GOOD = Solution("6 * 7 = 42", "42", 0.5, 0.5, None, 3, 2, 100, 20)

OK, CLIP, TYPE, VALUE = "ok", "clip", TypeError, ValueError


# ---------------------------------------------------------------------- backends
class TextBackend:
    """A text `Backend` answering every request with `make(request)`."""

    def __init__(self, make: Any) -> None:
        self.make = make

    def solve(self, requests):
        return [self.make(r) for r in requests]

    def refine(self, requests):
        return [self.make(r) for r in requests]


def text_env(sol: Any = GOOD, refine: Any = None, **kw: Any):
    """A parallel env whose backend answers `sol` at reset and `refine` (default `sol`) after."""

    def make(request):
        return sol if refine is None or not hasattr(request, "own") else refine

    return deliberation_env.parallel_env(backend=TextBackend(make), tasks=TASKS, **kw)


class ArrayBackend:
    """A `BatchBackend` returning `make(M)` (a `SolutionBatch`, or anything else)."""

    concede_tokens = 0

    def __init__(self, make: Any) -> None:
        self.make = make

    def bind(self, tasks, num_agents):
        pass

    def solve_batch(self, view: BatchView):
        return self.make(len(view.env))

    def refine_batch(self, view: BatchView):
        return self.make(len(view.env))

    def answer_text(self, task_index: int, answer_id: int) -> str | None:
        return None if answer_id < 0 else str(answer_id)


def good_batch(M: int, **fields: Any) -> SolutionBatch:
    answer = np.arange(M, dtype=np.int32) % 2
    arrays = {
        "answer": answer,
        "correct": answer == 0,
        "self_confidence": np.full(M, 0.5, np.float32),
        "judge_confidence": np.full(M, 0.5, np.float32),
        "logprob_confidence": np.full(M, np.nan, np.float32),
        "steps": np.full(M, 3, np.float32),
        "operators": np.full(M, 2, np.float32),
        "prompt_tokens": np.full(M, 100, np.int64),
        "completion_tokens": np.full(M, 20, np.int64),
    }
    for name, value in fields.items():
        arrays[name] = value(M) if callable(value) else value
    return SolutionBatch(**arrays)


def array_env(make: Any, **kw: Any):
    return deliberation_env.parallel_env(backend=ArrayBackend(make), tasks=TASKS, **kw)


def in_space(env, obs: dict) -> None:
    for agent, o in obs.items():
        assert env.observation_space(agent).contains(o), (agent, o)
    assert env.state_space.contains(env.state())


# ---------------------------------------------------------------------- text records
@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("self_confidence", math.nan, ValueError),
        ("judge_confidence", math.inf, ValueError),
        ("logprob_confidence", -math.inf, ValueError),
        ("logprob_confidence", math.nan, ValueError),  # None means "none", NaN is an error
        ("verifier_score", math.inf, ValueError),
        ("verifier_score", "high", TypeError),
        ("self_confidence", "0.9", TypeError),
        ("judge_confidence", True, TypeError),
        ("steps", -1, ValueError),
        ("operators", 2**31, ValueError),
        ("prompt_tokens", -5, ValueError),
        ("completion_tokens", 10**40, ValueError),
        ("steps", 3.0, TypeError),
        ("prompt_tokens", np.float64(1e9), TypeError),
        ("answer", 42, TypeError),
        ("answer", b"42", TypeError),
        ("text", None, TypeError),
    ],
)
def test_bad_record_field_raises_naming_backend_field_request_and_value(field, value, kind):
    env = text_env(replace(GOOD, **{field: value}))
    with pytest.raises(kind) as err:
        env.reset(seed=0)
    msg = str(err.value)
    for part in ("TextBackend", field, "agent_0", "round 0", "'hostile/0'", "What is 6 * 7?"):
        assert part in msg, (part, msg)
    assert repr(value)[:20] in msg


def test_bad_refine_names_the_refine_round_and_agent():
    env = text_env(GOOD, refine=replace(GOOD, steps=-3))
    env.reset(seed=0)
    env.step({"agent_0": 0, "agent_1": 0, "agent_2": 0})
    with pytest.raises(ValueError, match=r"steps=-3 for request 0 \(agent_2, round 2,"):
        env.step({"agent_0": 0, "agent_1": 0, "agent_2": 1})


@pytest.mark.parametrize("obj", [None, {"answer": "42"}, ("42", 0.5), "42"])
def test_non_solution_objects_raise(obj):
    env = text_env(obj)
    with pytest.raises(
        TypeError, match=r"TextBackend returned .* for request 0 \(agent_0.*Solution"
    ):
        env.reset(seed=0)


def test_wrong_number_of_solutions_raises():
    class Short(TextBackend):
        def solve(self, requests):
            return [GOOD]

    env = deliberation_env.parallel_env(backend=Short(None), tasks=TASKS)
    with pytest.raises(RuntimeError, match="Short returned 1 solutions for 3 requests"):
        env.reset(seed=0)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("self_confidence", 1e9, 1.0),
        ("self_confidence", -0.5, 0.0),
        ("judge_confidence", 1e300, 1.0),  # finite in float64, inf as float32: still clipped
        ("judge_confidence", 2, 1.0),
        ("logprob_confidence", -2.3, 0.0),  # a log-prob, not a probability
        ("verifier_score", 7.5, None),  # not in this layout (no verifier group): checked anyway
    ],
)
def test_out_of_range_confidence_is_clipped_with_one_warning(field, value, expected):
    env = text_env(replace(GOOD, **{field: value}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obs, _ = env.reset(seed=0)
        for _ in range(2):
            obs, *_ = env.step({a: 1 for a in env.agents})  # every agent refines
        env.reset(seed=1)
    ours = [w for w in caught if issubclass(w.category, BackendOutputWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    msg = str(ours[0].message)
    assert "TextBackend" in msg and field in msg and "clipped" in msg and "agent_0" in msg
    if field == "logprob_confidence":
        assert "log-probability" in msg and "math.exp" in msg
    if expected is not None:
        assert obs["agent_0"][LAYOUT.index(f"own.{field}")] == expected
    else:
        assert env.core.state.verifier_score[0, 0] == 1.0
    in_space(env, obs)


def test_one_warning_per_field():
    env = text_env(replace(GOOD, self_confidence=1.5, judge_confidence=-1.0))
    with pytest.warns(BackendOutputWarning) as caught:
        env.reset(seed=0)
        env.step({a: 1 for a in env.agents})
    fields = sorted(str(w.message).split(" returned ")[1].split("=")[0] for w in caught)
    assert fields == ["judge_confidence", "self_confidence"]


def test_numpy_scalars_and_none_logprob_are_accepted():
    sol = Solution(
        "t", "42", np.float32(0.25), np.float64(1.0), None, np.int64(3), 0, np.int32(7), 0
    )
    env = text_env(sol)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendOutputWarning)
        obs, infos = env.reset(seed=0)
    assert infos["agent_0"]["tokens"] == 7 and infos["agent_0"]["correct"]
    assert obs["agent_0"][LAYOUT.index("own.has_logprob")] == 0.0
    in_space(env, obs)


def test_the_backend_property_still_gives_the_users_backend():
    backend = TextBackend(lambda r: GOOD)
    env = deliberation_env.parallel_env(backend=backend, tasks=TASKS)
    assert env.backend is backend
    assert isinstance(env.core.backend, ValidatedBackend)
    vec = VectorDeliberationEnv(2, backend=backend, tasks=TASKS)
    assert vec.backend is backend


# ---------------------------------------------------------------------- arrays
@pytest.mark.parametrize(
    ("fields", "kind", "match"),
    [
        (
            {"self_confidence": lambda M: np.full(M, np.nan, np.float32)},
            ValueError,
            "self_confidence=nan",
        ),
        ({"judge_confidence": lambda M: np.full(M, np.inf)}, ValueError, "judge_confidence=inf"),
        ({"logprob_confidence": lambda M: np.full(M, -np.inf)}, ValueError, "NaN means none"),
        ({"verifier_score": lambda M: np.full(M, np.inf)}, ValueError, "verifier_score=inf"),
        ({"verifier_score": lambda M: [0.5] * M}, TypeError, "verifier_score as list"),
        ({"steps": lambda M: np.full(M, np.nan, np.float32)}, ValueError, "steps=nan"),
        ({"operators": lambda M: np.full(M, -1.0, np.float32)}, ValueError, "operators=-1.0"),
        ({"prompt_tokens": lambda M: np.full(M, -1, np.int64)}, ValueError, "prompt_tokens=-1"),
        ({"completion_tokens": lambda M: np.full(M, 2**40)}, ValueError, "completion_tokens="),
        ({"answer": lambda M: np.full(M, -2, np.int32)}, ValueError, "answer=-2"),
        ({"answer": lambda M: np.zeros(M)}, TypeError, "answer as float64 array"),
        ({"self_confidence": lambda M: np.full(M, "0.5")}, TypeError, "self_confidence as <U3"),
        ({"correct": lambda M: [True] * M}, TypeError, "correct as list"),
        ({"steps": lambda M: np.zeros(M + 1, np.float32)}, ValueError, r"shape \(4,\) for 3"),
        ({"records": lambda M: [None] * M}, ValueError, "records"),
    ],
)
def test_bad_batch_raises(fields, kind, match):
    env = array_env(lambda M: good_batch(M, **fields))
    with pytest.raises(kind, match=match) as err:
        env.reset(seed=0)
    assert "ArrayBackend" in str(err.value)


def test_batch_error_names_the_env_of_a_vector_env():
    def make(M):
        return good_batch(M, steps=lambda M: np.r_[np.zeros(M - 1), -2.0].astype(np.float32))

    vec = VectorDeliberationEnv(2, backend=ArrayBackend(make), tasks=TASKS)
    with pytest.raises(ValueError, match=r"steps=-2.0 for request 5 \(agent_2 of env 1, round 0"):
        vec.reset(seed=0)


def test_not_a_solution_batch_raises():
    env = array_env(lambda M: {"answer": np.zeros(M)})
    with pytest.raises(TypeError, match="returned dict from solve_batch"):
        env.reset(seed=0)


def test_bad_concede_tokens_raise_at_construction():
    backend = ArrayBackend(good_batch)
    backend.concede_tokens = -1
    with pytest.raises(ValueError, match="concede_tokens=-1"):
        deliberation_env.parallel_env(backend=backend, tasks=TASKS)


def test_batch_confidences_are_clipped_without_touching_the_backends_arrays():
    conf = np.array([1e9, -0.5, 0.5], np.float32)
    lp = np.array([-2.3, np.nan, 0.5], np.float32)
    env = array_env(lambda M: good_batch(M, self_confidence=conf, logprob_confidence=lp))
    with pytest.warns(BackendOutputWarning):
        obs, _ = env.reset(seed=0)
    got = [obs[a][LAYOUT.index("own.self_confidence")] for a in env.possible_agents]
    assert got == [1.0, 0.0, 0.5]
    has_lp = [obs[a][LAYOUT.index("own.has_logprob")] for a in env.possible_agents]
    assert has_lp == [1.0, 0.0, 1.0]
    assert conf[0] == np.float32(1e9) and lp[0] == np.float32(-2.3)  # the backend's own
    in_space(env, obs)


def test_simulated_backend_needs_no_repair():
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendOutputWarning)
        vec = VectorDeliberationEnv(64)
        vec.reset(seed=0)
        for _ in range(6):
            vec.step(np.ones((64, 3), np.int64))


# ---------------------------------------------------------------------- property test
HOSTILE_FLOATS = [1e9, -1e9, -0.5, -2.3, 1.5, 1e300, math.nan, math.inf, -math.inf]
HOSTILE_COUNTS: list[Any] = [-1, -(10**9), 2**31, 2**63, 10**40, 3.0, math.nan, True]


def confidence_values(broken: bool = False):
    """Confidences in range, or finite ones to clip; with `broken`, also errors."""
    good = st.floats(0, 1) | st.sampled_from([0, 1])
    clip = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(HOSTILE_FLOATS[:6])
    if not broken:
        return st.one_of(good, good, clip)
    return st.one_of(good, clip, st.sampled_from(HOSTILE_FLOATS[6:] + ["0.5", True, None, [0.5]]))


def outcome(field: str, value: Any) -> Any:
    """What the env must do with `value` in `field` of a `Solution`."""
    if field in OPTIONAL_FIELDS and value is None:
        return OK
    if field in CONFIDENCE_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return TYPE
        if not math.isfinite(value):
            return VALUE
        return OK if 0 <= value <= 1 else CLIP
    if field in COUNT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            return TYPE
        return OK if 0 <= value <= COUNT_MAX else VALUE
    if field == "answer":
        return OK if value is None or isinstance(value, str) else TYPE
    return OK if isinstance(value, str) else TYPE  # text


def solutions(data: st.DataObject, count: int) -> tuple[list[Any], set[Any], set[str]]:
    """`count` drawn records; (records, expected errors, fields that must be clipped)."""
    records: list[Any] = []
    errors: set[Any] = set()
    clipped: set[str] = set()
    for _ in range(count):
        if data.draw(st.integers(0, 40)) == 0:
            records.append(data.draw(st.sampled_from([None, "42", {"answer": "42"}, 42])))
            errors.add(TYPE)
            continue
        poison = data.draw(st.integers(0, 9)) == 0  # one record in ten is broken
        values = {
            "text": st.text(max_size=5),
            "answer": st.sampled_from([None, "42", "41", "x", ""]),
            **{f: confidence_values() for f in CONFIDENCE_FIELDS},
            **{f: st.integers(0, 500) for f in COUNT_FIELDS},
        }
        for f in OPTIONAL_FIELDS:
            values[f] = st.none() | values[f]
        fields = {f: data.draw(s, label=f) for f, s in values.items()}
        if poison:
            f = data.draw(st.sampled_from(["text", "answer", *COUNT_FIELDS, *CONFIDENCE_FIELDS]))
            hostile = {
                "text": st.sampled_from([None, 42, b"x"]),
                "answer": st.sampled_from([42, 4.2, b"42", ["42"]]),
            }.get(
                f, st.sampled_from(HOSTILE_COUNTS) if f in COUNT_FIELDS else confidence_values(True)
            )
            fields[f] = data.draw(hostile, label=f"hostile {f}")
        record = Solution(**fields)
        records.append(record)
        for f, v in fields.items():
            o = outcome(f, v)
            if o is CLIP:
                clipped.add(f)
            elif o is not OK:
                errors.add(o)
    return records, errors, clipped


def drawing_backend(data: st.DataObject, log: list):
    """A text backend whose every call draws its records (and logs what it expects)."""

    def answer(requests):
        records, errors, clipped = solutions(data, len(requests))
        log.append((errors, clipped))
        return records

    backend = TextBackend(None)
    backend.solve = answer  # type: ignore[method-assign]
    backend.refine = answer  # type: ignore[method-assign]
    return backend


def check_call(log: list, err: BaseException | None, warned: set[str], seen_clip: set[str]):
    errors, clipped = log[-1]
    event("call: " + ("error" if errors else "clipped" if clipped else "clean"))
    if errors:
        assert err is not None and type(err) in errors, (errors, err)
        assert "TextBackend" in str(err) or "TextBackend" in repr(err)
    else:
        assert err is None, err
        seen_clip |= clipped
    assert warned <= seen_clip | clipped


def warned_fields(caught: list) -> set[str]:
    return {
        str(w.message).split(" returned ")[1].split("=")[0]
        for w in caught
        if issubclass(w.category, BackendOutputWarning)
    }


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(data=st.data())
def test_hostile_text_backend_parallel_env(data):
    log: list = []
    env = deliberation_env.parallel_env(
        backend=drawing_backend(data, log), tasks=TASKS, max_rounds=3
    )
    seen_clip: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obs, infos = env.reset(seed=data.draw(st.integers(0, 2**32 - 1)))
            err = None
        except (TypeError, ValueError) as e:
            err, obs = e, None
        check_call(log, err, warned_fields(caught), seen_clip)
        if err is not None:
            return
        in_space(env, obs)
        total = sum(i["tokens"] for i in infos.values())
        while env.agents:
            actions = {a: data.draw(st.integers(0, 2), label=a) for a in env.agents}
            calls = len(log)
            try:
                obs, rewards, _, _, infos = env.step(actions)
                err = None
            except (TypeError, ValueError) as e:
                err = e
            if len(log) > calls:  # somebody refined: a backend call
                check_call(log, err, warned_fields(caught), seen_clip)
            else:
                assert err is None, err
            if err is not None:
                return
            in_space(env, obs)
            assert all(math.isfinite(r) for r in rewards.values())
            assert all(isinstance(i["tokens"], int) and i["tokens"] >= 0 for i in infos.values())
            total += sum(i["tokens"] for i in infos.values())
        assert infos["agent_0"]["total_tokens"] == total
        assert len([w for w in caught if issubclass(w.category, BackendOutputWarning)]) == len(
            warned_fields(caught)
        )  # one warning per field


@st.composite
def hostile_arrays(draw, M: int) -> tuple[Any, Any]:
    """A `SolutionBatch` of `M` (possibly broken) solutions, and the expected outcome."""
    conf = st.sampled_from([0.0, 0.3, 1.0, *HOSTILE_FLOATS[:6]])
    batch = good_batch(M)
    expected: Any = OK
    for name in CONFIDENCE_FIELDS:
        if draw(st.booleans()):
            values = np.array(draw(st.lists(conf, min_size=M, max_size=M)), np.float64)
            if draw(st.integers(0, 7)) == 0:
                values[draw(st.integers(0, M - 1))] = draw(st.sampled_from(HOSTILE_FLOATS[6:]))
            if draw(st.booleans()):  # float32, as a BatchBackend holds them: 1e300 is inf
                values = values.astype(np.float32)
            setattr(batch, name, values)
            finite = np.isfinite(values) | (np.isnan(values) & (name in OPTIONAL_FIELDS))
            if not finite.all():
                expected = VALUE
            elif expected is OK and ((values < 0) | (values > 1)).any():
                expected = CLIP
    if draw(st.integers(0, 7)) == 0:
        name = draw(st.sampled_from(["steps", "operators", "prompt_tokens", "completion_tokens"]))
        value = draw(
            st.sampled_from(
                [-1, 2**40] + ([math.nan, math.inf] if name in ("steps", "operators") else [])
            )
        )
        x = getattr(batch, name).copy()
        x[draw(st.integers(0, M - 1))] = value
        setattr(batch, name, x)
        expected = VALUE
    if draw(st.integers(0, 15)) == 0:
        name, value = draw(
            st.sampled_from(
                [
                    ("answer", np.zeros(M, np.float32)),
                    ("correct", np.zeros(M, np.int8)),
                    ("steps", np.zeros(M + 1, np.float32)),
                    ("self_confidence", [0.5] * M),
                ]
            )
        )
        setattr(batch, name, value)
        return batch, (TypeError, ValueError)
    if expected is OK or expected is CLIP:
        return batch, expected
    return batch, (ValueError,)


@PROPERTY
@given(data=st.data(), num_envs=st.integers(1, 3))
def test_hostile_array_backend_vector_env(data, num_envs):
    expected: list[Any] = []

    def make(M: int):
        batch, outcome_ = data.draw(hostile_arrays(M))
        expected.append(outcome_)
        return batch

    vec = VectorDeliberationEnv(num_envs, backend=ArrayBackend(make), tasks=TASKS)
    space = vec.single_observation_space
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in range(7):  # two episodes and a bit, through the autoreset
            calls = len(expected)
            try:
                if t == 0:
                    obs, infos = vec.reset(seed=data.draw(st.integers(0, 2**32 - 1)))
                else:
                    actions = data.draw(
                        st.lists(st.integers(0, 2), min_size=3 * num_envs, max_size=3 * num_envs)
                    )
                    obs, rewards, _, _, infos = vec.step(np.reshape(actions, (num_envs, 3)))
                    assert np.isfinite(rewards).all()
                err = None
            except (TypeError, ValueError) as e:
                err = e
            outcomes = expected[calls:]
            for o in outcomes:
                event("call: " + ("error" if isinstance(o, tuple) else o))
            failed = [o for o in outcomes if isinstance(o, tuple)]
            if failed:
                # The first broken call raised, and nothing after it ran.
                assert err is not None and isinstance(err, failed[0]) and len(failed) == 1, err
                assert outcomes[-1] is failed[0] and "ArrayBackend" in str(err)
                return
            assert err is None, err
            assert obs.dtype == np.float32 and obs.shape[:2] == (num_envs, 3)
            assert all(space.contains(o) for o in obs.reshape(-1, obs.shape[-1]))
            assert (infos["tokens"] >= 0).all()
            if "episode_tokens" in infos:
                assert (infos["episode_tokens"] >= 0).all()
    ours = [w for w in caught if issubclass(w.category, BackendOutputWarning)]
    assert len(ours) == len(warned_fields(caught)) <= len(CONFIDENCE_FIELDS)  # once per field
    if CLIP in expected:
        assert ours


@PROPERTY
@given(data=st.data())
def test_hostile_text_backend_vector_env(data):
    log: list = []
    vec = VectorDeliberationEnv(2, backend=drawing_backend(data, log), tasks=TASKS)
    seen_clip: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for t in range(5):
            calls = len(log)
            try:
                if t == 0:
                    obs, _ = vec.reset(seed=data.draw(st.integers(0, 2**32 - 1)))
                else:
                    actions = data.draw(st.lists(st.integers(0, 2), min_size=6, max_size=6))
                    obs, rewards, _, _, infos = vec.step(np.reshape(actions, (2, 3)))
                    assert np.isfinite(rewards).all() and (infos["episode_tokens"] >= 0).all()
                err = None
            except (TypeError, ValueError) as e:
                err = e
            # A step can call the backend twice (REFINEs, then an autoreset's solve).
            for k in range(calls, len(log)):
                errors, clipped = log[k]
                event("call: " + ("error" if errors else "clipped" if clipped else "clean"))
                if errors:
                    assert err is not None and type(err) in errors and k == len(log) - 1, err
                    return
                seen_clip |= clipped
            assert err is None, err
            assert ((obs >= 0) & (obs <= 1)).all() and obs.dtype == np.float32
    assert warned_fields(caught) <= seen_clip
