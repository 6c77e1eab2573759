"""`EnvConfig`: the one typed description of a deliberation env, its validation, and
`EnvConfig.build`, the one path from keyword arguments (``parallel_env(**kw)``,
``VectorDeliberationEnv(B, **kw)``) to a config.

Rules it fixes, once:

- Env arguments are `EnvConfig` fields; any other keyword is a backend argument and lands
  in `backend_kwargs` (``model=``, ``base_url=``, ``cache=``). A misspelled field therefore
  reaches the backend factory, which refuses it by name when the env builds the backend
  (`deliberation_env.backends.make_backend`).
- `profile` is a field (the simulator's main knob), never a backend argument: the env
  passes it to a backend factory that has a ``profile`` parameter and to no other.
- View options are not fields: ``obs_mode``/``render_mode`` belong to `DeliberationEnv`,
  ``autoreset`` to `VectorDeliberationEnv`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias, get_args

import numpy as np

from deliberation_env.protocol import Backend, BatchBackend
from deliberation_env.rewards import REWARDS, RewardMode
from deliberation_env.tasks.task import Task
from deliberation_env.voting import TIE_BREAKS, VOTES, TieBreak, Vote

DEFAULT_PROFILE = "llama3.1-8b/gsm8k"
"""The simulated backend's default profile: Llama-3.1-8B-Instruct on GSM8K (a paper backbone)."""

ConcedeRule = Literal["plurality", "most_confident"]
"""Whom CONCEDE copies (`EnvConfig.concede_rule`)."""
CONCEDE_RULES: tuple[ConcedeRule, ...] = get_args(ConcedeRule)

BackendSpec: TypeAlias = str | BatchBackend | Backend
"""A registered backend name, an array-level `BatchBackend` or a text `Backend` instance."""

