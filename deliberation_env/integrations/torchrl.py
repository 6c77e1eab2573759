"""TorchRL: `torchrl_env`, the env as a TorchRL `PettingZooWrapper` (BenchMARL's task,
`deliberation_env.integrations.benchmarl`, builds it too).

It builds the env with ``info_mode="numeric"``: TorchRL turns every info into a tensor
spec from the infos of reset, so infos must be fixed-shape numbers with one key set at
every step, and the mask may sit in the observation or the infos, not both
(`docs/integrations.md`). One group ``"agent"`` holds every agent (parameter sharing
across them is BenchMARL's ``share_policy_params``); ``state()`` is the group's
``"state"`` for centralised critics (MAPPO).
"""

from __future__ import annotations

from typing import Any

from torchrl.envs.libs.pettingzoo import PettingZooWrapper

import deliberation_env


def torchrl_env(
    seed: int | None = None, device: Any = "cpu", use_mask: bool = False, **kwargs: Any
) -> PettingZooWrapper:
    """``PettingZooWrapper(parallel_env(info_mode="numeric", **kwargs))`` with categorical
    actions, the action mask and the global state. `use_mask` adds TorchRL's per-agent
    ``mask`` entry (all agents act every round, so it is all True)."""
    env = deliberation_env.parallel_env(info_mode="numeric", **kwargs)
    return PettingZooWrapper(
        env,
        categorical_actions=True,
        return_state=True,
        use_mask=use_mask,
        seed=seed,
        device=device,
    )
