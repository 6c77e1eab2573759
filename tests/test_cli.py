"""The `deliberate` command end to end: demo, eval and train on the simulator and on a
real (tiny, local) Hugging Face model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_model import tiny_model_dir  # noqa: F401  (the session fixture)

from experiments.cli import main


def test_demo_on_the_simulator(capsys):
    assert main(["demo", "--episodes", "200"]) == 0
    out = capsys.readouterr().out
    assert "Team answer:" in out and "always REFINE (= LLM debate)" in out


def test_demo_and_eval_on_a_local_hf_model(tiny_model_dir, tmp_path, capsys):  # noqa: F811
    model = ["--backend", "hf", "--model", str(tiny_model_dir), "--max-new-tokens", "8"]
    assert main(["demo", *model, "--tasks", "arithmetic:20"]) == 0
    assert "Team answer:" in capsys.readouterr().out
    cache = str(tmp_path / "cache.sqlite")
    args = ["eval", "--protocol", "debate", *model, "--cache", cache, "--episodes", "3",
            "--seeds", "0", "--tasks", "arithmetic:40", "--out", str(tmp_path / "a")]  # fmt: skip
    assert main(args) == 0
    first = json.loads((tmp_path / "a" / "results.json").read_text())["methods"]["debate"]
    args[-1] = str(tmp_path / "b")
    assert main(args) == 0  # replayed from the cache
    second = json.loads((tmp_path / "b" / "results.json").read_text())["methods"]["debate"]
    assert first["tokens_per_question"] == second["tokens_per_question"]
    assert first["tokens_per_question"]["mean"] > 0


def test_backend_options_need_a_backend():
    with pytest.raises(SystemExit, match="--backend"):
        main(["demo", "--model", "some/model"])


def test_train_then_eval_a_policy(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--algo", "grpo", "--profile", "toy", "--steps", "2",
                 "--questions-per-update", "8", "--group-size", "4", "--out", out]) == 0  # fmt: skip
    assert (
        main(
            [
                "eval",
                "--policy",
                f"{out}/policy.pt",
                "--profile",
                "toy",
                "--episodes",
                "50",
                "--seeds",
                "0",
            ]
        )
        == 0
    )
    assert "| policy |" in capsys.readouterr().out


def test_fidelity_writes_the_report_and_names_a_bad_log(tmp_path, capsys):
    fixtures = Path(__file__).parent / "fixtures" / "transcripts"
    out = tmp_path / "fid"
    args = ["fidelity", "--transcripts", str(fixtures / "du_small.json"), "--out", str(out)]
    assert main([*args, "--replicas", "4"]) == 0
    report = json.loads((out / "fidelity.json").read_text())
    assert report["total"] == len(report["cells"]) > 0
    assert "cells inside the real 95% interval" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="deliberate fidelity: .*du_bad_roles.json"):
        main(["fidelity", "--transcripts", str(fixtures / "du_bad_roles.json"), "--out", str(out)])
