"""The observation layout: one table, used by the env, the docs, the policy and the tests.

A flat observation is ``[own | peer summary | peer_0 | ... | peer_{max_peers-1}]``. Its size
depends on ``max_peers`` only, never on the number of agents: absent peers are zeros with
``present = 0``. Peers are listed in cyclic order after the observing agent
(``agent_{i+1}, agent_{i+2}, ...``), so every agent sees its peers in the same relative order.
All features lie in [0, 1]. The policy never sees text, answers or correctness.

The tables below are the only place that orders features: `build_observations` writes
every entry by its name, and `deliberation_env.spec` prints them into the docs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

UNIT = "[0, 1]"
FLAG = "{0, 1}"


@dataclass(frozen=True)
class Feature:
    """One entry of an observation block; unpacks as ``name, description``."""

    name: str
    description: str
    """What the entry means, as the spec tables print it."""
    values: str = UNIT
    """Its range for the docs: `UNIT` (continuous) or `FLAG` (0 or 1)."""
    reduce: Literal["mean", "max"] | None = None
    """Summary entries only: how the entry reduces a peer feature over all peers."""
    of: str | None = None
    """Summary entries only: the `PEER_FEATURES` name that `reduce` reads."""

    def __iter__(self) -> Iterator[str]:
        # ``for name, description in OWN_FEATURES`` keeps working (the tables were pairs).
        return iter((self.name, self.description))


STEPS_SCALE = 20.0
OPERATORS_SCALE = 40.0

# The order of each table is the layout.
AGENT_FEATURES: tuple[Feature, ...] = (
    Feature("self_confidence", "verbalised confidence"),
    Feature("judge_confidence", "a critic's estimate of correctness"),
    Feature("logprob_confidence", "answer log-prob confidence; 0 where the backend has none"),
    Feature("has_logprob", "1 if the backend reports log-prob confidence", FLAG),
    Feature("steps", f"reasoning steps / {STEPS_SCALE:g}, clipped to 1"),
    Feature("operators", f"operations / {OPERATORS_SCALE:g}, clipped to 1"),
    Feature("parsed", "1 if the answer could be parsed", FLAG),
    Feature("changed", "1 if the answer changed in the last round", FLAG),
    Feature("last_persist", "1 if the last action was PERSIST (all three 0 in round 0)", FLAG),
    Feature("last_refine", "1 if the last action was REFINE", FLAG),
    Feature("last_concede", "1 if the last action was CONCEDE", FLAG),
)
"""Features every agent has; they appear in the own block and in each peer block."""

OWN_FEATURES: tuple[Feature, ...] = (
    Feature("support", "fraction of agents (me included) whose answer equals mine"),
    Feature("distinct", "number of distinct parsed answers / N"),
    Feature("in_plurality", "1 if my answer is the current team (plurality) answer", FLAG),
    Feature("round", "rounds played / max_rounds"),
    *AGENT_FEATURES,
)
"""The observing agent's block."""

PEER_FEATURES: tuple[Feature, ...] = (
    Feature("present", "1 if this peer slot holds an agent", FLAG),
    Feature("agrees", "1 if this peer's answer equals mine", FLAG),
    Feature("in_plurality", "1 if this peer's answer is the current team answer", FLAG),
    *AGENT_FEATURES,
)
"""One peer slot (zeros when the slot is empty)."""

SUMMARY_FEATURES: tuple[Feature, ...] = (
    Feature("peer_agree", "fraction of peers whose answer equals mine", reduce="mean", of="agrees"),
    Feature(
        "peer_self_confidence_mean",
        "mean verbalised confidence of peers",
        reduce="mean",
        of="self_confidence",
    ),
    Feature(
        "peer_self_confidence_max",
        "max verbalised confidence of peers",
        reduce="max",
        of="self_confidence",
    ),
    Feature(
        "peer_judge_confidence_mean",
        "mean judge confidence of peers",
        reduce="mean",
        of="judge_confidence",
    ),
    Feature(
        "peer_judge_confidence_max",
        "max judge confidence of peers",
        reduce="max",
        of="judge_confidence",
    ),
    Feature(
        "peer_changed",
        "fraction of peers whose answer changed last round",
        reduce="mean",
        of="changed",
    ),
    Feature(
        "peer_last_persist",
        "fraction of peers whose last action was PERSIST",
        reduce="mean",
        of="last_persist",
    ),
    Feature(
        "peer_last_refine",
        "fraction of peers whose last action was REFINE",
        reduce="mean",
        of="last_refine",
    ),
    Feature(
        "peer_last_concede",
        "fraction of peers whose last action was CONCEDE",
        reduce="mean",
        of="last_concede",
    ),
    Feature("num_agents", "N / (max_peers + 1)"),
)
"""Statistics over all peers (0 when there are none); `reduce`/`of` say how each is made."""


