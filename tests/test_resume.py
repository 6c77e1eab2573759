"""Interrupted work is never lost or mixed: SIGTERM and Ctrl-C save the checkpoint of the
last whole update and say how to continue; a resumed run is bit-identical to one never
stopped (parameters, optimizer, generator, history, metrics.jsonl), for every trainer and
for SFT; resuming refuses a missing, damaged or foreign checkpoint and a changed config,
naming the file or the fields; `load_policy` reads policy files and checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from algorithms import grpo, ppo, reinforce, sft, softrankpo
from algorithms.checkpoint import (
    CHECKPOINT,
    RESUME_HINT,
    CheckpointError,
    Terminated,
    config_changes,
    load_policy,
    read_checkpoint,
    saved_on_interrupt,
)
from algorithms.policy import MetaPolicy
from algorithms.trainer import Trainer
from deliberation_env import EnvConfig

REPO = Path(__file__).resolve().parents[1]
ENV = EnvConfig(profile="toy", tasks="arithmetic:400")
TINY: dict[str, Any] = dict(
    env=ENV, questions_per_update=8, group_size=4, updates=5, epochs=2, minibatches=2
)
SFT_TINY: dict[str, Any] = dict(env=ENV, episodes=96, epochs=4, batch_size=64)

METHODS = {
    "softrankpo": (softrankpo, softrankpo.SoftRankPOConfig),
    "grpo": (grpo, grpo.GRPOConfig),
    "reinforce": (reinforce, reinforce.REINFORCEConfig),
    "ppo": (ppo, ppo.PPOConfig),
}


def params(policy: MetaPolicy) -> torch.Tensor:
    return torch.cat([p.detach().ravel().clone() for p in policy.parameters()])


def meta_policy(path: Path) -> MetaPolicy:
    policy = load_policy(path)
    assert isinstance(policy, MetaPolicy)
    return policy


def numbers(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without their wall-clock time."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def logged(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path, key: str = "update") -> None:
    """Two finished runs' folders hold bit-identical results: the policy file, and the
    final checkpoint's optimizer state, generator state and history."""
    assert torch.equal(
        params(MetaPolicy.load(a / "policy.pt")), params(MetaPolicy.load(b / "policy.pt"))
    )
    ca, cb = read_checkpoint(a / CHECKPOINT), read_checkpoint(b / CHECKPOINT)
    assert ca["update"] == cb["update"]
    assert torch.equal(ca["generator"], cb["generator"])
    for (ka, va), (kb, vb) in zip(
        ca["optimizer"]["state"].items(), cb["optimizer"]["state"].items()
    ):
        assert ka == kb
        for name in va:
            assert torch.equal(torch.as_tensor(va[name]), torch.as_tensor(vb[name])), name
    assert numbers(ca["history"]) == numbers(cb["history"])
    assert numbers(logged(a)) == numbers(logged(b))
    assert [r[key] for r in logged(b)] == list(range(1, ca["update"] + 1))


# ---------------------------------------------------------------- a real SIGTERM
# A child process trains SoftRankPO (or SFT) and is stopped by a signal in the middle of
# an update (epoch): the signal arrives after that update has changed the weights, the
# optimizer and the generator, so a checkpoint of the live state would mix two updates.
_CHILD = """
import os, signal, sys
from algorithms import sft, softrankpo
from algorithms.trainer import Trainer
from deliberation_env import EnvConfig

method, out, stop_at, signum = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
env = EnvConfig(profile="toy", tasks="arithmetic:400")
calls = 0

def stop(result):
    global calls
    calls += 1
    if calls == stop_at:
        os.kill(os.getpid(), signum)  # handled before this function returns
    return result

def sft_step(policy, optimizer, loss, max_grad_norm):
    return stop(real(policy, optimizer, loss, max_grad_norm))

def stop_midway(policy, ref, optimizer, roll, cfg, generator):
    return stop(real(policy, ref, optimizer, roll, cfg, generator))

if method == "sft":
    real = sft.optimise
    sft.optimise = sft_step  # stops inside an epoch, after a gradient step
    sft.train(sft.SFTConfig(env=env, episodes=96, epochs=4, batch_size=64, out=out), False)
else:
    real = softrankpo.update
    cfg = softrankpo.SoftRankPOConfig(env=env, questions_per_update=8, group_size=4,
                                      updates=5, epochs=2, minibatches=2, out=out)
    Trainer("softrankpo", cfg, stop_midway, progress=False).run()
print("finished without being stopped")
"""


