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
- View options are not fields: ``obs_mode``/``render_mode``/``info_mode`` belong to `DeliberationEnv`,
  ``autoreset`` to `VectorDeliberationEnv`.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias, get_args

import numpy as np

from deliberation_env.protocol import Backend, BatchBackend
from deliberation_env.rewards import REWARDS, RewardMode
from deliberation_env.tasks.task import Task
from deliberation_env.topology import TopologySpec
from deliberation_env.topology import normalise as normalise_topology
from deliberation_env.voting import TIE_BREAKS, VOTES, TieBreak, Vote

DEFAULT_PROFILE = "llama3.1-8b/gsm8k"
"""The simulated backend's default profile: Llama-3.1-8B-Instruct on GSM8K (a paper backbone)."""

ConcedeRule = Literal["plurality", "most_confident", "most_verified"]
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
    ``"toy"``; a ``"@v0"`` suffix selects the earlier (Deliberation-v0) calibration;
    ``".../verifier"`` adds a trained verifier's score of every solution (the "verifier"
    observation group; ``".../self"``: the profile as is). Passed to
    backend factories with a ``profile`` parameter only; ignored by the others (``"hf"``,
    ``"openai"``) and by backend instances."""
    tasks: TaskSource = "arithmetic"
    """A `load_tasks` spec (``"arithmetic"``, ``"gsm8k:PATH"``, ...) or a sequence of
    `Task` (stored as a tuple)."""
    concede_rule: ConcedeRule = "plurality"
    """Whom CONCEDE copies: ``"plurality"`` (the answer most peers hold, its most confident
    holder; our reading of the paper), ``"most_confident"`` (the most confident peer) or
    ``"most_verified"`` (the peer with the highest verifier score; needs a backend with a
    verifier)."""
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
    topology: TopologySpec = "complete"
    """Who reads whom when an agent REFINEs (`deliberation_env.topology`, docs/topology.md):
    ``"complete"`` (everyone reads everyone, the paper's setting), ``"ring"``, ``"star"``,
    ``"chain"``, ``"none"``, or a 0/1 matrix ``[N, N]`` / ``[T, N, N]`` (per round) with
    ``edges[i, j] = 1`` when agent i reads agent j. Any value but ``"complete"`` adds each
    peer's ``visible`` flag to the observation (the "topology" group). CONCEDE still copies
    from every peer."""
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
                f"(got max_peers={self.max_peers}); pass max_peers={self.num_agents - 1} "
                f"(--max-peers {self.num_agents - 1} on the command line)"
            )
        for name, value, valid in (
            ("concede_rule", self.concede_rule, CONCEDE_RULES),
            ("tie_break", self.tie_break, TIE_BREAKS),
            ("reward", self.reward, REWARDS),
            ("vote", self.vote, VOTES),
        ):
            if value not in valid:
                raise ValueError(f"{name}={value!r} is not one of {valid}")
        for name in ("w_local", "w_global", "token_cost"):
            check_finite(name, getattr(self, name))
        if self.token_cost < 0:
            raise ValueError(f"token_cost must be >= 0, got {self.token_cost}")
        if not isinstance(self.stop_on_consensus, (bool, np.bool_)):
            raise ValueError(
                f"stop_on_consensus must be True or False, got {self.stop_on_consensus!r}"
            )
        topology = normalise_topology(self.topology, self.num_agents, self.max_rounds)
        object.__setattr__(self, "topology", topology)
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
            check_misspelled(source)
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


def check_misspelled(arguments: Mapping[str, Any]) -> None:
    """Refuse a key that is not an env field but close to one (``num_agnets``): every other
    key is a backend argument, and a typo would otherwise reach the backend factory and be
    refused there under the wrong name, or be taken by a factory with ``**kwargs``."""
    for key in arguments:
        if key in FIELD_NAMES or key in VIEW_OPTIONS or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, sorted(FIELD_NAMES | VIEW_OPTIONS), 1, 0.8)
        if close:
            raise ValueError(
                f"unknown argument {key!r}; did you mean {close[0]!r}? (env arguments are "
                f"{sorted(FIELD_NAMES)}; any other keyword is a backend argument)"
            )


VIEW_OPTIONS = frozenset({"obs_mode", "render_mode", "info_mode", "autoreset"})
"""Keywords of the env views, not `EnvConfig` fields (never taken for misspellings)."""

RESET_OPTIONS: dict[str, tuple[str, ...]] = {
    "DeliberationEnv": ("task_index", "topology"),
    "VectorDeliberationEnv": ("task_index", "group_size", "topology"),
}
"""The keys ``reset(options=...)`` takes, by env view."""


def check_reset_options(options: Any, view: str = "DeliberationEnv") -> dict[str, Any]:
    """``reset``'s `options` as a dict (None: empty).

    A key `view` does not take is never ignored silently: one close to a valid key
    (``task_idx``) is refused with that key as the fix; any other (PettingZoo's own
    ``api_test`` passes ``{"options": 1}`` to check that options are accepted) is ignored
    with a warning naming it and the valid keys."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"{view}.reset: options must be a dict or None, got {type(options).__name__}"
        )
    valid = RESET_OPTIONS[view]
    out = dict(options)
    for key in options:
        if key in valid:
            continue
        close = difflib.get_close_matches(str(key), valid, 1, 0.6)
        if close:
            raise ValueError(
                f"{view}.reset: unknown option {key!r}; did you mean {close[0]!r}? "
                f"(options are {list(valid)})"
            )
        warnings.warn(
            f"{view}.reset: ignoring unknown option {key!r} (options are {list(valid)})",
            UserWarning,
            stacklevel=3,
        )
        del out[key]
    return out