def _positions(features: tuple[Feature, ...]) -> dict[str, int]:
    return {f.name: i for i, f in enumerate(features)}


OWN = _positions(OWN_FEATURES)
"""Position of each own feature inside the own block."""
SUMMARY = _positions(SUMMARY_FEATURES)
"""Position of each summary feature inside the summary block."""
PEER = _positions(PEER_FEATURES)
"""Position of each peer feature inside a peer slot."""

# Where `build_observations` writes, all read off the tables above.
_OWN_AGENT = slice(OWN[AGENT_FEATURES[0].name], OWN[AGENT_FEATURES[0].name] + len(AGENT_FEATURES))
_PEER_AGENT = slice(
    PEER[AGENT_FEATURES[0].name], PEER[AGENT_FEATURES[0].name] + len(AGENT_FEATURES)
)


def _reductions(kind: str) -> tuple[list[int], list[int]]:
    """(summary rows, peer-slot rows they reduce) of the summary entries made by `kind`."""
    pairs = [(SUMMARY[f.name], PEER[f.of]) for f in SUMMARY_FEATURES if f.reduce == kind and f.of]
    return [s for s, _ in pairs], [p for _, p in pairs]


_MEAN_ROWS, _MEAN_OF = _reductions("mean")
_MAX_ROWS, _MAX_OF = _reductions("max")


@dataclass(frozen=True)
class ObservationLayout:
    """Offsets of the blocks of a flat observation for a given `max_peers`."""

    max_peers: int

    @property
    def own(self) -> slice:
        return slice(0, len(OWN_FEATURES))

    @property
    def summary(self) -> slice:
        start = len(OWN_FEATURES)
        return slice(start, start + len(SUMMARY_FEATURES))

    @property
    def peers(self) -> slice:
        """Flat slice of all peer blocks; reshape to ``[max_peers, len(PEER_FEATURES)]``."""
        start = len(OWN_FEATURES) + len(SUMMARY_FEATURES)
        return slice(start, start + self.max_peers * len(PEER_FEATURES))

    def peer(self, p: int) -> slice:
        """Flat slice of peer slot `p` (0-based)."""
        if not 0 <= p < self.max_peers:
            raise IndexError(f"peer slot {p} is out of range 0..{self.max_peers - 1}")
        start = self.peers.start + p * len(PEER_FEATURES)
        return slice(start, start + len(PEER_FEATURES))

    @property
    def size(self) -> int:
        return self.peers.stop

    @property
    def state_size(self) -> int:
        """Size of the global state: an own block and a presence flag per agent slot."""
        return (self.max_peers + 1) * (len(OWN_FEATURES) + 1)

    def names(self) -> list[str]:
        """Name of every entry of the flat observation, in order."""
        return list(self._positions)

    def features(self) -> list[tuple[str, Feature]]:
        """``(name, Feature)`` of every entry of the flat observation, in order."""
        rows = [(f"own.{f.name}", f) for f in OWN_FEATURES]
        rows += [(f"summary.{f.name}", f) for f in SUMMARY_FEATURES]
        for p in range(self.max_peers):
            rows += [(f"peer{p}.{f.name}", f) for f in PEER_FEATURES]
        return rows

    def index(self, name: str) -> int:
        """Position of a named entry, e.g. ``layout.index("own.support")``."""
        try:
            return self._positions[name]
        except KeyError:
            raise ValueError(
                f"{name!r} is not an observation entry; names are 'own.X', 'summary.X' "
                f"or 'peer<p>.X' (see ObservationLayout({self.max_peers}).names())"
            ) from None

    @functools.cached_property
    def _positions(self) -> dict[str, int]:
        return {name: i for i, (name, _) in enumerate(self.features())}


