"""Config dataclasses as command-line options: ``deliberate train`` offers every scalar
field of an algorithm's config and of its `EnvConfig`, each with its docstring as help
(`deliberation_env.spec.field_docs`) and a `Literal` field's values as choices."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import typing
from collections.abc import Callable, Sequence
from typing import Any

from deliberation_env import EnvConfig
from deliberation_env.spec import field_docs

SCALARS: dict[Any, Callable[[str], Any]] = {int: int, float: float, str: str}
SKIPPED_ENV_FIELDS = ("backend", "backend_kwargs")
"""Env fields `train` does not offer: training runs on the simulator (`eval` has the
backend options)."""


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _option_type(hint: Any) -> tuple[Callable[[str], Any], tuple[Any, ...] | None] | None:
    """(argparse type, choices) of a field's type: a scalar, a `Literal` (its values are
    the choices), ``X | None``, or a union with `str` (``tasks``) taken as `str`; None for
    anything else (dicts, objects: set them from Python)."""
    if typing.get_origin(hint) is typing.Literal:
        values = typing.get_args(hint)
        return type(values[0]), values
    if hint is bool:
        return _bool, None
    if hint in SCALARS:
        return SCALARS[hint], None
    members = [t for t in typing.get_args(hint) if t is not type(None)]
    if len(members) == 1:
        return _option_type(members[0])
    return (str, None) if str in members else None


def _docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass and of its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            with contextlib.suppress(OSError, TypeError):  # no source: a class from a REPL
                docs.update(field_docs(klass))
    return docs


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_config_options(
    parser: argparse._ActionsContainer, cls: type, defaults: Any = None, skip: Sequence[str] = ()
) -> list[str]:
    """One ``--field-name`` option per scalar field of the config dataclass `cls` (its
    default read from the instance `defaults` when given, else from the field), with its
    docstring as help; returns the field names. Options default to None: unset ones are
    left to the dataclass."""
    hints, docs, names = typing.get_type_hints(cls), _docs(cls), []
    for f in dataclasses.fields(cls):
        option = None if f.name in skip else _option_type(hints[f.name])
        if option is None:
            continue
        kind, choices = option
        default = getattr(defaults, f.name) if defaults is not None else _default(f)
        help_ = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%")
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=kind, choices=choices, help=help_
        )
        names.append(f.name)
    return names


def train_config(
    cls: type, rest: Sequence[str], description: str = "", prog: str = ""
) -> tuple[Any, bool]:
    """(config, ``--resume``) from ``deliberate train``'s options `rest`: the algorithm's
    own fields fill `cls`, the env fields ``EnvConfig.build(cls's default env, ...)`` (a
    config without an `env` field takes its own fields only)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    env_field = next((f for f in dataclasses.fields(cls) if f.name == "env"), None)
    env_names: list[str] = []
    if env_field is not None:
        group = parser.add_argument_group("env (deliberation_env.EnvConfig)")
        env_names = add_config_options(group, EnvConfig, _default(env_field), SKIPPED_ENV_FIELDS)
    clash = sorted(set(env_names) & {f.name for f in dataclasses.fields(cls)})
    if clash:
        raise SystemExit(f"{cls.__name__} fields {clash} shadow EnvConfig fields: rename them")
    add_config_options(parser.add_argument_group(f"training ({cls.__name__})"), cls)
    parser.add_argument("--steps", dest="updates", type=int, help="alias of --updates")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    opts = {k: v for k, v in vars(parser.parse_args(rest)).items() if v is not None}
    resume = opts.pop("resume")
    values = {k: v for k, v in opts.items() if k not in env_names}
    if env_field is not None:
        env = {k: v for k, v in opts.items() if k in env_names}
        values["env"] = EnvConfig.build(_default(env_field), **env)
    return cls(**values), resume
