"""The fidelity report (`experiments.fidelity`): the one statistics function on hand-worked
arrays, Wilson and paired intervals, the section-H counts of calibration.md, and the
command end to end on a fixture log of each format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from agents.cache import ResponseCache
from agents.profiles import get_profile
from agents.transcripts import load_transcript
from deliberation_env.tasks import generate_arithmetic
from experiments import fidelity as fid
from experiments.fidelity_stats import (
    cell_counts,
    cells,
    deliberation_stats,
    paired_delta_ci,
    phi_coefficient,
    split_label,
    wilson,
)

FIXTURES = Path(__file__).parent / "fixtures" / "transcripts"
SECTION_H = json.loads((FIXTURES / "section_h_counts.json").read_text())["sources"]
ROUND_1_CELLS = ["fix_0of2", "fix_1of2", "fix_2of2", "break_0of2", "break_1of2", "break_2of2",
                 "adopt_agreeing_pair", "vote_delta_last_round"]  # fmt: skip


def _k_n(c: dict) -> tuple[int, int]:
    return c["k"], c["n"]


# ---------------------------------------------------------------------- the statistics
def test_stats_on_a_hand_worked_debate() -> None:
    # q0: agents 0 and 2 right (id 0), agent 1 wrong (id 1); all right after the round.
    # q1: agents 0 and 1 agree on wrong id 1, agent 2 right; agent 2 gives in.
    answers = np.array([[[0, 1, 0], [0, 0, 0]], [[1, 1, 0], [1, 1, 1]]])
    s = deliberation_stats(answers, answers == 0)
    assert [_k_n(c) for c in s["agent_accuracy"]] == [(3, 6), (3, 6)]
    assert [_k_n(c) for c in s["vote_accuracy"]] == [(1, 2), (1, 2)]
    assert [_k_n(c) for c in s["unanimous"]] == [(0, 2), (2, 2)]
    t = s["transitions"][0]
    # Wrong agents: q1 agents 0, 1 had one right peer and stayed wrong; q0 agent 1 had two
    # and was fixed. Right agents: q0 agents 0, 2 had one right peer and kept it; q1 agent 2
    # had none and broke.
    assert [_k_n(c) for c in t["fix"]] == [(0, 0), (0, 2), (1, 1)]
    assert [_k_n(c) for c in t["break"]] == [(1, 1), (0, 2), (0, 0)]
    assert _k_n(t["adopt_agreeing_peers"]) == (2, 2)  # q0 agent 1 and q1 agent 2 adopted
    assert _k_n(t["keep_agreeing"]) == (0, 0)  # no question was unanimous
    assert _k_n(t["unchanged"]) == (4, 6)
    assert s["splits"] == {"2-1": {"questions": 2, "vote_initial": 1, "vote_final": 1,
                                   "by_right": {"1": {"questions": 1, "vote_final": 0},
                                                "2": {"questions": 1, "vote_final": 1}}}}  # fmt: skip
    assert s["vote_change"] == {"both": 1, "gained": 0, "lost": 0, "neither": 1}


def test_unparseable_answers_agree_with_nobody_and_ties_go_to_the_first_holder() -> None:
    answers = np.array([[[-1, 2, 0], [-1, -1, -1]], [[3, 0, 0], [3, 3, 3]]])
    correct = answers == 0
    s = deliberation_stats(answers, correct)
    # q0 round 0: "2" (agent 1) and "0" (agent 2) tie; agent 1 holds first: wrong. Round 1:
    # nothing parsed, no vote. q1: the right pair wins, then all adopt the wrong "3".
    assert [_k_n(c) for c in s["vote_accuracy"]] == [(1, 2), (0, 2)]
    assert [_k_n(c) for c in s["unanimous"]] == [(0, 2), (1, 2)]  # all-unparsed is not
    t = s["transitions"][0]
    assert _k_n(t["unchanged"]) == (2, 6)  # q0 agent 0 stays unparsed; q1 agent 0 keeps 3
    assert _k_n(t["adopt_agreeing_peers"]) == (0, 1)  # q1 agent 0 faced the pair and kept 3
    assert [_k_n(c) for c in t["break"]] == [(1, 1), (2, 2), (0, 0)]
    assert list(s["splits"]) == ["2-1", "1-1-1"]
    assert s["splits"]["1-1-1"]["by_right"] == {"1": {"questions": 1, "vote_final": 0}}


def test_split_labels() -> None:
    assert split_label(np.array([4, 4, 4])) == "3"
    assert split_label(np.array([0, 5, 0])) == "2-1"
    assert split_label(np.array([-1, -1, 2])) == "1-1-1"  # unparseable: a group of its own
    assert split_label(np.array([1, 1, 2, 2, 3])) == "2-2-1"


def test_cell_names_for_two_rounds_and_for_four_agents() -> None:
    rng = np.random.default_rng(0)
    answers = rng.integers(-1, 3, (30, 3, 3))
    s = deliberation_stats(answers, answers == 0)
    names = [c["name"] for c in cells(s, s)]
    later = [n + "_r2" for n in ROUND_1_CELLS if n != "vote_delta_last_round"]
    assert set(names) <= set(ROUND_1_CELLS + later)
    assert names.index("vote_delta_last_round") == sum(1 for n in names if "_r2" not in n) - 1
    four = deliberation_stats(answers[..., [0, 1, 2, 0]], answers[..., [0, 1, 2, 0]] == 0)
    assert {"fix_3of3", "break_0of3", "adopt_agreeing_peers"} <= set(cell_counts(four))
    alone = deliberation_stats(answers[..., :1], answers[..., :1] == 0)  # self-refinement
    assert set(cell_counts(alone)) == {"fix_no_peers", "break_no_peers", "fix_no_peers_r2",
                                       "break_no_peers_r2"}  # fmt: skip


def test_identical_sides_are_inside_every_cell() -> None:
    answers = np.random.default_rng(1).integers(0, 3, (40, 2, 3))
    s = deliberation_stats(answers, answers == 0)
    out = cells(s, s)
    assert all(c["inside_ci"] for c in out)
    assert all(c["real"] == pytest.approx(c["simulated"]) for c in out)


def test_stats_refuse_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"must both be \[Q, R\+1, N\]"):
        deliberation_stats(np.zeros((2, 2, 3)), np.zeros((2, 2, 2), bool))


# ---------------------------------------------------------------------- intervals
def _wilson_closed_form(k: int, n: int) -> tuple[float, float]:
    z = norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 63), (19, 21), (10, 10), (50, 100)])
def test_wilson_is_scipys(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high))
    assert wilson(k, n) == pytest.approx(_wilson_closed_form(k, n), abs=1e-12)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_paired_delta_interval() -> None:
    lo, hi = paired_delta_ci(69, 68, 100)
    assert lo < 0.01 < hi
    # Positively correlated pairs (the same questions) give a narrower interval.
    lo2, hi2 = paired_delta_ci(69, 68, 100, phi_coefficient(64, 5, 4, 27))
    assert lo < lo2 < 0.01 < hi2 < hi
    assert paired_delta_ci(68, 69, 100) == pytest.approx((-hi, -lo))  # mirror image
    assert phi_coefficient(1, 0, 0, 1) == 0.0  # ad - bc = n/2: corrected to 0
    assert phi_coefficient(0, 5, 5, 0) == pytest.approx(-1.0)
    assert phi_coefficient(10, 0, 0, 0) == 0.0  # an empty margin


# ---------------------------------------------------------------------- section H
@pytest.mark.parametrize("name", sorted(SECTION_H))
def test_section_h_counts_match_calibration_md(name: str) -> None:
    """The fixture's counts (calibration.md H2, H3) reproduce the published percentages
    and H1's accuracies; 3 agents x 100 questions = 300 agent-answers."""
    s = SECTION_H[name]
    for kind in ("fix", "break"):
        for (k, n), pct in zip(s[kind], s[f"{kind}_percent"]):
            assert round(100 * k / n, 1) == pytest.approx(pct, abs=0.051)
    k, n = s["adopt_agreeing_pair"]
    assert round(100 * k / n, 1) == pytest.approx(s["adopt_percent"], abs=0.051)
    wrong = sum(n for _, n in s["fix"])
    right = sum(n for _, n in s["break"])
    assert wrong + right == 300
    assert 100 * right / 300 == pytest.approx(s["agent_accuracy_percent"][0], abs=0.05)
    after = sum(k for k, _ in s["fix"]) + right - sum(k for k, _ in s["break"])
    assert 100 * after / 300 == pytest.approx(s["agent_accuracy_percent"][1], abs=0.05)
    assert s["keep_agreeing"][1] == 3 * s["unanimous_percent"][0]  # unanimous questions x 3
    assert s["adopt_agreeing_pair"][1] == s["splits_percent"]["2-1"]  # one dissenter per 2-1


