"""Checkpoints of training runs, so that interrupted work is never lost or mixed: written
atomically at update boundaries, read back with checks (a whole file, the same method,
the same config), saved on Ctrl-C and SIGTERM alike, and `load_policy`, which reads a
policy from a policy file, a training checkpoint, a run folder or an SB3 model.

What a checkpoint holds (``OUT/checkpoint.pt``, one dict): ``algo``; ``config`` (the
training config, ``asdict``); ``update`` (updates, or SFT epochs, done) and ``total`` (of how many); ``policy`` and
``policy_config``; ``ref`` (the KL anchor); ``optimizer``; ``generator`` (the state of the
trainer's ``torch.Generator``: initial weights, actions, minibatch order); ``kl_controller``
(beta's state); ``history`` (the records logged so far; ``metrics.jsonl`` is rewritten from
it on resume). The env needs no state of its own: every update resets the vector env with
a seed derived from ``(cfg.seed, update)`` and all of its randomness (tasks, backend
sampling, tie-breaks) is counter-based on that seed, so a run resumed at an update
boundary is bit-identical to one never stopped (tests/test_resume.py).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, cast

import torch

from algorithms.policy import MetaPolicy, Policy, PolicyConfig

__all__ = [
    "CHECKPOINT",
    "RESUME_HINT",
    "RUNTIME_FIELDS",
    "CheckpointError",
    "Terminated",
    "config_changes",
    "load_policy",
    "read_checkpoint",
    "resume_checkpoint",
    "saved_on_interrupt",
    "write_checkpoint",
    "write_metrics",
]

CHECKPOINT = "checkpoint.pt"
"""File name of a run's checkpoint inside its ``out`` folder."""

RESUME_HINT = "saved checkpoint; continue with --resume"
"""Printed (stderr) when Ctrl-C or SIGTERM stops a run that has an ``out`` folder."""

RUNTIME_FIELDS = frozenset({"updates", "out", "checkpoint_every", "torch_threads"})
"""Config fields a resumed RL run may change: how long it runs, where and how often it
writes, how many CPU threads it uses (SFT: ``epochs`` in place of ``updates``). Any other
change would mix two experiments in one run, so resuming refuses it and names the
fields."""

_REQUIRED = ("algo", "config", "update", "policy", "policy_config", "optimizer", "history")


class CheckpointError(ValueError):
    """A checkpoint or policy file that cannot be used; the message names the file."""


