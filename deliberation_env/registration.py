"""PettingZoo entry points: `parallel_env`, `env` (the AEC twin), `raw_env`, and the
registry ids ``deliberation/Deliberation-v1`` (the current version) and
``deliberation/Deliberation-v0`` (every simulator profile pinned to its ``@v0`` twin, so
results published on v0 can be reproduced), each for ``"parallel"`` and ``"aec"``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import pettingzoo
from pettingzoo.utils import parallel_to_aec, wrappers

from deliberation_env.config import EnvConfig
from deliberation_env.env import DeliberationEnv, InfoMode, ObsMode

ENV_ID = "deliberation/Deliberation-v1"
"""The registry id of the current version (`parallel_env`, `env`)."""
ENV_ID_V0 = "deliberation/Deliberation-v0"
"""The registry id of version 0 (`parallel_env_v0`, `env_v0`)."""

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


def pin_profile(profile: str, version: str) -> str:
    """`profile` with the version suffix ``@{version}``, unless it carries one already.

    The simulator resolves ``"llama3.1-8b/gsm8k@v0"`` to that profile's v0 twin, and a
    suffix on a profile with one version only (``toy``, profiles registered by a user) to
    the profile itself (`agents.profiles.get_profile`)."""
    return profile if "@" in profile else f"{profile}@{version}"


def parallel_env_v0(
    config: ConfigArg = None,
    *,
    render_mode: str | None = None,
    obs_mode: ObsMode = "flat",
    info_mode: InfoMode = "python",
    **overrides: Any,
) -> DeliberationEnv:
    """``Deliberation-v0``: `parallel_env` with the simulator profile pinned to its ``@v0``
    twin (v0's profiles and REFINE model, number for number; ``toy`` is the same in both).
    A backend instance, or a backend other than the simulator, is used as given."""
    built = EnvConfig.build(config, **overrides)
    pinned = dataclasses.replace(built, profile=pin_profile(built.profile, "v0"))
    return DeliberationEnv(pinned, render_mode=render_mode, obs_mode=obs_mode, info_mode=info_mode)


def env_v0(config: ConfigArg = None, **overrides: Any) -> pettingzoo.AECEnv:
    """The AEC twin of `parallel_env_v0`, wrapped as PettingZoo's own envs are."""
    return wrappers.OrderEnforcingWrapper(parallel_to_aec(parallel_env_v0(config, **overrides)))


REGISTRY: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    ENV_ID: (parallel_env, env),
    ENV_ID_V0: (parallel_env_v0, env_v0),
}
"""Registry id -> (parallel entry point, AEC entry point)."""


def register_envs() -> None:
    """Add the ids to PettingZoo's registries (idempotent). PettingZoo < 1.27 has no
    registry: there this does nothing, and the entry points above are the way in."""
    if not hasattr(pettingzoo, "parallel_registry"):
        return
    for env_id, (parallel, aec) in REGISTRY.items():
        if env_id not in pettingzoo.parallel_registry:
            pettingzoo.register("parallel", env_id, entry_point=parallel)
        if env_id not in pettingzoo.aec_registry:
            pettingzoo.register("aec", env_id, entry_point=aec)