PROFILE_PROBABILITIES = (
    "accuracy", "unparsed_wrong", "fix_rate", "break_rate", "conformity", "solo_rate",
    "break_all_right", "break_mixed", "break_wrong_agree", "break_wrong_split",
    "conform_wrong", "conform_break", "redraw_wrong", "self_auroc", "self_mean",
    "judge_auroc", "logprob_auroc", "distractor_decay",
)  # fmt: skip
"""Simulator profile parameters that are probabilities (or AUROCs): each in [0, 1]."""
PROFILE_POSITIVE = ("concentration", "token_sigma", "steps", "operators_per_step",
                    "wrong_length_factor")  # fmt: skip
"""Simulator profile parameters that must be > 0."""
PROFILE_NON_NEGATIVE = ("completion_tokens", "question_tokens", "solve_instruction_tokens",
                        "refine_instruction_tokens", "concede_tokens")  # fmt: skip
"""Simulator profile parameters that must be >= 0 (token counts)."""


def check_profile(profile: Any) -> None:
    """Refuse a simulator profile (`agents.profiles.SimProfile`, read by attribute) whose
    parameters are out of range (``accuracy=1.5``, a NaN, a negative token count), naming
    the profile and the parameter. Parameters a profile lacks are skipped."""
    name = getattr(profile, "name", "?")
    for attr, low, high, closed in (
        *((a, 0.0, 1.0, True) for a in PROFILE_PROBABILITIES),
        *((a, 0.0, math.inf, False) for a in PROFILE_POSITIVE),
        *((a, 0.0, math.inf, True) for a in PROFILE_NON_NEGATIVE),
    ):
        if not hasattr(profile, attr):
            continue
        value = getattr(profile, attr)
        for v in value if isinstance(value, (tuple, list)) else (value,):
            ok = isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
            ok = ok and math.isfinite(v) and (low <= v <= high if closed else low < v <= high)
            if not ok:
                bounds = (
                    f"in [{low:g}, {high:g}]"
                    if high < math.inf
                    else (f">= {low:g}" if closed else f"> {low:g}")
                )
                raise ValueError(f"profile {name!r}: {attr}={value!r} must be {bounds}")
    if hasattr(profile, "distractors"):
        check_int(f"profile {name!r}: distractors", profile.distractors, 1)


def check_finite(name: str, value: Any) -> None:
    """Refuse a `value` that is not a finite real number (NaN, inf, a string), by `name`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.number))
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


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
