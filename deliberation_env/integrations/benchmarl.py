"""BenchMARL: `DeliberationTask`, a BenchMARL task, so ``benchmarl`` runs MAPPO, IPPO, ...
on the env (through `deliberation_env.integrations.torchrl.torchrl_env`, so with
``info_mode="numeric"``). BenchMARL 1.5 needs torchrl < 0.12."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarl.environments.common import Task
from benchmarl.environments.pettingzoo.common import PettingZooClass
from torchrl.envs import EnvBase

import deliberation_env
from deliberation_env.integrations.torchrl import torchrl_env


class DeliberationTaskClass(PettingZooClass):
    """The BenchMARL task: `config` holds `parallel_env` arguments (``{"profile": "toy"}``)."""

    def get_env_fun(
        self, num_envs: int, continuous_actions: bool, seed: int | None, device: Any
    ) -> Callable[[], EnvBase]:
        if continuous_actions:
            raise ValueError(
                "the deliberation env has discrete actions: set prefer_continuous_actions=False"
            )
        config = dict(self.config)
        return lambda: torchrl_env(seed=seed, device=device, **config)

    def supports_continuous_actions(self) -> bool:
        return False

    def supports_discrete_actions(self) -> bool:
        return True

    def has_state(self) -> bool:
        return True

    def has_render(self, env: EnvBase) -> bool:
        return False

    def max_steps(self, env: EnvBase) -> int:
        return int(self.config.get("max_rounds", deliberation_env.EnvConfig.max_rounds))

    @staticmethod
    def env_name() -> str:
        return "deliberation"


class DeliberationTask(Task):
    """BenchMARL's enum of the env's tasks: ``DeliberationTask.DELIBERATION.get_task({})``
    (the config is `parallel_env` arguments; there is no YAML file for it)."""

    DELIBERATION = None

    @staticmethod
    def associated_class():
        return DeliberationTaskClass

    def get_task(self, config: dict[str, Any] | None = None) -> DeliberationTaskClass:
        return DeliberationTaskClass(name=self.name, config=dict(config or {}))
