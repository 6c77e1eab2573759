"""Baseline deliberation protocols as fixed meta-policies, run by the same harness as the
learned ones (`algorithms.evaluate`).

Each protocol implements `algorithms.policy.Policy`: ``act(obs [B, N, D], action_mask
[B, N, 3]) -> int64 [B, N]``, reading the observation by feature name
(`deliberation_env.observation`). ``env_overrides`` holds the `EnvConfig` fields a
protocol needs (one agent, a weighted vote, ...). A protocol never plays an action its
mask forbids: it falls back to PERSIST. Build one by name with ``make_protocol(name)``;
add one with ``register_protocol(name, factory)``. A protocol that reads an optional
observation group (``verifier_threshold`` reads ``"verifier"``) says so in ``requires``;
`applicable_protocols(env)` lists the protocols an env can run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from algorithms.policy import Policy
from deliberation_env.actions import Action
from deliberation_env.config import EnvConfig
from deliberation_env.core import layout_for
from deliberation_env.counterfactual import best_joint_actions
from deliberation_env.observation import ObservationLayout
from deliberation_env.vector import VectorDeliberationEnv

PERSIST, REFINE, CONCEDE = (int(a) for a in Action)


class Features:
    """Named views of a batch of flat observations: ``Features(obs)["own.support"]``
    is ``[B, N]``. `layout` is the env's (``env.layout``); without it (or when it does not
    fit) the layout is read off the observation size (`ObservationLayout.infer`)."""

    def __init__(self, obs: np.ndarray, layout: ObservationLayout | None = None) -> None:
        self.obs = np.asarray(obs)
        size = self.obs.shape[-1]
        if layout is None or layout.size != size:
            layout = ObservationLayout.infer(size)
        self.layout = layout

    def __getitem__(self, name: str) -> np.ndarray:
        return self.obs[..., self.layout.index(name)]

    def first_round(self) -> np.ndarray:
        """``[B, N]`` bool: no action played yet (round 0)."""
        return self["own.round"] == 0


class Heuristic:
    """A fixed protocol: `rule` maps observation features to actions; `act` applies the
    action mask (a forbidden choice becomes PERSIST)."""

    name: str = "heuristic"
    env_overrides: Mapping[str, Any] = {}
    requires: frozenset[str] = frozenset()
    """Optional observation groups the rule reads (`deliberation_env.observation.GROUPS`)."""
    layout: ObservationLayout | None = None
    """The layout of the env it acts in, set by `bind` (else read off the observations)."""

    def bind(self, env: VectorDeliberationEnv) -> None:
        """Read observations with `env`'s layout (the evaluation harness calls it)."""
        self.layout = env.layout

    def rule(self, f: Features) -> np.ndarray:
        raise NotImplementedError

    def act(
        self, obs: np.ndarray, action_mask: np.ndarray, deterministic: bool = False
    ) -> np.ndarray:
        f = Features(obs, self.layout)
        actions = np.broadcast_to(np.asarray(self.rule(f), np.int64), f.obs.shape[:-1])
        return _masked(actions, action_mask)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _masked(actions: np.ndarray, action_mask: np.ndarray) -> np.ndarray:
    allowed = np.take_along_axis(np.asarray(action_mask), actions[..., None], -1)[..., 0] > 0
    return np.where(allowed, actions, PERSIST).astype(np.int64)


class Constant(Heuristic):
    """Every agent plays `action` every round."""

    action: int = PERSIST

    def rule(self, f: Features) -> np.ndarray:
        return np.full(f.obs.shape[:-1], self.action, np.int64)


class Single(Constant):
    """One agent answers once; no deliberation (the single-model chain-of-thought baseline,
    Wei et al. 2022, arXiv 2201.11903)."""

    name = "single"
    env_overrides = {"num_agents": 1}


class SelfConsistency(Constant):
    """N independent answers and their plurality vote, no revision (self-consistency,
    Wang et al. 2022, arXiv 2203.11171)."""

    name = "self_consistency"


class AlwaysPersist(Constant):
    """Everyone keeps their initial answer (the all-PERSIST corner of MPDF's action space,
    Yang & Thomason, arXiv 2509.03817)."""

    name = "always_persist"


class Debate(Constant):
    """Everyone revises, seeing its peers, every round (LLM-Debate, Du et al. 2023,
    arXiv 2305.14325)."""

    name = "debate"
    action = REFINE