def peer_order(num_agents: int) -> np.ndarray:
    """``[N, N-1]`` indices: row i lists agent i's peers in cyclic order after i."""
    i = np.arange(num_agents)[:, None]
    p = np.arange(1, num_agents)[None, :]
    return (i + p) % num_agents


def agent_features(
    self_confidence: np.ndarray,
    judge_confidence: np.ndarray,
    logprob_confidence: np.ndarray,
    steps: np.ndarray,
    operators: np.ndarray,
    parsed: np.ndarray,
    changed: np.ndarray,
    last_action: np.ndarray,
) -> np.ndarray:
    """The `AGENT_FEATURES` rows ``[F, B, N]`` (feature-major) from arrays ``[B, N]``."""
    has_lp = logprob_confidence == logprob_confidence  # not NaN
    values = {
        "self_confidence": self_confidence,
        "judge_confidence": judge_confidence,
        "logprob_confidence": np.where(has_lp, logprob_confidence, 0.0),
        "has_logprob": has_lp,
        "steps": np.minimum(steps * (1.0 / STEPS_SCALE), 1.0),
        "operators": np.minimum(operators * (1.0 / OPERATORS_SCALE), 1.0),
        "parsed": parsed,
        "changed": changed,
        "last_persist": last_action == 0,
        "last_refine": last_action == 1,
        "last_concede": last_action == 2,
    }
    return np.stack([values[f.name] for f in AGENT_FEATURES], dtype=np.float32)


def build_observations(
    feats: np.ndarray,
    same: np.ndarray,
    in_plurality: np.ndarray,
    round_frac: np.ndarray,
    max_peers: int,
) -> np.ndarray:
    """Flat observations ``[B, N, size]``.

    Args:
        feats: `agent_features` output, feature-major ``[F, B, N]``.
        same: ``[B, N, N]`` bool, agents i and j hold the same parsed answer.
        in_plurality: ``[B, N]`` bool, agent holds the team answer.
        round_frac: ``[B]`` rounds played / max_rounds.
        max_peers: peer slots in the layout (at least N - 1).

    The result is a transposed view of a feature-major buffer: every feature is written
    contiguously (a C-order write would touch one cache line per value), and torch
    reads it without a copy (a transposed GEMM).
    """
    _, B, N = feats.shape
    if N - 1 > max_peers:
        raise ValueError(f"{N} agents need max_peers >= {N - 1}, got max_peers={max_peers}")
    layout = ObservationLayout(max_peers)
    obs = np.empty((layout.size, B, N), dtype=np.float32)

    own = obs[layout.own]
    sizes = same[..., 0].astype(np.float32)  # holders of my answer, me included
    for j in range(1, N):
        sizes += same[..., j]
    own[OWN["support"]] = sizes * (1.0 / N)
    distinct = np.where(sizes > 0, 1.0 / np.maximum(sizes, 1.0), 0.0)
    own[OWN["distinct"]] = (distinct.sum(-1) * (1.0 / N))[:, None]
    own[OWN["in_plurality"]] = in_plurality
    own[OWN["round"]] = round_frac[:, None]
    own[_OWN_AGENT] = feats

    # Loops run over peer slots (a handful), never over the batch.
    slots = obs[layout.peers].reshape(max_peers, len(PEER_FEATURES), B, N)
    rows = np.arange(N)
    for p in range(1, N):
        j = (rows + p) % N  # agent i's p-th peer
        slot = slots[p - 1]
        slot[PEER["present"]] = 1.0
        slot[PEER["agrees"]] = same[:, rows, j]
        slot[PEER["in_plurality"]] = in_plurality[:, j]
        slot[_PEER_AGENT] = feats[:, :, j]
    slots[N - 1 :] = 0.0

    # The summary reduces the slots just written (every peer has one, as N <= max_peers + 1).
    summary = obs[layout.summary]
    summary[:] = 0.0
    if N > 1:
        peers = slots[: N - 1]
        summary[_MEAN_ROWS] = peers[:, _MEAN_OF].sum(0) * (1.0 / (N - 1))
        summary[_MAX_ROWS] = peers[:, _MAX_OF].max(0)
    summary[SUMMARY["num_agents"]] = N / (max_peers + 1)
    return obs.transpose(1, 2, 0)