@pytest.mark.parametrize("name", sorted(SECTION_H))
def test_wilson_intervals_of_the_section_h_counts(name: str) -> None:
    s = SECTION_H[name]
    for k, n in [*s["fix"], *s["break"], s["adopt_agreeing_pair"]]:
        lo, hi = wilson(k, n)
        assert (lo, hi) == pytest.approx(_wilson_closed_form(k, n), abs=1e-12)
        assert lo <= k / n <= hi


def test_section_h_pooled_claims() -> None:
    """The issue's reading of H2/H3: a wrong agent with two right peers is fixed ~90% of the
    time, and the intervals exclude the old default 0.58 for Q1.5 and G35s."""
    lo, hi = wilson(*SECTION_H["Q1.5"]["fix"][2])
    assert (round(lo, 3), round(hi, 3)) == (0.711, 0.973)
    for name in ("Q1.5", "G35s"):
        assert wilson(*SECTION_H[name]["fix"][2])[0] > 0.58


# ---------------------------------------------------------------------- the replay
def test_simulate_replays_every_question_with_replicas() -> None:
    tasks = generate_arithmetic(30, seed=3)
    profile = get_profile("llama3.1-8b/gsm8k").with_(accuracy=0.7)
    answers, correct = fid.simulate(tasks, profile, 3, 2, replicas=40, seed=1)
    assert answers.shape == correct.shape == (30 * 40, 3, 3)
    assert np.array_equal(correct, answers == 0)  # the simulator's ids: 0 is the gold
    assert correct[:, 0].mean() == pytest.approx(0.7, abs=0.04)


