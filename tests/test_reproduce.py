"""The paper's reproduction experiments (`experiments.reproduce`): each runs end to end on
a minimal budget and writes its JSON, Markdown and figures, which `--render-only` redraws
from the JSON alone; SoftRankPO is exactly invariant to increasing reward transforms while
GRPO is not; the effective-action accounting on hand-worked cases; one `Budget` for
compare and reproduce."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from agents.simulated import SimulatedBackend
from algorithms.evaluate import EFFECTIVE_KEYS, effective_action_counts, effective_shares
from deliberation_env.backends import BACKENDS, register_backend
from experiments import pipeline
from experiments.budgets import BUDGETS, Budget, get_budget
from experiments.cli import main as cli_main
from experiments.compare import run_compare
from experiments.paper import setup as paper
from experiments.paper.setup import Setup
from experiments.paper.tau_sweep import VARIANTS as TAU_VARIANTS
from experiments.reproduce import render_experiment, reproduce
from experiments.stats import pareto_front

P, R, C = 0, 1, 2  # PERSIST, REFINE, CONCEDE

MINIMAL = Budget(updates=2, questions_per_update=4, group_size=4, sft_episodes=32,
                 sft_epochs=1, eval_episodes=24, eval_seeds=(0, 1), train_seeds=(0,))  # fmt: skip


# The simulator reads question ids only; a small question set keeps generation cheap.
TASKS = {b: "arithmetic:300" for b in paper.BENCHMARKS}


def _setup(**kw) -> Setup:
    return Setup(budget=MINIMAL, progress=False, tasks=TASKS, **kw)


def _check_outputs(out, results, figures):
    assert (out / "results.md").read_text().startswith("# ")
    saved = json.loads((out / "results.json").read_text())
    assert saved["experiment"] == results["experiment"]
    assert saved["wall_seconds"] > 0
    for name in figures:
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
        assert name in saved["files"]
    _check_render_only(out, saved)


def _check_render_only(out, saved):
    """`render` rebuilds the Markdown byte for byte, and the figures, from results.json."""
    again = out / "rendered"
    again.mkdir()
    shutil.copy(out / "results.json", again / "results.json")
    written = render_experiment(saved["experiment"], again)
    assert [p.name for p in written] == saved["files"][1:]
    assert (again / "results.md").read_bytes() == (out / "results.md").read_bytes()
    for name in saved["files"][2:]:
        assert (again / name).read_bytes()[:4] == b"\x89PNG", name


# --------------------------------------------------------------------------- hand cases
def test_effective_action_counts_hand_worked():
    before = np.array([[5, 5, 5], [1, 2, 2], [-1, -1, -1]])
    actions = np.array([[C, C, P], [C, C, R], [C, P, P]])
    # env 0: everyone agrees, both CONCEDEs copy my own answer: no-ops, all peers agree.
    # env 1: agent 0 moves 1 -> 2 (a real CONCEDE); agent 1 copies agent 2's 2 = its own
    #        answer (no-op, but agent 0 disagreed); agent 2 REFINEs 2 -> 3.
    # env 2: nothing parsed; the (masked) CONCEDE keeps the answer: a no-op, no agreement.
    after = np.array([[5, 5, 5], [2, 2, 3], [-1, -1, -1]])
    counts = effective_action_counts(actions, before, after)
    assert counts == {"persist": 3, "refine": 1, "concede": 1, "concede_noop": 4,
                      "concede_all_agree": 2}  # fmt: skip
    # Envs that did not play the round are not counted.
    only_first = effective_action_counts(actions, before, after, active=[True, False, False])
    assert only_first == {"persist": 1, "refine": 0, "concede": 0, "concede_noop": 2,
                          "concede_all_agree": 2}  # fmt: skip
    shares = effective_shares(counts)
    assert shares["persist"] == pytest.approx(3 / 9)
    assert shares["concede_noop"] == pytest.approx(4 / 9)
    assert shares["keeps_answer_without_llm"] == pytest.approx(7 / 9)
    assert sum(shares[k] for k in EFFECTIVE_KEYS) == pytest.approx(1.0)


def test_pareto_front_hand_worked():
    tokens = [100, 200, 150, 400, 300, 200]
    accuracy = [0.5, 0.7, 0.5, 0.9, 0.6, 0.7]
    # 150 is beaten by 100 (same accuracy, fewer tokens); 300 by 200; the second 200 ties.
    assert pareto_front(tokens, accuracy) == [0, 1, 3]


# --------------------------------------------------------------------------- invariance
def test_reward_scale_softrankpo_identical_grpo_differs(tmp_path):
    results = reproduce("reward-scale", _setup(), tmp_path)
    inv = results["invariance"]
    assert set(inv["softrankpo"]) == {"x0.1", "x10", "exp"}
    assert all(d == 0.0 for d in inv["softrankpo"].values()), inv
    assert results["softrankpo_identical"]
    curves = results["learning_curves"]["softrankpo"]
    assert all(curves[tf] == curves["x1"] for tf in ("x0.1", "x10", "exp"))
    # GRPO depends on the values: the exp transform changes its run; without the std
    # scaling (Dr. GRPO) so does every rescaling.
    assert inv["grpo"]["exp"] > 0
    assert all(d > 0 for d in inv["grpo_unscaled"].values()), inv
    _check_outputs(tmp_path, results, ["reward_scale_curves.png"])


# --------------------------------------------------------------------------- end to end
def test_main_table_end_to_end(tmp_path):
    results = reproduce("main-table", _setup(), tmp_path, benchmarks=("gsm8k", "aime"))
    assert results["columns"] == ["gsm8k", "aime"]
    assert list(results["table"]) == list(paper.ROWS)
    srpo = results["table"]["sft+softrankpo"]
    assert len(srpo["average"]["values"]) == len(MINIMAL.eval_seeds)
    assert np.mean(srpo["average"]["values"]) == pytest.approx(srpo["average"]["mean"])
    assert results["claims"]["strongest_baseline"] in (*paper.HEURISTICS, *paper.TOPOLOGY)
    md = (tmp_path / "results.md").read_text()
    assert "| SFT+SoftRankPO |" in md and "55.74%" in md and "Simulated" in md
    _check_outputs(tmp_path, results, ["main_table.png"])


def test_backbones_and_tau_sweep_end_to_end(tmp_path):
    results = reproduce("backbones", _setup(), tmp_path / "bb", backbones=("llama3.2-3b",))
    entry = results["backbones"]["llama3.2-3b"]
    assert entry["profile"] == "llama3.2-3b/gsm8k"
    assert entry["best_heuristic"] in paper.HEURISTICS
    _check_outputs(tmp_path / "bb", results, ["backbones.png"])
    results = reproduce("tau-sweep", _setup(), tmp_path / "tau", taus=(0.4, 0.8))
    for variant in TAU_VARIANTS:
        assert set(results["taus"][variant]) == {"0.4", "0.8"}
        assert results["best_tau"][variant] in (0.4, 0.8)
    _check_outputs(tmp_path / "tau", results, ["tau_sweep.png"])


def test_rounds_agents_end_to_end(tmp_path):
    results = reproduce("rounds-agents", _setup(), tmp_path, rounds=(1, 5), agents=(2, 5))
    rounds, agents = results["sweeps"]["rounds"], results["sweeps"]["agents"]
    assert [p["max_rounds"] for p in rounds] == [1, 5]
    assert [p["num_agents"] for p in agents] == [2, 5]
    assert all("sft+softrankpo" in p["methods"] for p in rounds + agents)
    _check_outputs(tmp_path, results, ["rounds_agents.png"])


def test_action_shift_and_tokens_end_to_end(tmp_path):
    results = reproduce("action-shift", _setup(), tmp_path / "shift")
    for stage in results["stages"].values():
        labelled, effective = stage["action_shares"], stage["effective_shares"]
        # The effective split refines the labelled one: same PERSIST and REFINE, and the
        # labelled CONCEDE share is the real plus the no-op CONCEDEs.
        assert effective["persist"] == pytest.approx(labelled["persist"])
        assert effective["refine"] == pytest.approx(labelled["refine"])
        assert effective["concede"] + effective["concede_noop"] == pytest.approx(
            labelled["concede"]
        )
        assert len(stage["effective_shares_per_round"]) == 3
    _check_outputs(tmp_path / "shift", results, ["action_shift.png"])
    results = reproduce("tokens", _setup(), tmp_path / "tokens")
    assert "oracle" not in results["pareto_front"] and results["pareto_front"]
    assert results["ratios"]["softrankpo_over_debate"] > 0
    _check_outputs(tmp_path / "tokens", results, ["tokens_pareto.png"])


def test_real_backend_path_trains_on_simulator_and_skips_humaneval(tmp_path):
    # A registered backend name other than "simulated" takes the real-backend path; the
    # simulator stands in for the LLM here so the test stays offline.
    register_backend("reproduce-test", lambda: SimulatedBackend(profile="llama3.1-8b/gsm8k"))
    try:
        setup = _setup(backend="reproduce-test")
        rows = ("self_consistency", "sft+softrankpo", "oracle")
        results = reproduce("main-table", setup, tmp_path, benchmarks=("gsm8k", "humaneval"),
                            rows=rows)  # fmt: skip
    finally:
        BACKENDS.pop("reproduce-test")
    assert results["columns"] == ["gsm8k"]
    assert "oracle" not in results["table"]
    notes = " ".join(results["notes"])
    assert "trained on the simulated profile" in notes and "HumanEval skipped" in notes


def test_cli_reproduce(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown experiment"):
        cli_main(["reproduce", "nope", "--out", str(tmp_path)])
    code = cli_main(["reproduce", "action-shift", "--budget", "tiny", "--out", str(tmp_path),
                     "--profile", "qwen2.5-3b/math", "--tasks", "math=arithmetic:300"])  # fmt: skip
    assert code == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["backbone"] == "qwen2.5-3b"
    assert saved["config"]["benchmark"] == "math"
    assert saved["config"]["tasks"] == {"math": "arithmetic:300"}
    assert "action-shift" in capsys.readouterr().out


def test_cli_render_only_redraws_without_training(tmp_path, capsys, monkeypatch):
    assert cli_main(["reproduce", "tokens", "--budget", "tiny", "--out", str(tmp_path),
                     "--tasks", "gsm8k=arithmetic:300"]) == 0  # fmt: skip
    markdown = (tmp_path / "results.md").read_bytes()
    (tmp_path / "results.md").unlink()
    (tmp_path / "tokens_pareto.png").unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("--render-only trained a policy")

    monkeypatch.setattr(pipeline, "get_algorithm", no_training)
    pipeline._CACHE.clear()
    assert cli_main(["reproduce", "tokens", "--render-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").read_bytes() == markdown
    assert (tmp_path / "tokens_pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "rendered" in capsys.readouterr().out
    with pytest.raises(ValueError, match="holds experiment 'tokens'"):
        render_experiment("backbones", tmp_path)
    with pytest.raises(FileNotFoundError, match="without --render-only"):
        render_experiment("tokens", tmp_path / "nothing")


# --------------------------------------------------------------------------- budgets
def test_one_budget_type_for_compare_and_reproduce(tmp_path, capsys):
    # `make run` (compare --budget quick) and reproduce's quick budget: the numbers of today.
    assert BUDGETS["quick"] == Budget(updates=40, questions_per_update=64, group_size=8,
                                      sft_episodes=4096, sft_epochs=16, eval_episodes=1000,
                                      eval_seeds=(0, 1, 2), train_seeds=(0,))  # fmt: skip
    assert get_budget("full") is BUDGETS["paper"]  # the older name of the paper's protocol
    assert len(BUDGETS["paper"].train_seeds) == len(BUDGETS["paper"].eval_seeds) == 3
    assert get_budget(MINIMAL) is MINIMAL
    with pytest.raises(ValueError, match="valid budgets: tiny, quick, paper, full"):
        get_budget("huge")
    # compare reads the same type: one policy per training seed, cycled over the seeds.
    two = Budget(updates=1, questions_per_update=4, group_size=4, sft_episodes=16,
                 sft_epochs=1, eval_episodes=20, eval_seeds=(0, 1), train_seeds=(0, 1))  # fmt: skip
    results = run_compare(two, tmp_path, profile="toy", tasks="arithmetic:200", seed=3,
                          methods=("grpo",), progress=False)  # fmt: skip
    assert (tmp_path / "grpo" / "seed3" / "policy.pt").exists()
    assert (tmp_path / "grpo" / "seed4" / "policy.pt").exists()
    assert results["config"]["train_seeds"] == [0, 1] and results["config"]["seeds"] == [0, 1]
    assert results["methods"]["grpo"]["seeds"] == [0, 1]
    assert results["methods"]["grpo"]["episodes"] == two.eval_episodes
    # `--preset` is the older name of `--budget`, in both commands; the CLI refuses an
    # unknown budget while parsing (exit status 2, the valid names in the message).
    for argv in (
        ["compare", "--preset", "huge", "--out", str(tmp_path / "x")],
        ["reproduce", "tokens", "--preset", "huge", "--out", str(tmp_path / "y")],
    ):
        with pytest.raises(SystemExit) as stop:
            cli_main(argv)
        assert stop.value.code == 2
        captured = capsys.readouterr()
        message = " ".join((captured.out + captured.err).replace("│", " ").split())
        assert "invalid choice 'huge'" in message and "'tiny', 'quick', 'paper', 'full'" in message
