"""Experiment tracking (`algorithms.tracking`, ``--track tensorboard|wandb``): the rows of
metrics.jsonl, the config and compare's results table reach TensorBoard (read back with
tensorboard's own event reader) and W&B (offline: its run file read back); --resume
continues the same log; a run without --track imports neither package; a missing package
says which extra to install. No test touches the network (WANDB_MODE=offline)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from algorithms import sft, softrankpo
from algorithms.checkpoint import CHECKPOINT
from algorithms.tracking import (
    EXTRA,
    JsonlTracker,
    MissingExtra,
    TensorBoardTracker,
    WandbTracker,
    make_tracker,
    numeric,
    summary_rows,
    tracked_train,
)
from deliberation_env import EnvConfig
from experiments.cli import main

REPO = Path(__file__).resolve().parents[1]
ENV = EnvConfig(profile="toy", tasks="arithmetic:200")
TINY: dict[str, Any] = dict(env=ENV, questions_per_update=4, group_size=4, updates=2,
                            minibatches=1, epochs=1, eval_every=0)  # fmt: skip
SFT_TINY: dict[str, Any] = dict(env=ENV, episodes=32, epochs=1, batch_size=64)
TRAIN = ["train", "--algo", "softrankpo", "--profile", "toy", "--tasks", "arithmetic:200",
         "--updates", "2", "--questions-per-update", "4", "--group-size", "4",
         "--minibatches", "1", "--epochs", "1", "--eval-every", "0"]  # fmt: skip


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B without a network: offline mode, files under tmp_path/wandb_dir."""
    where = tmp_path / "wandb_dir"
    where.mkdir()
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(where), "WANDB_SILENT": "true",
                       "WANDB_CONSOLE": "off", "WANDB_PROJECT": "tests"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    return where


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def events(logdir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: Any, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def text(acc: Any, tag: str) -> str:
    return acc.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()


def assert_rows_logged(logged: dict[str, list[tuple[int, float]]], history: list[dict],
                       step_key: str) -> None:  # fmt: skip
    """Every numeric field of every row is a scalar at the row's step, with its value."""
    for row in history:
        for name, value in numeric(row).items():
            assert (row[step_key], pytest.approx(value, rel=1e-6, abs=1e-6)) in logged[name], name


# ---------------------------------------------------------------------- W&B run files
def wandb_records(path: Path) -> list[Any]:
    """The records of an offline W&B run file (``run-ID.wandb``): LevelDB-log framing
    (32 KiB blocks, 7-byte record headers) behind a 7-byte ``:W&B`` file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, part, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written
            break
        part += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()  # type: ignore[attr-defined]
            record.ParseFromString(part)
            out.append(record)
            part = b""
    return out


def wandb_run(where: Path, run_id: str) -> dict[str, Any]:
    """History ({step: {key: value}}), config and exit code of W&B run `run_id` (all its
    offline runs, in order: a resumed run adds one)."""
    history: dict[int, dict[str, Any]] = {}
    config: dict[str, Any] = {}
    exit_code = None
    files = sorted(where.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert files, list(where.rglob("*.wandb"))
    for file in files:
        # W&B's service process writes the file behind `run.finish()`; on a loaded machine
        # the last records (history, exit) can land a moment after it returns.
        deadline = time.monotonic() + 60
        records = wandb_records(file)
        while not any(r.WhichOneof("record_type") == "exit" for r in records):
            assert time.monotonic() < deadline, f"{file}: no exit record after 60 s"
            time.sleep(0.2)
            records = wandb_records(file)
        for r in records:
            kind = r.WhichOneof("record_type")
            if kind == "history":
                items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json)
                         for i in r.history.item}  # fmt: skip
                history.setdefault(r.history.step.num, {}).update(items)
            elif kind == "run":
                config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in r.config.update})
            elif kind == "exit":
                exit_code = r.exit.exit_code
    return {"history": history, "config": config, "exit_code": exit_code, "files": files}


# ---------------------------------------------------------------------- TensorBoard
def test_train_track_tensorboard_logs_every_row_and_the_config(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--track", "tensorboard"]) == 0
    history = rows(out)
    assert [r["update"] for r in history] == [1, 2]
    acc = events(out / "tensorboard")
    tags = acc.Tags()["scalars"]
    assert {"team_accuracy", "loss", "agent_steps", "beta", "seconds"} <= set(tags)
    assert_rows_logged({t: scalars(acc, t) for t in tags}, history, "update")
    config = json.loads(text(acc, "config").removeprefix("```json\n").removesuffix("\n```"))
    assert config["algo"] == "softrankpo" and config["updates"] == 2
    assert config["env"]["profile"] == "toy"
    assert "_hparams_/experiment" in acc.PluginTagToContent("hparams")
    # metrics.jsonl is the trainer's as ever: a run without --track logs the same rows
    # (all but the wall-clock seconds), and JsonlTracker writes the very same bytes.
    plain = tmp_path / "plain"
    assert main([*TRAIN, "--out", str(plain)]) == 0
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows(plain)] == strip
    assert not (plain / "tensorboard").exists()
    with JsonlTracker(tmp_path / "again") as jsonl:
        for r in history:
            jsonl.log_scalars(r["update"], r)
    assert (tmp_path / "again/metrics.jsonl").read_bytes() == (out / "metrics.jsonl").read_bytes()


def test_sft_epoch_rows_reach_tensorboard_with_nested_fields_flattened(tmp_path: Path) -> None:
    out = tmp_path / "sft"
    cfg = sft.SFTConfig(**SFT_TINY, out=str(out))
    with TensorBoardTracker(out / "tensorboard") as tracker:
        _, history = sft.train(cfg, progress=False, tracker=tracker)
    acc = events(out / "tensorboard")
    tags = acc.Tags()["scalars"]
    assert {"loss", "label_accuracy", "label_shares/persist", "epoch"} <= set(tags)
    assert_rows_logged({t: scalars(acc, t) for t in tags}, history, "epoch")
    assert json.loads(text(acc, "config").strip("`json\n"))["algo"] == "sft"


def test_resume_continues_the_tensorboard_log_without_doubled_steps(tmp_path: Path) -> None:
    """A run stopped after update 2 whose log already holds updates 3-4 (they came after
    its checkpoint) is resumed: the log ends with each update once, the resumed values."""
    out = tmp_path / "run"
    args = [*TRAIN, "--out", str(out), "--track", "tensorboard", "--checkpoint-every", "1"]
    assert main(args) == 0
    saved = tmp_path / "update2.pt"
    shutil.copy(out / CHECKPOINT, saved)
    assert main([*args, "--updates", "4", "--resume"]) == 0
    shutil.copy(saved, out / CHECKPOINT)  # back to update 2, the log already at 4
    assert main([*args, "--updates", "4", "--resume"]) == 0
    acc = events(out / "tensorboard")
    assert [s for s, _ in scalars(acc, "team_accuracy")] == [1, 2, 3, 4]
    assert_rows_logged({t: scalars(acc, t) for t in acc.Tags()["scalars"]}, rows(out), "update")
    assert len(acc.Tensors("config/text_summary")) == 1  # the config once per folder


def test_an_exception_still_closes_and_flushes_the_tensorboard_writer(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), TensorBoardTracker(tmp_path) as tracker:
        tracker.log_config({"lr": 0.1})
        tracker.log_scalars(1, {"update": 1, "loss": 0.5, "note": "text is left out"})
        raise RuntimeError("boom")
    acc = events(tmp_path)
    assert scalars(acc, "loss") == [(1, 0.5)] and "note" not in acc.Tags()["scalars"]


def test_compare_track_tensorboard_logs_the_results_table(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", "--budget", "tiny", "--profile", "toy", "--tasks", "arithmetic:200",
                 "--methods", "softrankpo", "sft", "--out", str(out),
                 "--track", "tensorboard"]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    acc = events(out / "tensorboard")
    table = text(acc, "results")
    assert set(results["methods"]) >= {"softrankpo", "sft", "debate", "oracle"}
    for method, summary in results["methods"].items():
        assert f"| {method} |" in table
        logged = scalars(acc, f"results/{method}/team_accuracy")
        assert logged == [(0, pytest.approx(summary["team_accuracy"]["mean"], abs=1e-6))]
        assert f"results/{method}/action_shares/persist" in acc.Tags()["scalars"]
    assert json.loads(text(acc, "config").strip("`json\n"))["budget"] == "tiny"
    for method, step in (("softrankpo", "update"), ("sft", "epoch")):  # each run's own log
        run = events(out / method / "tensorboard")
        assert_rows_logged({t: scalars(run, t) for t in run.Tags()["scalars"]},
                           rows(out / method), step)  # fmt: skip


# ---------------------------------------------------------------------- W&B
def test_train_track_wandb_offline_logs_rows_and_config_and_resumes_the_run(
    tmp_path: Path, offline: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--track", "wandb"]) == 0
    run_id = (out / "wandb_run_id").read_text().strip()
    assert main([*TRAIN, "--out", str(out), "--track", "wandb", "--updates", "3", "--resume"]) == 0
    assert (out / "wandb_run_id").read_text().strip() == run_id  # the same run continues
    run = wandb_run(offline, run_id)
    assert len(run["files"]) == 2 and run["exit_code"] == 0
    history = rows(out)
    assert [r["update"] for r in history] == [1, 2, 3]
    for row in history:
        logged = run["history"][row["update"]]
        for name, value in numeric(row).items():
            assert logged[name] == pytest.approx(value), name
    assert run["config"]["algo"] == "softrankpo" and run["config"]["updates"] == 3
    assert run["config"]["env"]["profile"] == "toy"
    # a fresh run in the folder (no --resume) is a new W&B run
    assert main([*TRAIN, "--out", str(out), "--track", "wandb"]) == 0
    assert (out / "wandb_run_id").read_text().strip() != run_id


def test_sft_with_a_wandb_tracker_and_a_table(tmp_path: Path, offline: Path) -> None:
    out = tmp_path / "sft"
    with WandbTracker(out, name="sft") as tracker:
        _, history = sft.train(sft.SFTConfig(**SFT_TINY, out=str(out)), False, tracker=tracker)
        methods = {"a": {"team_accuracy": {"mean": 0.5, "ci95": [0.4, 0.6]},
                         "action_shares": {"persist": 0.2}}}  # fmt: skip
        tracker.log_table("results", summary_rows(methods))
        run_dir = Path(tracker.run.dir)
    run = wandb_run(offline, (out / "wandb_run_id").read_text().strip())
    assert run["history"][1]["label_shares/persist"] == history[0]["label_shares"]["persist"]
    assert run["config"]["algo"] == "sft"
    (table,) = run_dir.glob("media/table/results_*.table.json")
    saved = json.loads(table.read_text())
    assert saved["columns"] == ["method", "team_accuracy", "action_shares/persist"]
    assert saved["data"] == [["a", 0.5, 0.2]]


def test_an_exception_marks_the_wandb_run_failed(tmp_path: Path, offline: Path) -> None:
    with pytest.raises(KeyboardInterrupt), WandbTracker(tmp_path) as tracker:
        tracker.log_scalars(1, {"loss": 1.0})
        raise KeyboardInterrupt
    run = wandb_run(offline, (tmp_path / "wandb_run_id").read_text().strip())
    assert run["exit_code"] == 1 and run["history"][1]["loss"] == 1.0


# ---------------------------------------------------------------------- costs and errors
def test_training_without_track_imports_neither_backend(tmp_path: Path) -> None:
    code = f"""
import sys
from experiments.cli import main
assert main({[*TRAIN, "--out", str(tmp_path / "run")]!r}) == 0
from algorithms import softrankpo, sft
import algorithms.tracking
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorboard", "wandb")
                or m.startswith("torch.utils.tensorboard"))
