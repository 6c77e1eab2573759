"""PettingZoo entry points: `parallel_env`, `env` (the AEC twin), `raw_env`, and the
registry ids ``deliberation/Deliberation-v0`` for ``"parallel"`` and ``"aec"``."""

from __future__ import annotations

from typing import Any

import pettingzoo
from pettingzoo.utils import parallel_to_aec, wrappers

from deliberation_env.env import DeliberationEnv

ENV_ID = "deliberation/Deliberation-v0"


def parallel_env(**kwargs: Any) -> DeliberationEnv:
    """The parallel env (see `deliberation_env.env` for every argument)."""
    return DeliberationEnv(**kwargs)


def raw_env(**kwargs: Any) -> pettingzoo.AECEnv:
    """The AEC twin without PettingZoo's order-enforcing wrapper."""
    return parallel_to_aec(DeliberationEnv(**kwargs))


def env(**kwargs: Any) -> pettingzoo.AECEnv:
    """The AEC twin, wrapped as PettingZoo's own envs are."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


def register_envs() -> None:
    """Add the ids to PettingZoo's registries (idempotent)."""
    if ENV_ID not in pettingzoo.parallel_registry:
        pettingzoo.register("parallel", ENV_ID, entry_point=parallel_env)
    if ENV_ID not in pettingzoo.aec_registry:
        pettingzoo.register("aec", ENV_ID, entry_point=env)
