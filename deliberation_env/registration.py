"""PettingZoo entry points: `parallel_env`, `env` (the AEC twin), `raw_env`, and the
registry ids ``deliberation/Deliberation-v0`` for ``"parallel"`` and ``"aec"``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pettingzoo
from pettingzoo.utils import parallel_to_aec, wrappers

from deliberation_env.config import EnvConfig
from deliberation_env.env import DeliberationEnv

ENV_ID = "deliberation/Deliberation-v0"

ConfigArg = EnvConfig | Mapping[str, Any] | None


def parallel_env(config: ConfigArg = None, **overrides: Any) -> DeliberationEnv:
    """The parallel env: ``parallel_env(config=EnvConfig(...), **overrides)``, or fields,
    view options and backend arguments by keyword (see `DeliberationEnv`)."""
    return DeliberationEnv(config, **overrides)


def raw_env(config: ConfigArg = None, **overrides: Any) -> pettingzoo.AECEnv:
    """The AEC twin without PettingZoo's order-enforcing wrapper."""
    return parallel_to_aec(DeliberationEnv(config, **overrides))


def env(config: ConfigArg = None, **overrides: Any) -> pettingzoo.AECEnv:
    """The AEC twin, wrapped as PettingZoo's own envs are."""
    return wrappers.OrderEnforcingWrapper(raw_env(config, **overrides))


def register_envs() -> None:
    """Add the ids to PettingZoo's registries (idempotent)."""
    if ENV_ID not in pettingzoo.parallel_registry:
        pettingzoo.register("parallel", ENV_ID, entry_point=parallel_env)
    if ENV_ID not in pettingzoo.aec_registry:
        pettingzoo.register("aec", ENV_ID, entry_point=env)