TaskSource: TypeAlias = str | Sequence[Task]
"""A `deliberation_env.tasks.load_tasks` spec or the tasks themselves."""


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines a deliberation env; picklable, so envs can be copied.

    Build one from keyword arguments with `EnvConfig.build` (which sorts backend
    arguments into `backend_kwargs`); the env views take one as ``config=``.
    """

    num_agents: int = 3
    """N, agents answering each question (paper: 3). At most ``max_peers + 1``."""
    max_rounds: int = 3
    """T, deliberation rounds after the initial answers (paper: 3)."""
    backend: BackendSpec = "simulated"
    """A registered backend name (``"simulated"``, ``"hf"``, ``"openai"``), a text `Backend`
    instance or a `BatchBackend` instance."""
    profile: str = DEFAULT_PROFILE
    """Simulated backend profile, ``"backbone/benchmark"`` (e.g. ``"qwen2.5-7b/math"``) or
    ``"toy"``; a ``"@v0"`` suffix selects the earlier (Deliberation-v0) calibration. Passed to
    backend factories with a ``profile`` parameter only; ignored by the others (``"hf"``,
    ``"openai"``) and by backend instances."""
    tasks: TaskSource = "arithmetic"
    """A `load_tasks` spec (``"arithmetic"``, ``"gsm8k:PATH"``, ...) or a sequence of
    `Task` (stored as a tuple)."""
    concede_rule: ConcedeRule = "plurality"
    """Whom CONCEDE copies: ``"plurality"`` (the answer most peers hold, its most confident
    holder; our reading of the paper) or ``"most_confident"`` (the most confident peer)."""
    tie_break: TieBreak = "confidence"
    """Plurality ties: ``"confidence"`` (highest summed verbalised confidence of the
    holders), ``"first"`` (the lowest-indexed holder's answer) or ``"random"``."""
    vote: Vote = "plurality"
    """Team answer: ``"plurality"`` (most holders, the paper's) or ``"weighted"`` (highest
    summed verbalised confidence, as RECONCILE; holders count breaks ties)."""
    reward: RewardMode = "consensus"
    """``"consensus"`` (per-round shaping, the paper's) or ``"terminal"`` (team correctness,
    0 or 1, at the last step, 0 before)."""
    w_local: float = 1.0
    """Weight of the agent's own change in correctness, in reward per change (-1, 0 or +1)
    (consensus reward only)."""
    w_global: float = 1.0
    """Weight of the agent's marginal contribution to the team vote, in reward per change
    (-1, 0 or +1) (consensus reward only)."""
    token_cost: float = 0.0
    """Reward subtracted per 1,000 tokens (prompt + completion) an agent spends in a round;
    >= 0, 0 turns it off."""
    stop_on_consensus: bool = False
    """End the episode as soon as every agent holds the same parsed answer after a round
    (never at reset)."""
    max_peers: int = 4
    """Peer slots in the observation; fixes its size whatever N is (N <= max_peers + 1)."""
    backend_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Arguments for the backend factory (``model``, ``base_url``, ``cache``, ...); never
    an `EnvConfig` field (``profile`` included). Empty with a backend instance."""

    def __post_init__(self) -> None:
        check_int("num_agents", self.num_agents, 1)
        check_int("max_rounds", self.max_rounds, 1)
        check_int("max_peers", self.max_peers, 0)
        if self.num_agents > self.max_peers + 1:
            raise ValueError(
                f"num_agents={self.num_agents} needs max_peers >= {self.num_agents - 1} "
                f"(got max_peers={self.max_peers}); pass max_peers={self.num_agents - 1}"
            )
        for name, value, valid in (
            ("concede_rule", self.concede_rule, CONCEDE_RULES),
            ("tie_break", self.tie_break, TIE_BREAKS),
            ("reward", self.reward, REWARDS),
            ("vote", self.vote, VOTES),
        ):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is not one of {valid}")
        if self.token_cost < 0:
            raise ValueError(f"token_cost must be >= 0, got {self.token_cost}")
        # Frozen, so normalise through object.__setattr__: tuples pickle and compare by value,
        # and a private dict copy keeps the caller's later edits out of the config.
        if not isinstance(self.tasks, str):
            object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "backend_kwargs", _backend_kwargs(self.backend_kwargs))

    @classmethod
    def build(
        cls, config: EnvConfig | Mapping[str, Any] | None = None, /, **overrides: Any
    ) -> EnvConfig:
        """The config of ``config`` (an `EnvConfig`, a mapping, or the defaults) with
        `overrides` applied.

        Keys naming a field set it; ``backend_kwargs=`` and every other key are backend
        arguments, merged over the config's `backend_kwargs`. So
        ``EnvConfig.build(num_agents=5, model="x")`` equals
        ``EnvConfig(num_agents=5, backend_kwargs={"model": "x"})``.
        """
        if config is None:
            base: Mapping[str, Any] = {}
        elif isinstance(config, EnvConfig):
            if not overrides:
                return config
            base = {name: getattr(config, name) for name in FIELD_NAMES}
        elif isinstance(config, Mapping):
            base = config
        else:
            raise TypeError(
                f"config must be an EnvConfig, a mapping of its fields or None, got "
                f"{type(config).__name__}; pass other arguments by keyword"
            )
        values: dict[str, Any] = {}
        backend_kwargs: dict[str, Any] = {}
        for source in (base, overrides):
            for key, value in source.items():
                if key == "backend_kwargs":
                    backend_kwargs.update(value)
                elif key in FIELD_NAMES:
                    values[key] = value
                else:
                    backend_kwargs[key] = value
        return cls(**values, backend_kwargs=backend_kwargs)


FIELD_NAMES = frozenset(f.name for f in fields(EnvConfig))
"""The names of `EnvConfig`'s fields."""


def _backend_kwargs(kwargs: Any) -> dict[str, Any]:
    if not isinstance(kwargs, Mapping):
        raise ValueError(
            f"backend_kwargs must be a mapping of backend arguments, got {type(kwargs).__name__}"
        )
    repeated = sorted(k for k in kwargs if k in FIELD_NAMES)
    if repeated:
        given = ", ".join(f"{k}={kwargs[k]!r}" for k in repeated)
        raise ValueError(
            f"backend_kwargs holds env arguments {repeated}: pass them as EnvConfig fields "
            f"({given}), not as backend arguments; the env hands `profile` to backends "
            "that take one"
        )
    return dict(kwargs)


def check_int(name: str, value: Any, minimum: int) -> None:
    """Refuse a `value` that is not an integer >= `minimum` (bools included), by `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_seed(seed: Any) -> int:
    """A seed as an int in [0, 2**64), or a ValueError that says so."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be a non-negative integer (or None), got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return int(seed)