def _check_shape(result: dict) -> None:
    assert set(result) == {"real", "simulated", "cells", "inside", "total"}
    assert isinstance(result["real"], dict) and isinstance(result["simulated"], dict)
    for c in result["cells"]:
        assert set(c) == {"name", "real", "real_ci", "real_n", "simulated", "inside_ci"}
        assert isinstance(c["name"], str) and isinstance(c["real"], float)
        assert len(c["real_ci"]) == 2 and all(isinstance(x, float) for x in c["real_ci"])
        assert c["real_ci"][0] <= c["real"] + 1e-12 and c["real"] <= c["real_ci"][1] + 1e-12
        assert isinstance(c["real_n"], int) and c["real_n"] > 0
        assert isinstance(c["simulated"], float) and isinstance(c["inside_ci"], bool)
    assert result["inside"] == sum(c["inside_ci"] for c in result["cells"])
    assert result["total"] == len(result["cells"])


def _sqlite(tmp_path: Path) -> Path:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    rows = (FIXTURES / "records_small.jsonl").read_text().splitlines()
    cache.put_records((f"k{i}", json.loads(r)) for i, r in enumerate(rows))
    cache.close()
    return tmp_path / "cache.sqlite"


@pytest.mark.parametrize(
    ("log", "fmt", "rounds"),
    [("du_small.json", "du", 1), ("debate_small.jsonl", "jsonl", 2),
     ("records_small.jsonl", "cache", 1), ("sqlite", "cache", 1)],
)  # fmt: skip
def test_end_to_end_each_format(tmp_path: Path, log: str, fmt: str, rounds: int) -> None:
    path = _sqlite(tmp_path) if log == "sqlite" else FIXTURES / log
    out = tmp_path / "out"
    argv = ["--transcripts", str(path), "--format", fmt, "--replicas", "5", "--out", str(out)]
    assert fid.main(argv) == 0
    result = json.loads((out / "fidelity.json").read_text())
    _check_shape(result)
    names = [c["name"] for c in result["cells"]]
    assert "vote_delta_last_round" in names
    assert any(n.endswith("_r2") for n in names) == (rounds == 2)
    assert (out / "fidelity.md").read_text().startswith("# Fidelity:")
    assert (out / "fidelity.png").stat().st_size > 0
    real = result["real"]
    t = load_transcript(path, fmt)
    assert real["agent_accuracy"][0]["k"] == int(t.correct[:, 0].sum())
    sim = result["simulated"]
    assert sim["questions"] == 5 * t.num_questions and sim["rounds"] == rounds
    # The profile starts at the transcript's round-0 accuracy.
    assert sim["profile"]["accuracy"] == pytest.approx(real["agent_accuracy"][0]["rate"])


