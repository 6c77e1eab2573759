"""Experiment tracking: the rows a trainer logs to ``metrics.jsonl``, its config and the
evaluation tables, sent to TensorBoard or Weights & Biases as well
(``deliberate train/compare --track tensorboard|wandb``; docs/tracking.md).

A `Tracker` has four methods, ``log_config``, ``log_scalars(step, row)``,
``log_table(name, rows)`` and ``close``, and is a context manager, so an exception or
Ctrl-C still closes (flushes) it. ``log_scalars`` takes a whole history row: the JSONL
tracker writes it as it is, TensorBoard and W&B keep its numeric fields (nested mappings
flattened with ``/``: ``label_shares/persist``) at the row's `step` (its ``update``,
``epoch`` or ``step`` field, `row_step`).

TensorBoard and wandb are optional (``pip install 'deliberation-env[track]'``) and
imported only when a tracker of theirs is made: training without ``--track`` imports
neither.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import math
import os
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Protocol

__all__ = [
    "EXTRA",
    "STEP_KEYS",
    "TRACKERS",
    "JsonlTracker",
    "MissingExtra",
    "TensorBoardTracker",
    "Tracker",
    "WandbTracker",
    "log_history",
    "log_results",
    "log_row",
    "make_tracker",
    "numeric",
    "register_tracker",
    "row_step",
    "start_run",
    "summary_rows",
    "tracked_train",
]

EXTRA = "pip install 'deliberation-env[track]'"
"""What installs the tracking backends (the ``track`` extra: tensorboard and wandb)."""

STEP_KEYS = ("update", "epoch", "step")
"""The field of a history row that is its step, first found wins: ``update`` (the RL
trainers), ``epoch`` (SFT), ``step`` (SB3: agent-steps so far)."""

WANDB_RUN_ID = "wandb_run_id"
"""File in a run's ``out`` folder that holds its W&B run id, so ``--resume`` continues
the same W&B run."""


class MissingExtra(ImportError):
    """A tracking backend whose package is not installed; the message says what to run."""


class Tracker(Protocol):
    """Where a run's rows, config and tables go besides ``metrics.jsonl``."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's config (nested mappings allowed)."""

    def log_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """One history row at `step`; backends keep the numeric fields (`numeric`)."""

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """A table, one mapping per row; the first field names the row (``method``)."""

    def close(self) -> None:
        """Flush and close; safe to call twice."""

    def __enter__(self) -> Tracker: ...

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _Closing:
    """The context manager of every tracker: leaving the block closes it."""

    def close(self) -> None:  # pragma: no cover - replaced by each tracker
        pass

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ---------------------------------------------------------------------- rows
def numeric(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric fields of `row` (bools as 0/1), nested mappings flattened with ``/``;
    strings, lists and None are left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric(value, name + "/"))
        elif isinstance(value, (bool, int, float)):
            out[name] = float(value)
    return out


def row_step(row: Mapping[str, Any], index: int) -> int:
    """The step of history row number `index` (0-based): its ``update``, ``epoch`` or
    ``step`` field (`STEP_KEYS`), else ``index + 1``."""
    for key in STEP_KEYS:
        if isinstance(row.get(key), int):
            return int(row[key])
    return index + 1


def jsonable(value: Any) -> Any:
    """`value` as JSON-able data: dataclasses and mappings as dicts, tuples as lists (a
    long task list as ``"<400 items>"``), anything else as its ``repr``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value] if len(value) <= 64 else f"<{len(value)} items>"
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """`config` with nested mappings dotted (``env.profile``) and every value a scalar
    (lists and None as text): the hyperparameters of TensorBoard's HPARAMS tab."""
    out: dict[str, str | int | float | bool] = {}
    for key, value in jsonable(config).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        elif isinstance(value, (str, int, float, bool)):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


def summary_rows(methods: Mapping[str, Mapping[str, Any]], key: str = "method") -> list[dict]:
    """`compare`'s ``results["methods"]`` as table rows: ``{key: NAME, metric: mean,
    ...}``, a metric's mean where it has one (``{"mean", "ci95", ...}``) and the shares
    (``action_shares``) as ``action_shares/persist``...; per-round lists left out."""
    rows = []
    for name, summary in methods.items():
        row: dict[str, Any] = {key: name}
        for metric, value in summary.items():
            if isinstance(value, Mapping) and isinstance(value.get("mean"), (int, float)):
                row[metric] = float(value["mean"])
            elif isinstance(value, Mapping):
                row.update(numeric(value, metric + "/"))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                row[metric] = float(value)
        rows.append(row)
    return rows


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """`rows` as a Markdown table (the columns of every row, in first-seen order)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _require(module: str, backend: str) -> ModuleType:
    """Import `module` (optional), or a `MissingExtra` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(
            f"--track {backend} needs the {module.split('.')[0]} package, which is not "
            f"installed ({err}); install the tracking extra: {EXTRA}"
        ) from None