class Reconcile(Constant):
    """Everyone revises every round; the team answer is the confidence-weighted vote
    (RECONCILE, Chen et al. 2023, arXiv 2309.13007)."""

    name = "reconcile"
    action = REFINE
    env_overrides = {"vote": "weighted"}


class ConcedeToPlurality(Heuristic):
    """CONCEDE when my answer is not the team's plurality answer, else PERSIST (a conformity
    protocol: majority pressure, as studied in multi-agent debate by Zhang et al. 2023,
    "Exploring Collaboration Mechanisms for LLM Agents", arXiv 2310.02124)."""

    name = "concede_to_plurality"

    def rule(self, f: Features) -> np.ndarray:
        return np.where(f["own.in_plurality"] > 0, PERSIST, CONCEDE)


class ConfidenceThreshold(Heuristic):
    """PERSIST if my verbalised confidence is at least `threshold`; else CONCEDE to the most
    confident peer if one is more confident than me; else REFINE (confidence-gated
    deliberation, cf. Xiong et al. 2023 on verbalised confidence, arXiv 2306.13063, and
    RECONCILE's confidence estimates, arXiv 2309.13007).

    CONCEDE copies whomever the env's `concede_rule` picks, so the protocol sets
    ``concede_rule="most_confident"`` (pass ``concede_rule=None`` to keep the env's).
    """

    name = "confidence_threshold"

    def __init__(self, threshold: float = 0.9, concede_rule: str | None = "most_confident"):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold={threshold} must lie in [0, 1] (a confidence)")
        self.threshold = float(threshold)
        self.env_overrides = {} if concede_rule is None else {"concede_rule": concede_rule}

    def rule(self, f: Features) -> np.ndarray:
        own = f["own.self_confidence"]
        peer_max = f["summary.peer_self_confidence_max"]
        fallback = np.where(peer_max > own, CONCEDE, REFINE)
        return np.where(own >= np.float32(self.threshold), PERSIST, fallback)


class VerifierThreshold(Heuristic):
    """PERSIST if a verifier scores my answer at least `threshold`; else CONCEDE to the
    best-scored peer if one scores higher than me; else REFINE. Verifier-guided
    deliberation: the selection rule of Best-of-N with a trained verifier (Cobbe et al.
    2021, arXiv 2110.14168; generative verifiers, Zhang et al. 2024, arXiv 2408.15240)
    applied to keep, copy or revise.

    Needs an env whose backend has a verifier (the ``"verifier"`` observation group: a
    ``.../verifier`` simulator profile, ``HFBackend(verifier=...)``,
    ``OpenAIBackend(verifier_model=...)``); elsewhere it raises. CONCEDE copies the
    best-scored peer: the protocol sets ``concede_rule="most_verified"`` (pass
    ``concede_rule=None`` to keep the env's).
    """

    name = "verifier_threshold"
    requires = frozenset({"verifier"})

    def __init__(self, threshold: float = 0.85, concede_rule: str | None = "most_verified"):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold={threshold} must lie in [0, 1] (a verifier score)")
        self.threshold = float(threshold)
        self.env_overrides = {} if concede_rule is None else {"concede_rule": concede_rule}

    def rule(self, f: Features) -> np.ndarray:
        if "verifier" not in f.layout.groups:
            raise ValueError(
                "verifier_threshold needs an env with a verifier (observation group "
                "'verifier': a '.../verifier' simulator profile, HFBackend(verifier=...) or "
                "OpenAIBackend(verifier_model=...)); these observations have none, so there "
                "is no verifier score to read"
            )
        own = f["own.verifier_score"]
        peer_max = f["summary.peer_verifier_score_max"]
        fallback = np.where(peer_max > own, CONCEDE, REFINE)
        return np.where(own >= np.float32(self.threshold), PERSIST, fallback)


class ProgressiveHint(Heuristic):
    """REFINE until a revision leaves my answer unchanged, then PERSIST for good
    (Progressive-Hint Prompting, Zheng et al. 2023, arXiv 2304.09797: re-ask with the
    previous answers as hints until two consecutive answers agree)."""

    name = "progressive_hint"

    def rule(self, f: Features) -> np.ndarray:
        converged = (f["own.last_refine"] > 0) & (f["own.changed"] == 0)
        stopped = f["own.last_refine"] == 0  # persisted already (or conceded)
        done = ~f.first_round() & (converged | stopped)
        return np.where(done, PERSIST, REFINE)


