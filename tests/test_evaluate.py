"""The evaluation harness (`algorithms.evaluate`): per-seed metrics on the real env, the t
interval over seeds (`experiments.stats`), and the files `compare` writes. (The train/eval
split is tested with the tasks, in tests/test_tasks.py.)"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from algorithms.evaluate import ACTION_KEYS, episode_seeds, evaluate
from algorithms.heuristics import make_protocol
from deliberation_env import EnvConfig, VectorDeliberationEnv, load_tasks
from experiments.compare import compare, markdown_table
from experiments.stats import aggregate, mean_ci

ENV = EnvConfig(profile="llama3.1-8b/gsm8k", num_agents=3, max_rounds=3)
TASKS = load_tasks("arithmetic:300")
EPISODES = 200


@pytest.fixture(scope="module")
def runs():
    """Two seeds of a few protocols on the same questions."""
    names = ("always_persist", "debate", "concede_to_plurality", "random", "oracle")
    return {n: evaluate(make_protocol(n), ENV, TASKS, (0, 1), EPISODES) for n in names}


def test_same_seed_gives_identical_metrics(runs):
    for name in ("always_persist", "random", "oracle"):
        again = evaluate(make_protocol(name), ENV, TASKS, (0, 1), EPISODES)
        assert again == runs[name], name
    assert runs["always_persist"][0] != runs["always_persist"][1]  # seeds differ


def test_always_persist_spends_only_the_initial_answers_tokens(runs):
    env = VectorDeliberationEnv(EPISODES, ENV, autoreset=False, tasks=TASKS)
    for seed, run in zip((0, 1), runs["always_persist"]):
        _, infos = env.reset(seed=episode_seeds(seed, EPISODES))
        assert run["tokens_per_question"] == pytest.approx(infos["tokens"].sum(1).mean(), rel=1e-12)
        assert run["persist_share"] == 1.0
        assert run["accuracy_per_round"] == [run["team_accuracy"]] * 4
    for a, b in zip(runs["debate"], runs["always_persist"]):
        assert a["tokens_per_question"] > b["tokens_per_question"]
        assert a["refine_share"] == 1.0


def test_action_shares_sum_to_one_and_rounds_are_complete(runs):
    for name, per_seed in runs.items():
        for run in per_seed:
            assert sum(run["action_shares"].values()) == pytest.approx(1.0)
            assert sum(run[f"{k}_share"] for k in ACTION_KEYS) == pytest.approx(1.0)
            assert len(run["action_shares_per_round"]) == 3
            for shares in run["action_shares_per_round"]:
                assert sum(shares.values()) == pytest.approx(1.0), name
            assert len(run["accuracy_per_round"]) == 4
            assert run["accuracy_per_round"][-1] == run["team_accuracy"]
            assert 0.0 <= run["consensus_rate"] <= 1.0
    # Conceding to the plurality leaves every team unanimous.
    assert all(r["consensus_rate"] == 1.0 for r in runs["concede_to_plurality"])


def test_initial_accuracy_is_shared_by_every_protocol_with_the_same_seed(runs):
    for seed in (0, 1):
        initial = {name: per_seed[seed]["accuracy_per_round"][0] for name, per_seed in runs.items()}
        assert len(set(initial.values())) == 1, initial


def test_early_stopping_keeps_the_final_accuracy_for_the_remaining_rounds():
    run = evaluate(
        make_protocol("concede_to_plurality"),
        dataclasses.replace(ENV, stop_on_consensus=True),
        TASKS,
        (3,),
        EPISODES,
    )[0]
    assert run["rounds_per_question"] == 1.0  # everyone agrees after one round
    assert len(run["action_shares_per_round"]) == 1
    assert run["accuracy_per_round"][1:] == [run["team_accuracy"]] * 3


def test_aggregate_gives_a_student_t_interval_over_seeds(runs):
    base = runs["always_persist"][0]
    fake = [{**base, "seed": s, "team_accuracy": v} for s, v in zip((0, 1, 2), (0.5, 0.7, 0.6))]
    agg = aggregate(fake)
    # mean 0.6, sample sd 0.1, t(0.975, df=2) = 4.3027 (t table): half = 4.3027 * 0.1 / sqrt 3.
    half = 4.302652729749462 * 0.1 / math.sqrt(3)
    assert agg["team_accuracy"]["mean"] == pytest.approx(0.6)
    assert agg["team_accuracy"]["ci95"] == pytest.approx([0.6 - half, 0.6 + half], rel=1e-9)
    assert agg["team_accuracy"]["values"] == [0.5, 0.7, 0.6]
    assert agg["seeds"] == [0, 1, 2]
    # Identical values and a single seed give a zero-width interval.
    assert agg["tokens_per_question"]["ci95"] == [base["tokens_per_question"]] * 2
    one = aggregate([base])
    assert one["team_accuracy"]["ci95"] == [base["team_accuracy"]] * 2
    assert mean_ci([2.0]) == (2.0, 2.0, 2.0)


def test_aggregate_averages_action_shares(runs):
    agg = aggregate(runs["random"])
    for k in ACTION_KEYS:
        assert agg["action_shares"][k] == pytest.approx(
            np.mean([r["action_shares"][k] for r in runs["random"]])
        )
    assert len(agg["accuracy_per_round"]["mean"]) == 4
    assert len(agg["action_shares_per_round"]) == 3
    with pytest.raises(ValueError, match="at least one run"):
        aggregate([])


def test_compare_writes_results_json_markdown_and_plots(tmp_path):
    methods = {n: make_protocol(n) for n in ("always_persist", "debate", "oracle", "single")}
    curves = {"softrankpo": [{"step": 0, "team_accuracy": 0.8}, {"step": 10, "team_accuracy": 0.9}]}
    results = compare(
        methods, ENV, TASKS, seeds=(0, 1), episodes=100, out=tmp_path,
        config={"preset": "test"}, learning_curves=curves,
    )  # fmt: skip
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == results
    assert set(on_disk) == {"config", "methods"}
    assert on_disk["config"]["preset"] == "test" and on_disk["config"]["seeds"] == [0, 1]
    assert on_disk["config"]["env"]["profile"] == ENV.profile
    assert set(on_disk["methods"]) == set(methods)
    for m in on_disk["methods"].values():
        for key in ("team_accuracy", "agent_accuracy", "consensus_rate", "tokens_per_question"):
            assert isinstance(m[key]["mean"], float)
            lo, hi = m[key]["ci95"]
            assert isinstance(lo, float) and lo <= m[key]["mean"] <= hi
        assert set(m["action_shares"]) == {"persist", "refine", "concede"}
        assert all(isinstance(v, float) for v in m["action_shares"].values())
    assert on_disk["methods"]["single"]["env_overrides"] == {"num_agents": 1}

    table = (tmp_path / "results.md").read_text()
    assert table == markdown_table(results)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| method | team accuracy")
    assert rows[1].startswith("| oracle ") and len(rows) == 1 + len(methods)
    accuracies = [float(r.split("|")[2].split("±")[0]) for r in rows[1:]]
    assert accuracies == sorted(accuracies, reverse=True)

    for png in ("learning_curves.png", "action_shares.png", "accuracy_vs_tokens.png"):
        data = (tmp_path / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000

    compare(methods, ENV, TASKS, seeds=(0,), episodes=20, out=tmp_path / "plain")
    assert not (tmp_path / "plain" / "learning_curves.png").exists()
    assert (tmp_path / "plain" / "results.md").exists()