def test_fit_and_keep_accuracy(tmp_path: Path) -> None:
    log = FIXTURES / "du_small.json"
    t = load_transcript(log)
    kept = fid.fidelity(t, "toy", keep_accuracy=True, replicas=3)
    assert kept["simulated"]["profile"]["accuracy"] == get_profile("toy").accuracy
    fitted = fid.fidelity(t, fit=True, replicas=3)
    _check_shape(json.loads(json.dumps(fitted, default=float)))
    assert fitted["simulated"]["fitted"] and "fitted" in fitted["simulated"]["profile"]["name"]
    base = get_profile("llama3.1-8b/gsm8k")
    assert tuple(fitted["simulated"]["profile"]["fix_rate"]) != base.fix_rate


def test_the_section_h_cells_of_a_fixture_with_those_counts(tmp_path: Path) -> None:
    """A JSONL log built to hold Q3's one-round counts gives Q3's published cells."""
    rows = _q3_like_rows()
    path = tmp_path / "q3.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = fid.fidelity(load_transcript(path), replicas=2)
    got = {c["name"]: (round(c["real"] * c["real_n"]), c["real_n"]) for c in result["cells"]}
    assert got["fix_2of2"] == (10, 10) and got["break_2of2"] == (0, 210)
    assert got["adopt_agreeing_pair"][1] == 18


def _q3_like_rows() -> list[dict]:
    """100 questions: 70 unanimous right, 6 unanimous wrong, 10 2-1 with the pair right
    (dissenter adopts), 8 2-1 with the pair wrong, 6 1-1-1: enough for the three cells."""
    rows = []
    plan = ([(["5", "5", "5"], ["5", "5", "5"])] * 70 + [(["4", "4", "4"], ["4", "4", "4"])] * 6
            + [(["5", "5", "4"], ["5", "5", "5"])] * 10 + [(["4", "4", "5"], ["4", "4", "4"])] * 7
            + [(["4", "4", "5"], ["4", "4", "5"])] * 1 + [(["5", "4", "3"], ["5", "4", "3"])] * 6)  # fmt: skip
    for q, (r0, r1) in enumerate(plan):
        rows.append({"question": f"question {q}", "gold": "5", "rounds": [r0, r1]})
    return rows


def test_cli_errors_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_round = tmp_path / "r0.jsonl"
    one_round.write_text(json.dumps({"question": "q", "gold": "1", "rounds": [["1", "1", "2"]]}))
    code = fid.main(["--transcripts", str(one_round), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "at least one round after the initial one" in capsys.readouterr().err