class RefineMinority(Heuristic):
    """REFINE only when no peer shares my answer, else PERSIST: a sparse LLM-Debate (Du et
    al. 2023, arXiv 2305.14325) in which only outliers pay for a revision (the cost concern
    of sparse-topology debate, Li et al. 2024, arXiv 2406.11776)."""

    name = "refine_minority"

    def rule(self, f: Features) -> np.ndarray:
        return np.where(f["summary.peer_agree"] > 0, PERSIST, REFINE)


class RandomProtocol(Heuristic):
    """Uniform over the allowed actions (the chance baseline of MPDF's ablations).

    Seeded and reproducible: `bind(env)` restarts the stream from (`seed`, the env's
    episode keys), so evaluating twice with one seed gives the same actions and different
    evaluation seeds get different streams. Ignores `deterministic`.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def bind(self, env: VectorDeliberationEnv) -> None:
        keys = np.asarray(env.episode_keys, np.uint64)
        self.rng = np.random.default_rng([self.seed, int(keys[0]), len(keys)])

    def act(
        self, obs: np.ndarray, action_mask: np.ndarray, deterministic: bool = False
    ) -> np.ndarray:
        mask = np.asarray(action_mask) > 0
        u = self.rng.random(mask.shape)
        return np.argmax(np.where(mask, u, -1.0), axis=-1).astype(np.int64)


class Oracle(Heuristic):
    """Sees correctness: each round, the joint action that makes the team correct after the
    round, else the one leaving most agents correct, then the cheapest
    (`deliberation_env.counterfactual.best_joint_actions`). The reference ceiling of a
    meta-policy with this backend; reported, never trained on. It is a one-round lookahead
    (exact, but myopic over rounds), so it bounds other protocols in practice, not as a
    theorem. Needs ``bind(env)`` with the `VectorDeliberationEnv` it acts in (the
    evaluation harness calls it after reset).
    """

    name = "oracle"

    def __init__(self) -> None:
        self.env: VectorDeliberationEnv | None = None

    def bind(self, env: VectorDeliberationEnv) -> None:
        self.env = env

    def act(
        self, obs: np.ndarray, action_mask: np.ndarray, deterministic: bool = False
    ) -> np.ndarray:
        if self.env is None:
            raise RuntimeError("oracle: call bind(env) with the env it acts in before act()")
        # Envs whose episode ended (`env.active` False) stay frozen: all-PERSIST.
        return best_joint_actions(self.env, self.env.active)


PROTOCOLS: dict[str, Callable[..., Policy]] = {}
"""Registered protocol factories by name; `make_protocol` builds one."""
REQUIRES: dict[str, frozenset[str]] = {}
"""The optional observation groups each registered protocol needs (`applicable_protocols`)."""


def register_protocol(
    name: str, factory: Callable[..., Policy], requires: frozenset[str] | None = None
) -> None:
    """Make ``make_protocol(name, **kw)`` call ``factory(**kw)``. `requires`: the optional
    observation groups it reads (default: the factory's ``requires`` attribute, else none)."""
    if name in PROTOCOLS:
        raise ValueError(f"a protocol named {name!r} is already registered")
    PROTOCOLS[name] = factory
    REQUIRES[name] = frozenset(
        requires if requires is not None else getattr(factory, "requires", frozenset())
    )


def applicable_protocols(
    env: EnvConfig | ObservationLayout | VectorDeliberationEnv,
) -> list[str]:
    """The registered protocols an env can run, in registration order: those whose required
    observation groups its layout enables (`verifier_threshold` only with a verifier)."""
    if isinstance(env, EnvConfig):
        layout = layout_for(env)
    elif isinstance(env, ObservationLayout):
        layout = env
    else:
        layout = env.layout
    return [name for name in PROTOCOLS if REQUIRES.get(name, frozenset()) <= layout.groups]


def make_protocol(name: str, **kwargs: Any) -> Policy:
    """Build a registered protocol, e.g. ``make_protocol("confidence_threshold",
    threshold=0.8)``."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](**kwargs)


for _name, _factory in (
    ("single", Single),
    ("self_consistency", SelfConsistency),
    ("debate", Debate),
    ("always_persist", AlwaysPersist),
    ("concede_to_plurality", ConcedeToPlurality),
    ("confidence_threshold", ConfidenceThreshold),
    ("verifier_threshold", VerifierThreshold),
    ("reconcile", Reconcile),
    ("progressive_hint", ProgressiveHint),
    ("refine_minority", RefineMinority),
    ("random", RandomProtocol),
    ("oracle", Oracle),
):
    register_protocol(_name, _factory)
