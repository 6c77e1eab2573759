"""A newly registered algorithm reaches `run_compare` and `deliberate train` with no other
change (docs/new_algorithm.md), and the page's worked example runs as written."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from algorithms import advantages
from algorithms.common import TrainConfig, grouped_advantages, policy_gradient_update
from algorithms.heuristics import applicable_protocols
from algorithms.registry import ALGORITHMS, get_algorithm, register_algorithm
from algorithms.trainer import make_train
from deliberation_env import EnvConfig, load_tasks
from experiments.budgets import BUDGETS, Budget
from experiments.cli import main
from experiments.compare import evaluate_runs, run_compare
from experiments.paper.setup import Setup
from experiments.pipeline import train_rl

DOC = Path(__file__).resolve().parents[1] / "docs" / "new_algorithm.md"

TINY = Budget(
    updates=2,
    questions_per_update=4,
    group_size=4,
    sft_episodes=16,
    sft_epochs=1,
    eval_episodes=40,
    eval_seeds=(0,),
    train_seeds=(0,),
)
"""A budget of seconds."""


# ---------------------------------------------------------------------- the method
@dataclass
class RLOOTestConfig(TrainConfig):
    """RLOO defined in the test module."""

    use_clip: bool = True
    """Clip the surrogate (False: plain policy gradient)."""


def update(policy, ref, optimizer, roll, cfg: RLOOTestConfig, generator) -> dict[str, float]:
    adv = grouped_advantages(roll, advantages.rloo, cfg.reward_transform)
    clip = cfg.clip if cfg.use_clip else None
    return policy_gradient_update(policy, ref, optimizer, roll, adv, cfg, clip, generator)


train = make_train("rloo_test", RLOOTestConfig, update)


@pytest.fixture
def registry():
    """Registers ``rloo_test`` from this module; restores the registry afterwards."""
    saved = dict(ALGORITHMS)
    register_algorithm(
        "rloo_test", __name__, "RLOOTestConfig", description="RLOO (test): leave-one-out baseline"
    )
    yield ALGORITHMS
    ALGORITHMS.clear()
    ALGORITHMS.update(saved)


# ---------------------------------------------------------------------- tests
def test_registered_algorithm_is_loadable(registry) -> None:
    cls, fn = get_algorithm("rloo_test").load()
    assert cls is RLOOTestConfig and fn is train


def test_registered_algorithm_appears_in_run_compare(registry, tmp_path: Path) -> None:
    results = run_compare(
        budget=TINY,
        out=tmp_path,
        profile="toy",
        tasks="arithmetic:200",
        methods=("rloo_test",),
        progress=False,
    )
    assert set(results["methods"]) == {"rloo_test", *applicable_protocols(EnvConfig(profile="toy"))}
    assert results["methods"]["rloo_test"]["episodes"] == TINY.eval_episodes
    table = (tmp_path / "results.md").read_text()
    assert re.search(r"^\| rloo_test \| \d\.\d{3} ± ", table, re.MULTILINE), table
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert "rloo_test" in on_disk["methods"]
    curves = json.loads((tmp_path / "learning_curves.json").read_text())
    assert len(curves["rloo_test"]) == TINY.updates
    assert (tmp_path / "learning_curves.png").exists()
    assert (tmp_path / "rloo_test" / "policy.pt").exists()


def test_run_compare_trains_on_workers_as_in_process(registry, tmp_path: Path) -> None:
    """Training runs (method, seed) at once in spawned processes (the caller's own
    registered method among them) give the very results of training them one after
    another here."""
    two_seeds = dataclasses.replace(TINY, train_seeds=(0, 1), eval_seeds=(0, 1))
    runs = {
        workers: run_compare(
            budget=two_seeds,
            out=tmp_path / f"w{workers}",
            profile="toy",
            tasks="arithmetic:200",
            methods=("rloo_test", "grpo", "sb3_ppo"),
            progress=False,
            workers=workers,
        )  # fmt: skip
        for workers in (1, 2)
    }
    serial, pooled = runs[1]["methods"], runs[2]["methods"]
    assert list(pooled) == list(serial)  # the caller's order, not the finishing order
    for name in ("rloo_test", "grpo", "sb3_ppo"):
        for key in ("team_accuracy", "tokens_per_question", "action_shares"):
            assert pooled[name][key] == serial[name][key], (name, key)
    assert (tmp_path / "w2" / "sb3_ppo" / "seed1" / "policy.zip").exists()


def test_registered_algorithm_in_train_help(registry, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--algo", "rloo_test", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "deliberate train --algo rloo_test" in out
    assert "RLOO (test): leave-one-out baseline" in out
    assert "--use-clip" in out and "Clip the surrogate" in out
    assert "--group-size" in out  # the shared TrainConfig fields come along


def test_registered_algorithm_trains_from_cli(registry, tmp_path: Path) -> None:
    code = main(
        ["train", "--algo", "rloo_test", "--updates", "1", "--questions-per-update", "4",
         "--group-size", "4", "--profile", "toy", "--tasks", "arithmetic:100",
         "--use-clip", "false", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "policy.pt").exists()
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and np.isfinite(json.loads(rows[0])["loss"])


def test_registered_algorithm_in_reproduce_pipeline(registry) -> None:
    """The paper's pipeline loads learned methods through the registry: SFT, then ours."""
    setup = Setup(budget=BUDGETS["tiny"], progress=False)
    env = EnvConfig(profile="toy", tasks="arithmetic:200")
    policy, history = train_rl(setup, "rloo_test", env, seed=7)
    assert len(history) == BUDGETS["tiny"].updates
    eval_seeds = setup.budget.eval_seeds
    tasks = load_tasks("arithmetic:200")[:40]
    runs = evaluate_runs([policy], setup.eval_config(env), tasks, eval_seeds, 40)
    assert len(runs) == len(eval_seeds)
    assert all(0.0 <= r["team_accuracy"] <= 1.0 for r in runs)


def test_unknown_algorithm_names_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="softrankpo"):
        get_algorithm("no_such_algorithm")


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_doc_shows_the_library_advantage_function() -> None:
    """The page's `rloo` is `algorithms.advantages.rloo` as written."""
    shown = next(b for b in _python_blocks() if b.startswith("def rloo("))
    assert shown == inspect.getsource(advantages.rloo)


def test_doc_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The RLOO module of docs/new_algorithm.md registers itself and trains."""
    source = next(b for b in _python_blocks() if "class RLOOConfig" in b)
    module = types.ModuleType("rloo_doc_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    saved = dict(ALGORITHMS)
    try:
        exec(compile(source, str(DOC), "exec"), module.__dict__)
        cls, fn = get_algorithm("rloo").load()
        assert cls is module.RLOOConfig and fn is module.train
        env = EnvConfig(profile="toy", tasks="arithmetic:100")
        cfg = cls(env=env, updates=2, questions_per_update=4, group_size=4)
        policy, history = fn(cfg, progress=False)
        assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
        assert history[-1]["agent_steps"] > 0 and "team_accuracy" in history[-1]
        with pytest.raises(ValueError, match="group_size >= 2"):
            fn(cls(env=env, updates=1, questions_per_update=4, group_size=1), progress=False)
    finally:
        ALGORITHMS.clear()
        ALGORITHMS.update(saved)