# ---------------------------------------------------------------------- JSONL
class JsonlTracker(_Closing):
    """The trainers' own log as a tracker: rows appended to ``out/metrics.jsonl`` in the
    bytes `algorithms.checkpoint.append_metrics` writes (the trainers write that file
    themselves, this tracker writes it the same way for code that logs through
    trackers), the config to ``out/config.json``, each table to ``out/NAME.jsonl``.
    Opening it rewrites ``metrics.jsonl`` to hold `history` (empty: a fresh log)."""

    def __init__(self, out: str | Path, history: Sequence[Mapping[str, Any]] = ()) -> None:
        from algorithms.checkpoint import write_metrics

        self.out = Path(out)
        write_metrics(self.out, [dict(r) for r in history])

    def log_config(self, config: Mapping[str, Any]) -> None:
        (self.out / "config.json").write_text(json.dumps(jsonable(config), indent=2) + "\n")

    def log_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        del step  # the row carries its own step field
        from algorithms.checkpoint import append_metrics

        append_metrics(self.out, scalars)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        with open(self.out / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(jsonable(r)) + "\n" for r in rows)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------- TensorBoard
HPARAM_METRICS = ("team_accuracy", "eval_team_accuracy", "label_accuracy", "loss")
"""Scalars TensorBoard's HPARAMS tab shows beside each run's hyperparameters."""


class TensorBoardTracker(_Closing):
    """Event files in `logdir` (``OUT/tensorboard``; ``tensorboard --logdir OUT``), written
    by ``torch.utils.tensorboard.SummaryWriter``: every numeric field of a row is a scalar
    tag at the row's step; the config is the text ``config`` (JSON) and the HPARAMS
    entry (flattened: ``env.profile``); a table is the text NAME (Markdown) plus one
    scalar ``NAME/ROW/COLUMN`` per numeric cell, at step 0.

    `resume`: the writer, opened at the first row, purges the events at and after that
    row's step (TensorBoard's ``purge_step``), so rows an interrupted run logged after its
    checkpoint are replaced, not doubled; the config is written only once per folder."""

    def __init__(self, logdir: str | Path, resume: bool = False) -> None:
        _require("tensorboard", "tensorboard")
        self.logdir = Path(logdir)
        self.resume = resume
        self._writer: Any = None
        self._config: Mapping[str, Any] | None = None
        self._closed = False

    def writer(self, first_step: int | None = None) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            had_events = any(self.logdir.glob("events.out.tfevents.*"))
            purge = first_step if self.resume and had_events else None
            self._writer = SummaryWriter(str(self.logdir), purge_step=purge, flush_secs=10)
            if self._config is not None and not (self.resume and had_events):
                self._write_config(self._config)
        return self._writer

    def _write_config(self, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        text = json.dumps(jsonable(config), indent=2)
        self._writer.add_text("config", f"```json\n{text}\n```", 0)
        metrics = dict.fromkeys(HPARAM_METRICS, 0.0)
        for summary in hparams(flat(config), metrics):
            self._writer._get_file_writer().add_summary(summary)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._config = dict(config)  # written when the writer opens (its purge step waits)
        if self._writer is not None:
            self._write_config(self._config)

    def log_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        writer = self.writer(step)
        for tag, value in numeric(scalars).items():
            writer.add_scalar(tag, value, step)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        writer = self.writer()  # no purge: a table is no row of the run
        writer.add_text(name, markdown(rows), 0)
        for row in rows:
            label = str(next(iter(row.values()), ""))
            for column, value in numeric(row).items():
                writer.add_scalar(f"{name}/{label}/{column}", value, 0)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is None and self._config is not None:
            self.writer()  # a run that logged only its config still gets it written
        if self._writer is not None:
            self._writer.close()


# ---------------------------------------------------------------------- W&B
class WandbTracker(_Closing):
    """A Weights & Biases run: rows through ``run.log(fields, step=step)``, the config as
    the run config, a table as a ``wandb.Table``. Its files go to ``$WANDB_DIR`` or `out`
    (``OUT/wandb``); ``WANDB_MODE=offline`` keeps them local (``wandb sync`` uploads
    later), ``WANDB_PROJECT`` names the project (default ``deliberation-env``).

    The run id is stored in ``out/wandb_run_id``; `resume` reads it back and continues that
    run (``resume="allow"``). W&B drops rows whose step it has already seen, which are
    the ones an interrupted run logged after its checkpoint: a resumed run reproduces
    them bit for bit (tests/test_resume.py), so nothing is lost."""

    def __init__(
        self,
        out: str | Path,
        name: str | None = None,
        resume: bool = False,
        group: str | None = None,
        project: str | None = None,
    ) -> None:
        self.wandb = _require("wandb", "wandb")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        id_file = self.out / WANDB_RUN_ID
        if resume and id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = "".join(
                secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8)
            )
            id_file.write_text(run_id + "\n")
        self.run = self.wandb.init(
            project=project or os.environ.get("WANDB_PROJECT", "deliberation-env"),
            id=run_id,
            name=name,
            group=group,
            resume="allow",
            dir=os.environ.get("WANDB_DIR") or str(self.out),
        )
        self._closed = False

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(jsonable(config), allow_val_change=True)

    def log_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self.run.log(numeric(scalars), step=step)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        data = [[jsonable(r.get(c)) for c in columns] for r in rows]
        self.run.log({name: self.wandb.Table(columns=columns, data=data)})

    def close(self, exit_code: int = 0) -> None:
        if not self._closed:
            self._closed = True
            self.run.finish(exit_code=exit_code)

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exit_code=0 if kind is None else 1)  # the run shows as failed