def run_child(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_midway_saves_the_last_whole_update_and_resume_is_bit_identical(
    tmp_path: Path, signum: int
) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    cfg = softrankpo.SoftRankPOConfig(**TINY)
    softrankpo.train(replace(cfg, out=str(straight)), progress=False)

    proc = run_child("softrankpo", stopped, 3, signum)  # stopped inside update 3
    assert "finished without being stopped" not in proc.stdout, proc.stderr
    # SIGTERM exits 143 as the signal would; Ctrl-C ends in Python's KeyboardInterrupt.
    expected = {128 + signal.SIGTERM} if signum == signal.SIGTERM else {-signal.SIGINT, 130}
    assert proc.returncode in expected, (proc.returncode, proc.stderr)
    assert RESUME_HINT in proc.stderr and str(stopped / CHECKPOINT) in proc.stderr
    saved = read_checkpoint(stopped / CHECKPOINT)
    assert saved["update"] == 2  # update 3 was under way: not saved, not logged
    assert [r["update"] for r in saved["history"]] == [1, 2]

    resumed, history = softrankpo.train(replace(cfg, out=str(stopped)), progress=False, resume=True)
    assert [r["update"] for r in history] == [1, 2, 3, 4, 5]
    assert_same_run(straight, stopped)


@pytest.mark.slow
def test_sigterm_from_outside_at_any_moment(tmp_path: Path) -> None:
    """A kill from another process, at whatever point the run has reached."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    cfg = softrankpo.SoftRankPOConfig(**dict(TINY, updates=40))
    script = (
        "import sys\nfrom algorithms import softrankpo\nfrom deliberation_env import EnvConfig\n"
        "cfg = softrankpo.SoftRankPOConfig(env=EnvConfig(profile='toy', tasks='arithmetic:400'),"
        " questions_per_update=8, group_size=4, updates=40, epochs=2, minibatches=2,"
        " out=sys.argv[1])\nsoftrankpo.train(cfg, progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(stopped)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = stopped / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert RESUME_HINT in err
    done = read_checkpoint(stopped / CHECKPOINT)["update"]
    assert 2 <= done < 40
    softrankpo.train(replace(cfg, out=str(straight)), progress=False)
    softrankpo.train(replace(cfg, out=str(stopped)), progress=False, resume=True)
    assert_same_run(straight, stopped)


@pytest.mark.slow
def test_sft_stopped_by_sigterm_resumes_bit_identically(tmp_path: Path) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    cfg = sft.SFTConfig(**SFT_TINY)
    sft.train(replace(cfg, out=str(straight)), progress=False)
    assert [r["epoch"] for r in logged(straight)] == [1, 2, 3, 4]

    steps_per_epoch = -(-len(sft.collect_dataset(cfg, sft.split_tasks(cfg)[0], 0).obs) // 64)
    proc = run_child("sft", stopped, steps_per_epoch + 1, signal.SIGTERM)  # inside epoch 2
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert RESUME_HINT in proc.stderr
    assert read_checkpoint(stopped / CHECKPOINT)["update"] == 1
    assert [r["epoch"] for r in logged(stopped)] == [1]

    _, history = sft.train(replace(cfg, out=str(stopped)), progress=False, resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert_same_run(straight, stopped, key="epoch")


# ---------------------------------------------------------------- every trainer, in-process
def interrupting(update: Any, at: int) -> Any:
    """`update`, with Ctrl-C pressed right after its `at`-th call changed the weights."""
    calls = [0]

    def wrapped(policy, ref, optimizer, roll, cfg, generator):  # type: ignore[no-untyped-def]
        stats = update(policy, ref, optimizer, roll, cfg, generator)
        calls[0] += 1
        if calls[0] == at:
            raise KeyboardInterrupt
        return stats

    return wrapped


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_trainer_resumes_a_ctrl_c_bit_identically(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    module, config = METHODS[name]
    cfg = config(**dict(TINY, updates=4))
    size = module.critic_state_size(cfg) if name == "ppo" else None
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    module.train(replace(cfg, out=str(straight)), progress=False)
    trainer = Trainer(
        name,
        replace(cfg, out=str(stopped)),
        interrupting(module.update, 2),
        progress=False,
        critic_state_size=size,
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert RESUME_HINT in capsys.readouterr().err
    assert read_checkpoint(stopped / CHECKPOINT)["update"] == 1
    assert not (stopped / "policy.pt").exists()
    module.train(replace(cfg, out=str(stopped)), progress=False, resume=True)
    assert_same_run(straight, stopped)


def test_sft_resumes_a_ctrl_c_bit_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    cfg = sft.SFTConfig(**SFT_TINY)
    sft.train(replace(cfg, out=str(straight)), progress=False)
    real, calls = sft.optimise, [0]

    def step(*args: Any) -> Any:
        result = real(*args)
        calls[0] += 1
        if calls[0] == 7:  # inside epoch 2 (~5 steps an epoch), after a gradient step
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(sft, "optimise", step)
    with pytest.raises(KeyboardInterrupt):
        sft.train(replace(cfg, out=str(stopped)), progress=False)
    monkeypatch.setattr(sft, "optimise", real)
    assert RESUME_HINT in capsys.readouterr().err
    done = read_checkpoint(stopped / CHECKPOINT)["update"]
    assert 1 <= done < 4 and [r["epoch"] for r in logged(stopped)] == list(range(1, done + 1))
    _, history = sft.train(replace(cfg, out=str(stopped)), progress=False, resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert_same_run(straight, stopped, key="epoch")


def test_an_interrupt_before_the_first_update_saves_the_start(tmp_path: Path) -> None:
    cfg = softrankpo.SoftRankPOConfig(**dict(TINY, updates=2), out=str(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        Trainer("softrankpo", cfg, interrupting(softrankpo.update, 1), progress=False).run()
    assert read_checkpoint(tmp_path / "run" / CHECKPOINT)["update"] == 0
    _, history = softrankpo.train(cfg, progress=False, resume=True)
    _, straight = softrankpo.train(replace(cfg, out=None), progress=False)
    assert numbers(history) == numbers(straight)


# ---------------------------------------------------------------- refusals
def test_resume_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    cfg = softrankpo.SoftRankPOConfig(**TINY, out=str(tmp_path / "empty"))
    with pytest.raises(
        CheckpointError, match="no checkpoint at .*empty.*checkpoint.pt.*without --resume"
    ):
        softrankpo.train(cfg, progress=False, resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        sft.train(sft.SFTConfig(**SFT_TINY, out=str(tmp_path / "empty")), False, resume=True)
    with pytest.raises(CheckpointError, match="needs cfg.out"):
        softrankpo.train(replace(cfg, out=None), progress=False, resume=True)


def test_resume_with_a_changed_config_names_the_fields(tmp_path: Path) -> None:
    cfg = softrankpo.SoftRankPOConfig(**dict(TINY, updates=1), out=str(tmp_path))
    softrankpo.train(cfg, progress=False)
    changed = replace(cfg, lr=1e-3, env=replace(ENV, profile="qwen2.5-7b/gsm8k"), tau=0.5)
    with pytest.raises(CheckpointError) as e:
        softrankpo.train(changed, progress=False, resume=True)
    msg = str(e.value)
    assert str(tmp_path / CHECKPOINT) in msg
    assert "lr: 0.0003 -> 0.001" in msg and "tau: 0.8 -> 0.5" in msg
    assert "env.profile: 'toy' -> 'qwen2.5-7b/gsm8k'" in msg
    assert "questions_per_update" not in msg  # unchanged fields are not named
    # Runtime fields may change: a longer run, another checkpoint cadence, more threads.
    longer = replace(cfg, updates=2, checkpoint_every=1, torch_threads=2)
    _, history = softrankpo.train(longer, progress=False, resume=True)
    assert len(history) == 2
    # SFT: its length is `epochs`; what it labels with is not.
    s = sft.SFTConfig(**dict(SFT_TINY, epochs=1), out=str(tmp_path / "sft"))
    sft.train(s, progress=False)
    with pytest.raises(CheckpointError, match="refine_samples: 8 -> 2"):
        sft.train(replace(s, refine_samples=2), progress=False, resume=True)
    _, history = sft.train(replace(s, epochs=2), progress=False, resume=True)
    assert [r["epoch"] for r in history] == [1, 2]


def test_config_changes_compares_nested_fields_and_objects() -> None:
    cfg = softrankpo.SoftRankPOConfig(**TINY)
    from dataclasses import asdict

    saved = asdict(cfg)
    assert config_changes(saved, cfg) == []
    assert config_changes(saved, replace(cfg, updates=99, out="x")) == []
    assert config_changes(saved, replace(cfg, seed=3)) == ["seed: 0 -> 3"]
    del saved["entropy_coef"]  # a field added after the checkpoint was written
    assert config_changes(saved, cfg) == []
    assert config_changes(saved, replace(cfg, entropy_coef=0.1)) == [
        "entropy_coef: (absent) -> 0.1"
    ]


def test_another_methods_checkpoint_is_refused(tmp_path: Path) -> None:
    grpo.train(grpo.GRPOConfig(**dict(TINY, updates=1), out=str(tmp_path)), progress=False)
    with pytest.raises(CheckpointError, match="is a grpo checkpoint, not softrankpo"):
        cfg = softrankpo.SoftRankPOConfig(**TINY, out=str(tmp_path))
        softrankpo.train(cfg, progress=False, resume=True)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not_a_checkpoint"])
def test_a_damaged_checkpoint_names_the_file(tmp_path: Path, damage: str) -> None:
    cfg = softrankpo.SoftRankPOConfig(**dict(TINY, updates=1), out=str(tmp_path))
    softrankpo.train(cfg, progress=False)
    path = tmp_path / CHECKPOINT
    if damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match=str(path)):
        softrankpo.train(cfg, progress=False, resume=True)


# ---------------------------------------------------------------- fresh runs and the log
def test_a_fresh_run_into_an_unfinished_one_warns_and_never_mixes_the_log(tmp_path: Path) -> None:
    cfg = softrankpo.SoftRankPOConfig(**dict(TINY, updates=3), out=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        Trainer("softrankpo", cfg, interrupting(softrankpo.update, 3), progress=False).run()
    assert [r["update"] for r in logged(tmp_path)] == [1, 2]
    with pytest.warns(UserWarning, match=r"unfinished softrankpo run \(2 of 3\).*--resume"):
        softrankpo.train(replace(cfg, updates=1), progress=False)
    assert [r["update"] for r in logged(tmp_path)] == [1]  # the new run's rows only


# ---------------------------------------------------------------- load_policy
def test_load_policy_reads_policy_files_checkpoints_and_run_folders(tmp_path: Path) -> None:
    cfg = softrankpo.SoftRankPOConfig(**dict(TINY, updates=3), out=str(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):  # an interrupted run: a checkpoint, no policy.pt
        Trainer("softrankpo", cfg, interrupting(softrankpo.update, 3), progress=False).run()
    run = tmp_path / "run"
    from_checkpoint = meta_policy(run / CHECKPOINT)
    saved = read_checkpoint(run / CHECKPOINT)
    reference = MetaPolicy(from_checkpoint.config)
    reference.load_state_dict(saved["policy"])
    assert torch.equal(params(from_checkpoint), params(reference))
    assert torch.equal(params(meta_policy(run)), params(reference))  # the folder: its checkpoint
    policy, _ = softrankpo.train(cfg, progress=False, resume=True)
    for path in (run / "policy.pt", run):  # the folder now: its policy.pt
        assert torch.equal(params(meta_policy(path)), params(policy))


def test_load_policy_names_a_missing_or_damaged_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no policy file at .*nothing.pt"):
        load_policy(tmp_path / "nothing.pt")
    with pytest.raises(FileNotFoundError, match="without policy.pt or checkpoint.pt"):
        load_policy(tmp_path)
    bad = tmp_path / "policy.pt"
    bad.write_text("this is not a policy")
    with pytest.raises(CheckpointError, match=f"{bad}: cannot be read"):
        load_policy(bad)
    torch.save([1, 2, 3], bad)
    with pytest.raises(CheckpointError, match=f"{bad}: neither a policy file nor"):
        load_policy(bad)
    zipped = tmp_path / "model.zip"
    zipped.write_bytes(b"PK not really")
    with pytest.raises(CheckpointError, match="model.zip: cannot be read as a Stable-Baselines3"):
        load_policy(zipped)


# ---------------------------------------------------------------- signal handling
def test_the_sigterm_handler_is_installed_only_where_nobody_else_has_one() -> None:
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL or pytest.skip("SIGTERM taken")
    with saved_on_interrupt(lambda: None):
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    def mine(signum: int, frame: object) -> None:
        del signum, frame

    signal.signal(signal.SIGTERM, mine)
    try:
        with saved_on_interrupt(lambda: None):
            assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_terminated_exits_like_the_signal() -> None:
    assert Terminated().code == 128 + signal.SIGTERM
    assert isinstance(Terminated(), SystemExit)
