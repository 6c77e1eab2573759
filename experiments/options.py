"""Config dataclasses as command-line options, through `tyro`: every field of a config
(and of the `EnvConfig` nested in it) is a ``--field-name`` option with its docstring as
help and a `Literal` field's values as choices; a bad value is refused before any work
starts (`tyro` parses, the dataclass's ``__post_init__`` validates).

`parse` is the one entry point (`experiments.cli` calls it per subcommand); `REGISTRY`
teaches tyro the project's few non-scalar types: a task source and a backend are given by
name, ``backend_kwargs`` as JSON, and a config's booleans as a value (``--use-clip false``,
as the docs write them; fields under `tyro.conf.FlagConversionOff`), a command's switches
as flags (`Switch`: ``--resume``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import tyro
from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec, PrimitiveTypeInfo

from algorithms.tracking import TRACKERS
from deliberation_env.config import BackendSpec, TaskSource
from deliberation_env.topology import TopologySpec

T = TypeVar("T")
C = TypeVar("C")

REGISTRY = ConstructorRegistry()
"""How tyro reads the config types it has no rule for (`parse` passes it)."""

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _bool(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f'not JSON ({err.msg}): {text!r}; write e.g. \'{{"model": "x"}}\''
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object {{...}}, got {text!r}")
    return value


def _text(metavar: str, parse: Callable[[str], Any], show: Callable[[Any], str] = str) -> Any:
    """A one-argument option read by `parse`."""
    return PrimitiveConstructorSpec(
        nargs=1,
        metavar=metavar,
        instance_from_str=lambda args: parse(args[0]),
        is_instance=lambda _: True,
        str_from_instance=lambda value: [show(value)],
    )


@REGISTRY.primitive_rule
def _project_types(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
    if info.type is bool:  # a value, never a flag pair: ``--share-parameters false``
        return _text("{true,false}", _bool, lambda v: str(v).lower())
    if info.type == TaskSource:  # the command line names a load_tasks spec
        return _text("SPEC", str)
    if info.type == BackendSpec:  # and a registered backend
        return _text("NAME", str)
    if info.type == TopologySpec:  # a topology name or a JSON 0/1 matrix
        return _text("{NAME,JSON}", str, lambda v: v if isinstance(v, str) else json.dumps(v))
    if info.type_origin in (Mapping, dict):  # backend_kwargs, --env-kwargs
        return _text("JSON", _json_object, json.dumps)
    return None


Switch = tyro.conf.FlagCreatePairsOff[bool]
"""A command's switch, given without a value (``--resume``, ``--render-only``), in
``name: Switch = False``. Config fields take a value instead (``--use-clip false``)."""


def choice(names: Callable[[], Sequence[str]], metavar: str = "") -> Any:
    """A `str` option whose valid values come from a registry (`BUDGETS`, `PROTOCOLS`,
    `ALGORITHMS`), read when the parser is built so later registrations count."""
    valid = tuple(names())
    return PrimitiveConstructorSpec(
        nargs=1,
        metavar=metavar or "{" + ",".join(valid) + "}",
        instance_from_str=lambda args: args[0],
        is_instance=lambda v: isinstance(v, str),
        str_from_instance=lambda v: [v],
        choices=valid,
    )


Track = Annotated[str, choice(lambda: list(TRACKERS))] | None
"""``--track {tensorboard,wandb}``: a backend of `algorithms.tracking.TRACKERS`."""


def parse(
    cls: type[T],
    args: Sequence[str],
    prog: str,
    description: str | None = None,
    default: T | None = None,
) -> T:
    """``cls`` from the command line `args` (tyro, with `REGISTRY`); nested dataclasses
    are flattened (``--profile``, not ``--env.profile``). ``--help`` prints every option
    with its field's docstring (and `description`, default ``cls``'s docstring) and exits
    0; a bad option exits 2 with tyro's message."""
    kwargs: dict[str, Any] = {} if default is None else {"default": default}
    return tyro.cli(
        cls,
        args=list(args),
        prog=prog,
        description=(cls.__doc__ or "") if description is None else description,
        registry=REGISTRY,
        config=(tyro.conf.OmitArgPrefixes,),
        **kwargs,
    )


@dataclasses.dataclass
class TrainCommand(Generic[C]):
    """``deliberate train --algo NAME``: the algorithm's config, plus these."""

    config: Annotated[tyro.conf.FlagConversionOff[C], tyro.conf.arg(name="")]
    """The algorithm's config dataclass; its env fields come flattened beside its own."""
    steps: int | None = None
    """The training length under its older name: --updates of the RL methods (sft counts
    --epochs and --episodes, sb3_ppo --total-timesteps)."""
    resume: Switch = False
    """Continue from OUT/checkpoint.pt (a flag)."""
    track: Track = None
    """Also log the config and every metrics.jsonl row to TensorBoard (OUT/tensorboard)
    or Weights & Biases (run id in OUT; WANDB_MODE=offline keeps it local); needs --out
    and pip install 'deliberation-env[track]'. --resume continues the same log."""


def train_config(
    algo: str, cls: type, argv: Sequence[str], description: str = ""
) -> tuple[Any, bool]:
    """(config, ``--resume``) of ``deliberate train --algo ALGO ARGV`` (`train_command`)."""
    command = train_command(algo, cls, argv, description)
    return command.config, command.resume


def train_command(
    algo: str, cls: type, argv: Sequence[str], description: str = ""
) -> TrainCommand[Any]:
    """``deliberate train --algo ALGO ARGV`` read: every field of the algorithm's config
    `cls` and of its `EnvConfig` is an option, besides ``--resume`` and ``--track``; the
    ``--steps`` of the result's config already applied. Options the method does not read
    (``cls.unused_fields``) and ``--steps`` without an ``updates`` field are refused with
    the option to use instead."""
    unused = set(getattr(cls, "unused_fields", ()))
    given = {a.split("=", 1)[0][2:].replace("-", "_") for a in argv if a.startswith("--")}
    refused = sorted(given & unused)
    lengths = [n for n in ("epochs", "episodes", "total_timesteps") if _offers(cls, n, unused)]
    budget = " and ".join(flag(n) for n in lengths) or "its own options (--help)"
    if refused:
        raise ValueError(
            f"{algo} does not use {', '.join(map(flag, refused))}: its training length is "
            f"{budget} (deliberate train --algo {algo} --help lists its options)"
        )
    command = parse(TrainCommand[cls], argv, f"deliberate train --algo {algo}", description)  # type: ignore[valid-type]
    cfg = command.config
    if command.steps is not None:
        if not _offers(cls, "updates", unused):
            raise ValueError(f"--steps sets --updates, which {algo} does not have: pass {budget}")
        cfg = dataclasses.replace(cfg, updates=command.steps)
    return dataclasses.replace(command, config=cfg, steps=None)


def _offers(cls: type, name: str, unused: set[str]) -> bool:
    return name in {f.name for f in dataclasses.fields(cls)} - unused


def flag(name: str) -> str:
    """The option of field `name`: ``--group-size`` for ``group_size``."""
    return "--" + name.replace("_", "-")


def check_out(path: str | os.PathLike[str] | None, option: str = "--out") -> None:
    """Refuse an output folder that cannot be written before any work starts: a file, or
    a folder (or the nearest existing parent of one to create) without write access."""
    if path is None:
        return
    where = Path(path)
    if where.exists() and not where.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder: pick another {option}")
    existing = next(p for p in (where, *where.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {existing} is not writable: pick another {option}")