print("LOADED", loaded)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED []" in done.stdout


@pytest.mark.parametrize("backend, module", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_a_missing_package_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails for real
    with pytest.raises(MissingExtra, match=f"--track {backend} needs the {module} package"):
        make_tracker(backend, tmp_path)
    with pytest.raises(SystemExit) as err:
        main([*TRAIN, "--out", str(tmp_path / "run"), "--track", backend])
    assert EXTRA in str(err.value) and "deliberate train" in str(err.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before training


def test_track_needs_an_out_folder_and_a_known_backend(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--track tensorboard needs --out DIR"):
        main([*TRAIN, "--track", "tensorboard"])
    with pytest.raises(SystemExit):  # tyro: not a choice
        main([*TRAIN, "--out", str(tmp_path), "--track", "mlflow"])
    with pytest.raises(ValueError, match="unknown; valid: tensorboard, wandb"):
        make_tracker("mlflow", tmp_path)
    assert make_tracker(None, None) is None


def test_python_api_tracker_without_out(tmp_path: Path) -> None:
    """From Python a tracker needs no cfg.out: the rows still reach it."""
    with TensorBoardTracker(tmp_path / "tb") as tracker:
        _, history = softrankpo.train(
            softrankpo.SoftRankPOConfig(**TINY), progress=False, tracker=tracker
        )
    acc = events(tmp_path / "tb")
    assert [s for s, _ in scalars(acc, "team_accuracy")] == [1, 2]
    assert_rows_logged({t: scalars(acc, t) for t in acc.Tags()["scalars"]}, history, "update")


def test_sb3_rows_go_through_the_tracker_stepped_by_agent_steps(tmp_path: Path) -> None:
    from algorithms.sb3 import SB3Config, train_sb3

    cfg = SB3Config(env=ENV, num_envs=2, n_steps=8, batch_size=16, n_epochs=1,
                    total_timesteps=96, out=str(tmp_path))  # fmt: skip
    with TensorBoardTracker(tmp_path / "tensorboard") as tracker:
        _, history = train_sb3(cfg, progress=False, tracker=tracker)
    assert len(history) >= 2
    acc = events(tmp_path / "tensorboard")
    assert_rows_logged({t: scalars(acc, t) for t in acc.Tags()["scalars"]}, history, "step")
    assert json.loads(text(acc, "config").strip("`json\n"))["algo"] == "sb3_ppo"


def test_a_train_without_a_tracker_argument_is_logged_when_it_returns(tmp_path: Path) -> None:
    def train(cfg: dict, progress: bool = True) -> tuple[None, list[dict]]:
        return None, [{"update": 1, "team_accuracy": 0.25}, {"update": 2, "team_accuracy": 0.5}]

    tracked_train(train, {"lr": 0.1}, "tensorboard", tmp_path, name="mine", progress=False)
    acc = events(tmp_path / "tensorboard")
    assert scalars(acc, "team_accuracy") == [(1, 0.25), (2, 0.5)]
    assert json.loads(text(acc, "config").strip("`json\n")) == {"algo": "mine", "lr": 0.1}
