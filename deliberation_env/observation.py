"""The observation layout: one table, used by the env, the docs, the policy and the tests.

A flat observation is ``[own | peer summary | peer_0 | ... | peer_{max_peers-1}]``. Its size
depends on ``max_peers`` only, never on the number of agents: absent peers are zeros with
``present = 0``. Peers are listed in cyclic order after the observing agent
(``agent_{i+1}, agent_{i+2}, ...``), so every agent sees its peers in the same relative order.
All features lie in [0, 1]. The policy never sees text, answers or correctness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (name, description). The order is the layout.
AGENT_FEATURES: tuple[tuple[str, str], ...] = (
    ("self_confidence", "verbalised confidence in [0, 1]"),
    ("judge_confidence", "a critic's estimate of correctness in [0, 1]"),
    ("logprob_confidence", "answer log-prob confidence; 0 where the backend has none"),
    ("has_logprob", "1 if the backend reports log-prob confidence"),
    ("steps", "reasoning steps / 20, clipped to 1"),
    ("operators", "operations / 40, clipped to 1"),
    ("parsed", "1 if the answer could be parsed"),
    ("changed", "1 if the answer changed in the last round"),
    ("last_persist", "last action was PERSIST (all three 0 in round 0)"),
    ("last_refine", "last action was REFINE"),
    ("last_concede", "last action was CONCEDE"),
)
"""Features every agent has; they appear in the own block and in each peer block."""

OWN_FEATURES: tuple[tuple[str, str], ...] = (
    ("support", "fraction of agents (me included) whose answer equals mine"),
    ("distinct", "number of distinct parsed answers / N"),
    ("in_plurality", "1 if my answer is the current team (plurality) answer"),
    ("round", "rounds played / max_rounds"),
    *AGENT_FEATURES,
)

SUMMARY_FEATURES: tuple[tuple[str, str], ...] = (
    ("peer_agree", "fraction of peers whose answer equals mine"),
    ("peer_self_confidence_mean", "mean verbalised confidence of peers"),
    ("peer_self_confidence_max", "max verbalised confidence of peers"),
    ("peer_judge_confidence_mean", "mean judge confidence of peers"),
    ("peer_judge_confidence_max", "max judge confidence of peers"),
    ("peer_changed", "fraction of peers whose answer changed last round"),
    ("peer_last_persist", "fraction of peers whose last action was PERSIST"),
    ("peer_last_refine", "fraction of peers whose last action was REFINE"),
    ("peer_last_concede", "fraction of peers whose last action was CONCEDE"),
    ("num_agents", "N / (max_peers + 1)"),
)

PEER_FEATURES: tuple[tuple[str, str], ...] = (
    ("present", "1 if this peer slot holds an agent"),
    ("agrees", "1 if this peer's answer equals mine"),
    ("in_plurality", "1 if this peer's answer is the current team answer"),
    *AGENT_FEATURES,
)

STEPS_SCALE = 20.0
OPERATORS_SCALE = 40.0


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

    @property
    def size(self) -> int:
        return self.peers.stop

    @property
    def state_size(self) -> int:
        """Size of the global state: an own block and a presence flag per agent slot."""
        return (self.max_peers + 1) * (len(OWN_FEATURES) + 1)

    def names(self) -> list[str]:
        """Name of every entry of the flat observation, in order."""
        names = [f"own.{n}" for n, _ in OWN_FEATURES] + [
            f"summary.{n}" for n, _ in SUMMARY_FEATURES
        ]
        for p in range(self.max_peers):
            names += [f"peer{p}.{n}" for n, _ in PEER_FEATURES]
        return names

    def index(self, name: str) -> int:
        """Position of a named entry, e.g. ``layout.index("own.support")``."""
        return self.names().index(name)


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
    return np.stack(
        [
            self_confidence,
            judge_confidence,
            np.where(has_lp, logprob_confidence, 0.0),
            has_lp,
            np.minimum(steps * (1.0 / STEPS_SCALE), 1.0),
            np.minimum(operators * (1.0 / OPERATORS_SCALE), 1.0),
            parsed,
            changed,
            last_action == 0,
            last_action == 1,
            last_action == 2,
        ],
        dtype=np.float32,
    )


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
        max_peers: peer slots in the layout.

    The result is a transposed view of a feature-major buffer: every feature is written
    contiguously (a C-order write would touch one cache line per value), and torch
    reads it without a copy (a transposed GEMM).
    """
    # Loops run over peer slots (a handful), never over the batch.
    F, B, N = feats.shape
    layout = ObservationLayout(max_peers)
    obs = np.empty((layout.size, B, N), dtype=np.float32)
    sizes = same[..., 0].astype(np.float32)
    for j in range(1, N):
        sizes += same[..., j]
    obs[0] = sizes * (1.0 / N)
    distinct = np.where(sizes > 0, 1.0 / np.maximum(sizes, 1.0), 0.0)
    obs[1] = (distinct.sum(-1) * (1.0 / N))[:, None]
    obs[2] = in_plurality
    obs[3] = round_frac[:, None]
    obs[4 : 4 + F] = feats

    s = layout.summary.start
    summary = obs[s : s + len(SUMMARY_FEATURES)]
    summary[:] = 0.0
    P = len(PEER_FEATURES)
    start = layout.peers.start
    rows = np.arange(N)
    for p in range(1, N):
        j = (rows + p) % N  # agent i's p-th peer
        peer = feats[:, :, j]
        agrees = same[:, rows, j]
        summary[0] += agrees
        summary[1] += peer[0]
        summary[3] += peer[1]
        summary[5:9] += peer[7:11]
        if p == 1:
            summary[2] = peer[0]
            summary[4] = peer[1]
        else:
            np.maximum(summary[2], peer[0], out=summary[2])
            np.maximum(summary[4], peer[1], out=summary[4])
        if p <= max_peers:
            o = start + (p - 1) * P
            obs[o] = 1.0
            obs[o + 1] = agrees
            obs[o + 2] = in_plurality[:, j]
            obs[o + 3 : o + P] = peer
    if N > 1:
        summary[[0, 1, 3, 5, 6, 7, 8]] *= 1.0 / (N - 1)
    summary[9] = N / (max_peers + 1)
    obs[start + min(N - 1, max_peers) * P :] = 0.0
    return obs.transpose(1, 2, 0)