# ---------------------------------------------------------------------- registry
TrackerFactory = Callable[..., Tracker]
"""``factory(out, *, name, resume, group) -> Tracker``: a tracker for the run in `out`."""

TRACKERS: dict[str, TrackerFactory] = {}
"""``--track NAME`` -> the factory of its tracker."""


def register_tracker(name: str, factory: TrackerFactory) -> None:
    """Add (or replace) the backend ``--track NAME``."""
    TRACKERS[name] = factory


register_tracker(
    "tensorboard",
    lambda out, *, name=None, resume=False, group=None: TensorBoardTracker(
        Path(out) / "tensorboard", resume=resume
    ),
)
register_tracker(
    "wandb",
    lambda out, *, name=None, resume=False, group=None: WandbTracker(
        out, name=name, resume=resume, group=group
    ),
)


def make_tracker(
    kind: str | None,
    out: str | Path | None,
    *,
    name: str | None = None,
    resume: bool = False,
    group: str | None = None,
) -> Tracker | None:
    """The tracker ``--track KIND`` gives the run in `out` (None when `kind` is None):
    TensorBoard logs to ``out/tensorboard``, W&B keeps its run id in ``out``."""
    if kind is None:
        return None
    if kind not in TRACKERS:
        raise ValueError(f"--track {kind!r}: unknown; valid: {', '.join(TRACKERS)}")
    if out is None:
        raise ValueError(f"--track {kind} needs --out DIR: the run's logs go under DIR")
    return TRACKERS[kind](out, name=name, resume=resume, group=group)


# ---------------------------------------------------------------------- trainer hooks
def start_run(tracker: Tracker | None, algo: str, cfg: Any) -> None:
    """Log the config of a training run of `algo` (``{"algo", **asdict(cfg)}``)."""
    if tracker is not None:
        tracker.log_config({"algo": algo, **jsonable(cfg)})


def log_row(tracker: Tracker | None, row: Mapping[str, Any], index: int) -> None:
    """Log history row number `index` (0-based) at its step (`row_step`)."""
    if tracker is not None:
        tracker.log_scalars(row_step(row, index), row)


def log_history(tracker: Tracker | None, history: Sequence[Mapping[str, Any]]) -> None:
    """Log every row of `history` (a method whose ``train`` takes no tracker)."""
    for index, row in enumerate(history):
        log_row(tracker, row, index)


def tracked_train(
    train: Callable[..., Any],
    cfg: Any,
    track: str | None,
    out: str | Path | None,
    *,
    name: str,
    run_name: str | None = None,
    resume: bool = False,
    group: str | None = None,
    **kwargs: Any,
) -> Any:
    """``train(cfg, **kwargs)`` of method `name` (plus ``resume=True`` when `resume`) with
    the ``--track`` tracker for `out` open around it (closed, so flushed, however
    training ends; `resume` continues its log); without `track`, plain ``train``. A
    ``train`` without a `tracker` argument has its config and rows logged when it
    returns."""
    if resume:
        kwargs["resume"] = True
    tracker = make_tracker(track, out, name=run_name or name, resume=resume, group=group)
    if tracker is None:
        return train(cfg, **kwargs)
    with tracker:
        if "tracker" in inspect.signature(train).parameters:
            return train(cfg, tracker=tracker, **kwargs)
        start_run(tracker, name, cfg)
        result = train(cfg, **kwargs)
        log_history(tracker, result[1])
        return result


def log_results(tracker: Tracker | None, results: Mapping[str, Any], name: str = "results") -> None:
    """Log a comparison (`experiments.compare.compare`'s results) and close `tracker`: its
    ``config`` as the config, its methods as the table `name` (`summary_rows`)."""
    if tracker is None:
        return
    with tracker:
        tracker.log_config(results.get("config", {}))
        tracker.log_table(name, summary_rows(results["methods"]))
