"""Controllers of beta, the weight of the KL trust region to the reference policy: fixed
(MPDF's), adaptive to a target KL (Ziegler et al. 2019, TRL's `AdaptiveKLController`),
or annealed to a floor. The trainer asks for ``value`` before each update and reports the
update's mean KL(pi || pi_ref) with ``update(kl, n_steps)``, `n_steps` the rollouts
(episodes) it was collected from (TRL's batch size).

Why not only the paper's fixed beta: it holds the two-stage pipeline's RL stage near the
SFT policy it starts from however far training runs; an adaptive beta lets it move as
far as a target KL allows, an annealed one releases it on a schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # common imports this module for its names; the config is a type here
    from algorithms.common import TrainConfig

KLControl = Literal["fixed", "adaptive", "anneal"]
KLAnneal = Literal["linear", "exponential"]


class KLController(Protocol):
    """``value``: the beta of the next update; ``update(kl, n_steps)``: after an update
    whose mean KL(pi || pi_ref) was `kl`, over `n_steps` rollouts; ``state_dict`` and
    ``load_state_dict`` for checkpoints."""

    value: float

    def update(self, kl: float, n_steps: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class _Stateful:
    value: float

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@dataclass
class FixedKLController(_Stateful):
    """beta stays `value` (MPDF's fixed trust region)."""

    def update(self, kl: float, n_steps: int) -> None:
        del kl, n_steps


@dataclass
class AdaptiveKLController(_Stateful):
    """Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences"), as TRL's
    `AdaptiveKLController`: ``beta *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps /
    horizon``, so beta grows while the KL is above `target` and shrinks while below, by at
    most 20% per `horizon` rollouts."""

    target: float = 0.1
    horizon: int = 10_000

    def update(self, kl: float, n_steps: int) -> None:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


@dataclass
class AnnealedKLController(_Stateful):
    """beta decays from its start to `floor` over `horizon` rollouts, then stays there:
    linearly (``start + (floor - start) * t / horizon``) or exponentially (``start *
    (floor / start) ** (t / horizon)``; a floor of 0 decays linearly), t the rollouts seen.
    The KL itself is not read."""

    start: float = 0.02
    floor: float = 0.0
    horizon: int = 10_000
    schedule: KLAnneal = "linear"
    steps: int = 0

    def update(self, kl: float, n_steps: int) -> None:
        del kl
        self.steps += n_steps
        frac = min(self.steps / self.horizon, 1.0)
        if self.schedule == "exponential" and self.floor > 0 and self.start > 0:
            self.value = self.start * math.exp(frac * math.log(self.floor / self.start))
        else:
            self.value = self.start + (self.floor - self.start) * frac


def _fixed(cfg: TrainConfig) -> KLController:
    return FixedKLController(cfg.beta)


def _adaptive(cfg: TrainConfig) -> KLController:
    if cfg.target_kl <= 0:
        raise ValueError(f"target_kl must be > 0 for kl_control='adaptive', got {cfg.target_kl}")
    return AdaptiveKLController(cfg.beta, cfg.target_kl, cfg.kl_horizon)


def _anneal(cfg: TrainConfig) -> KLController:
    if cfg.kl_anneal not in ("linear", "exponential"):
        raise ValueError(f"kl_anneal must be 'linear' or 'exponential', got {cfg.kl_anneal!r}")
    return AnnealedKLController(cfg.beta, cfg.beta, cfg.kl_floor, cfg.kl_horizon, cfg.kl_anneal)


KL_CONTROLLERS: dict[str, Callable[[TrainConfig], KLController]] = {
    "fixed": _fixed,
    "adaptive": _adaptive,
    "anneal": _anneal,
}
"""`TrainConfig.kl_control` name -> builder of its controller from the config."""


def make_kl_controller(cfg: TrainConfig) -> KLController:
    """The controller `cfg.kl_control` names, starting at `cfg.beta`."""
    if cfg.kl_control not in KL_CONTROLLERS:
        valid = ", ".join(KL_CONTROLLERS)
        raise ValueError(f"unknown kl_control {cfg.kl_control!r}; valid: {valid}")
    if cfg.kl_horizon <= 0:
        raise ValueError(f"kl_horizon must be > 0 rollouts, got {cfg.kl_horizon}")
    return KL_CONTROLLERS[cfg.kl_control](cfg)