class Terminated(SystemExit):
    """SIGTERM arrived during training (inside `saved_on_interrupt`): the checkpoint was
    saved and the process exits with status 128 + SIGTERM, as the signal would have made
    it, unless a caller catches this."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + signum)
        self.signum = signum


# ---------------------------------------------------------------------- files
def write_checkpoint(out: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write `payload` to ``out/checkpoint.pt`` atomically (a kill never leaves half a
    file); returns the path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save(dict(payload), tmp)
    tmp.replace(out / CHECKPOINT)
    return out / CHECKPOINT


def _load(path: Path, what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise CheckpointError(
            f"{path}: cannot be read as a {what} ({type(err).__name__}: {err}); the file is "
            "damaged or was not written by deliberation-env"
        ) from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The payload of a training checkpoint; a `CheckpointError` naming `path` when the file
    is damaged or is not a checkpoint."""
    path = Path(path)
    payload = _load(path, "training checkpoint")
    missing = [k for k in _REQUIRED if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise CheckpointError(
            f"{path}: not a training checkpoint (no {', '.join(map(repr, missing))}); "
            "a policy file goes to --policy, not --resume"
        )
    return payload


def resume_checkpoint(
    out: str | Path | None, algo: str, config: Any, may_change: frozenset[str] = RUNTIME_FIELDS
) -> dict[str, Any]:
    """The checkpoint in `out` that a run of `algo` with `config` continues: refused with
    the reason when there is none, when it is damaged, when another method wrote it, or
    when the config differs in any field but `may_change` (the changed fields named)."""
    if out is None:
        raise CheckpointError("resume=True needs cfg.out, the folder of the run to continue")
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise CheckpointError(
            f"--resume: no checkpoint at {path}, so there is nothing to continue; start "
            "the run without --resume"
        )
    payload = read_checkpoint(path)
    if payload["algo"] != algo:
        raise CheckpointError(
            f"{path} is a {payload['algo']} checkpoint, not {algo}: pick another --out"
        )
    changed = config_changes(payload["config"], config, may_change)
    if changed:
        raise CheckpointError(
            f"{path}: the config differs from the checkpoint's in {'; '.join(changed)}; "
            f"resume with the same settings (only {', '.join(sorted(may_change))} may "
            "change) or start a new run in another --out"
        )
    return payload


def write_metrics(out: str | Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``out/metrics.jsonl`` to hold exactly `history`: a fresh run starts it
    empty, a resumed one drops the rows logged after its checkpoint (they are produced
    again), so the log is never mixed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)


def append_metrics(out: str | Path, record: Mapping[str, Any]) -> None:
    with open(Path(out) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def unfinished(out: str | Path | None) -> str | None:
    """A warning when `out` holds the checkpoint of a run stopped before its end (one a
    fresh run there would replace), else None."""
    if out is None or not (Path(out) / CHECKPOINT).exists():
        return None
    try:
        payload = read_checkpoint(Path(out) / CHECKPOINT)
    except CheckpointError:
        return None
    total = payload.get("total")
    if not isinstance(total, int) or payload["update"] >= total:
        return None
    return (
        f"{Path(out) / CHECKPOINT} holds an unfinished {payload['algo']} run "
        f"({payload['update']} of {total}); starting over replaces it (pass --resume to "
        "continue it instead)"
    )


# ---------------------------------------------------------------------- configs
def _plain(value: Any) -> Any:
    """`value` in a form that compares by content: containers recursively, other objects
    (a backend instance in ``EnvConfig.backend``) by their type."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _plain(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping) and k != "backend_kwargs":
            out.update(_flat(v, name + "."))
        else:
            out[name] = _plain(v)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def config_changes(
    saved: Mapping[str, Any], config: Any, may_change: frozenset[str] = RUNTIME_FIELDS
) -> list[str]:
    """``"field: old -> new"`` for every field of `config` (a config dataclass) that differs
    from `saved` (its ``asdict`` in a checkpoint), nested fields dotted (``env.profile``),
    `may_change` and the config's ``unused_fields`` (fields its method does not read) left
    out. A field the checkpoint lacks (added since) counts as unchanged when `config`
    holds its default."""
    may_change = may_change | set(getattr(config, "unused_fields", ()))
    current = _flat(asdict(config))
    old = _flat(saved)
    try:
        defaults = _flat(asdict(type(config)()))
    except TypeError:  # a config without defaults for every field
        defaults = {}
    changes = []
    for name, value in current.items():
        if name.split(".")[0] in may_change:
            continue
        if name not in old:
            if name in defaults and defaults[name] == value:
                continue
            changes.append(f"{name}: (absent) -> {_short(value)}")
        elif old[name] != value:
            changes.append(f"{name}: {_short(old[name])} -> {_short(value)}")
    return changes


# ---------------------------------------------------------------------- interrupts
def _on_sigterm(signum: int, frame: Any) -> None:
    del frame
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """No SIGINT or SIGTERM while the checkpoint is written (a second Ctrl-C would leave
    only the previous checkpoint)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def saved_on_interrupt(save: Callable[[], Path | None]) -> Iterator[None]:
    """Inside the block, Ctrl-C (KeyboardInterrupt) and SIGTERM (`Terminated`) both call
    `save` (which writes the last update boundary's checkpoint and returns its path, or
    None when the run has no ``out``), print `RESUME_HINT` and re-raise. SIGTERM is caught
    only in the main thread and only where nobody else handles it (its handler is the
    default); the previous handler comes back afterwards."""
    installed = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    if installed:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except (KeyboardInterrupt, Terminated):
        with _signals_ignored():
            path = save()
        if path is not None:
            print(f"{RESUME_HINT} ({path})", file=sys.stderr, flush=True)
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ---------------------------------------------------------------------- policies
def _policy_from(payload: Any, path: Path) -> MetaPolicy:
    if isinstance(payload, dict) and "config" in payload and "state_dict" in payload:
        config, state = payload["config"], payload["state_dict"]  # a policy file
    elif isinstance(payload, dict) and "policy_config" in payload and "policy" in payload:
        config, state = payload["policy_config"], payload["policy"]  # a training checkpoint
    else:
        keys = ", ".join(map(repr, list(payload)[:6])) if isinstance(payload, dict) else ""
        raise CheckpointError(
            f"{path}: neither a policy file nor a training checkpoint "
            f"({type(payload).__name__}{' with ' + keys if keys else ''}); pass OUT/policy.pt "
            "or OUT/checkpoint.pt of a `deliberate train --out OUT` run"
        )
    try:
        known = {f.name for f in fields(PolicyConfig)}
        policy = MetaPolicy(PolicyConfig(**{k: v for k, v in config.items() if k in known}))
        policy.load_state_dict(state)
    except (TypeError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: its weights do not load into a MetaPolicy ({err})"
        ) from None
    return policy


def load_policy(path: str | Path) -> Policy:
    """A trained policy from `path`: a policy file (``OUT/policy.pt``), a training
    checkpoint (``OUT/checkpoint.pt``: the policy as of its last update, so an interrupted
    run can be evaluated), a run folder (its policy.pt, else its checkpoint.pt), or a
    Stable-Baselines3 model (``.zip``), or a topology method's ``policy.json``. Raises FileNotFoundError or `CheckpointError`, both
    naming the file."""
    path = Path(path)
    if path.is_dir():
        names = ("policy.pt", CHECKPOINT, "policy.json")
        found = [path / n for n in names if (path / n).exists()]
        if not found:
            raise FileNotFoundError(
                f"{path}: a folder without policy.pt or {CHECKPOINT}; train one with "
                f"`deliberate train --out {path}`"
            )
        path = found[0]
    if not path.exists():
        raise FileNotFoundError(
            f"no policy file at {path}: train one with `deliberate train --out DIR`"
        )
    if path.suffix == ".json":  # a topology method's graph (AgentPrune, GPTSwarm, DyLAN)
        from algorithms.topology_methods import load_policy as load_topology_policy

        try:
            return cast(Policy, load_topology_policy(path))
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{path}: not a policy.json written by a topology method ({err})"
            ) from None
    if path.suffix == ".zip":
        from algorithms.sb3 import SB3Policy

        try:
            return SB3Policy.load(path)
        except Exception as err:  # SB3 and zipfile raise many kinds for a damaged file
            raise CheckpointError(
                f"{path}: cannot be read as a Stable-Baselines3 model ({type(err).__name__}: {err})"
            ) from None
    return _policy_from(_load(path, "policy file or training checkpoint"), path)
