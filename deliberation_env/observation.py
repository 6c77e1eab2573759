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
        names = [f"own.{n}" for n, _ in OWN_FEATURES] + [f"summary.{n}" for n, _ in SUMMARY_FEATURES]
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
    """The `AGENT_FEATURES` block ``[B, N, 11]`` from per-agent arrays ``[B, N]``."""
    has_lp = ~np.isnan(logprob_confidence)
    out = np.empty((*self_confidence.shape, len(AGENT_FEATURES)), dtype=np.float32)
    out[..., 0] = self_confidence
    out[..., 1] = judge_confidence
    out[..., 2] = np.where(has_lp, logprob_confidence, 0.0)
    out[..., 3] = has_lp
    out[..., 4] = np.minimum(steps / STEPS_SCALE, 1.0)
    out[..., 5] = np.minimum(operators / OPERATORS_SCALE, 1.0)
    out[..., 6] = parsed
    out[..., 7] = changed
    for a in range(3):
        out[..., 8 + a] = last_action == a
    return out


def build_observations(
    feats: np.ndarray,
    same: np.ndarray,
    in_plurality: np.ndarray,
    round_frac: np.ndarray,
    max_peers: int,
) -> np.ndarray:
    """Flat observations ``[B, N, size]``.

    Args:
        feats: `agent_features` output ``[B, N, F]``.
        same: ``[B, N, N]`` bool, agents i and j hold the same parsed answer.
        in_plurality: ``[B, N]`` bool, agent holds the team answer.
        round_frac: ``[B]`` rounds played / max_rounds.
        max_peers: peer slots in the layout.
    """
    B, N, F = feats.shape
    layout = ObservationLayout(max_peers)
    obs = np.zeros((B, N, layout.size), dtype=np.float32)
    sizes = same.sum(-1)
    distinct = np.where(sizes > 0, 1.0 / np.maximum(sizes, 1), 0.0).sum(-1) / N
    o = 0
    obs[..., o] = sizes / N
    obs[..., o + 1] = distinct[:, None]
    obs[..., o + 2] = in_plurality
    obs[..., o + 3] = round_frac[:, None]
    obs[..., o + 4 : o + 4 + F] = feats
    if N > 1:
        order = peer_order(N)
        peer = feats[:, order]  # [B, N, N-1, F]
        agrees = np.take_along_axis(same, np.broadcast_to(order, (B, N, N - 1)), axis=2)
        s = layout.summary.start
        obs[..., s] = agrees.mean(-1)
        obs[..., s + 1] = peer[..., 0].mean(-1)
        obs[..., s + 2] = peer[..., 0].max(-1)
        obs[..., s + 3] = peer[..., 1].mean(-1)
        obs[..., s + 4] = peer[..., 1].max(-1)
        obs[..., s + 5 : s + 9] = peer[..., 7:11].mean(2)
        k = min(N - 1, max_peers)
        blocks = obs[..., layout.peers].reshape(B, N, max_peers, len(PEER_FEATURES))
        blocks[:, :, :k, 0] = 1.0
        blocks[:, :, :k, 1] = agrees[:, :, :k]
        blocks[:, :, :k, 2] = in_plurality[:, order[:, :k]]
        blocks[:, :, :k, 3:] = peer[:, :, :k]
        obs[..., layout.peers] = blocks.reshape(B, N, -1)
    obs[..., layout.summary.stop - 1] = N / (max_peers + 1)
    return obs
