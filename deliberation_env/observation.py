"""The observation layout: one table, used by the env, the docs, the policy and the tests.

A flat observation is ``[own | peer summary | peer_0 | ... | peer_{max_peers-1}]``. Its size
depends on ``max_peers`` only, never on the number of agents: absent peers are zeros with
``present = 0``. Peers are listed in cyclic order after the observing agent
(``agent_{i+1}, agent_{i+2}, ...``), so every agent sees its peers in the same relative order.
All features lie in [0, 1]. The policy never sees text, answers or correctness.

The tables below are the only place that orders features: `build_observations` writes
every entry by its name, and `deliberation_env.spec` prints them into the docs.

Optional feature groups. A feature may belong to a named group (``Feature(...,
group="verifier")``, the groups listed in `GROUPS`): it is in the layout only when its group
is enabled, ``ObservationLayout(max_peers, groups=frozenset({"verifier"}))``. The env
enables a group when its backend fills it (`backend_groups`: the backend's
``observation_groups`` attribute), so a default env keeps the layout without any group, entry
for entry. Within each table a group's features follow every ungrouped one, so `OWN`,
`SUMMARY` and `PEER` (the positions of the ungrouped features) hold in every layout, and a
group's own, summary and peer entries sit at the end of their blocks. Code that reads
observations takes the layout from the env (``env.layout``), never
``ObservationLayout(max_peers)`` alone. Adding a group: name it in `GROUPS`, append its
features (``group=NAME``) to the tables, fill its values in `agent_features` /
`build_observations`, and give the backends that provide it ``observation_groups``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

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
    group: str | None = None
    """The optional group (a `GROUPS` name) the entry belongs to: it is in the layout only
    when the group is enabled. None: always in the layout."""

    def __iter__(self) -> Iterator[str]:
        # ``for name, description in OWN_FEATURES`` keeps working (the tables were pairs).
        return iter((self.name, self.description))


GROUPS: dict[str, str] = {
    "verifier": "a verifier's score of every solution: enabled when the backend has a "
    "verifier (simulator profiles `.../verifier`, `HFBackend(verifier=...)`, "
    "`OpenAIBackend(verifier_model=...)`)",
    "topology": "whom the agent reads when it REFINEs: enabled when the env has a "
    'communication graph (`topology=` anything but "complete"; `deliberation_env.topology`)',
}
"""The optional feature groups and when the env enables each (see the module docstring)."""

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
    Feature(
        "verifier_score",
        "a verifier's estimate that the answer is correct; 0 where it scored none",
        group="verifier",
    ),
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
    Feature(
        "visible",
        "1 if I read this peer's solution when I REFINE this round (the graph's edge)",
        FLAG,
        group="topology",
    ),
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
    Feature(
        "peer_verifier_score_mean",
        "mean verifier score of peers",
        reduce="mean",
        of="verifier_score",
        group="verifier",
    ),
    Feature(
        "peer_verifier_score_max",
        "max verifier score of peers",
        reduce="max",
        of="verifier_score",
        group="verifier",
    ),
    Feature(
        "peer_visible",
        "fraction of peers I read when I REFINE this round",
        reduce="mean",
        of="visible",
        group="topology",
    ),
    Feature(
        "read_by",
        "fraction of peers that read my solution when they REFINE this round",
        group="topology",
    ),
)
"""Statistics over all peers (0 when there are none); `reduce`/`of` say how each is made."""


def _check_groups(table: str, features: tuple[Feature, ...]) -> None:
    """Grouped features come after every ungrouped one (so base positions never move)."""
    seen_group = False
    for f in features:
        if f.group is not None and f.group not in GROUPS:
            raise ValueError(f"{table}: feature {f.name!r} has unknown group {f.group!r}")
        if f.group is None and seen_group:
            raise ValueError(f"{table}: ungrouped feature {f.name!r} follows a grouped one")
        seen_group |= f.group is not None


for _table, _features in (
    ("AGENT_FEATURES", AGENT_FEATURES),
    ("OWN_FEATURES", OWN_FEATURES),
    ("SUMMARY_FEATURES", SUMMARY_FEATURES),
    ("PEER_FEATURES", PEER_FEATURES),
):
    _check_groups(_table, _features)


def active(features: tuple[Feature, ...], groups: frozenset[str]) -> tuple[Feature, ...]:
    """The entries of a table that are in a layout with `groups` enabled, in table order."""
    return tuple(f for f in features if f.group is None or f.group in groups)


def _positions(features: tuple[Feature, ...]) -> dict[str, int]:
    return {f.name: i for i, f in enumerate(features)}


OWN = _positions(active(OWN_FEATURES, frozenset()))
"""Position of each ungrouped own feature inside the own block (the same in every layout)."""
SUMMARY = _positions(active(SUMMARY_FEATURES, frozenset()))
"""Position of each ungrouped summary feature inside the summary block."""
PEER = _positions(active(PEER_FEATURES, frozenset()))
"""Position of each ungrouped peer feature inside a peer slot."""


def _rows(block: tuple[Feature, ...], names: list[str]) -> slice | list[int]:
    """Positions of `names` in `block`: a slice when they are contiguous (a faster write)."""
    pos = _positions(block)
    rows = [pos[n] for n in names]
    if rows and rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return rows


@dataclass(frozen=True)
class ObservationLayout:
    """Offsets of the blocks of a flat observation for a given `max_peers` and enabled
    optional `groups` (`GROUPS`; none by default: the layout of every env without them)."""

    max_peers: int
    groups: frozenset[str] = frozenset()
    """Enabled optional feature groups; take them from the env (``env.layout``)."""

    def __post_init__(self) -> None:
        groups = frozenset([self.groups] if isinstance(self.groups, str) else self.groups)
        unknown = sorted(groups - GROUPS.keys())
        if unknown:
            raise ValueError(
                f"unknown observation group(s) {unknown}; valid groups: {sorted(GROUPS)}"
            )
        object.__setattr__(self, "groups", groups)

    @functools.cached_property
    def own_features(self) -> tuple[Feature, ...]:
        """The own block's entries in this layout."""
        return active(OWN_FEATURES, self.groups)

    @functools.cached_property
    def summary_features(self) -> tuple[Feature, ...]:
        return active(SUMMARY_FEATURES, self.groups)

    @functools.cached_property
    def peer_features(self) -> tuple[Feature, ...]:
        """One peer slot's entries in this layout."""
        return active(PEER_FEATURES, self.groups)

    @functools.cached_property
    def agent_features(self) -> tuple[Feature, ...]:
        """The `AGENT_FEATURES` in this layout (the rows `agent_features` returns)."""
        return active(AGENT_FEATURES, self.groups)

    @property
    def own(self) -> slice:
        return slice(0, len(self.own_features))

    @property
    def summary(self) -> slice:
        start = len(self.own_features)
        return slice(start, start + len(self.summary_features))

    @property
    def peer_size(self) -> int:
        """Entries of one peer slot."""
        return len(self.peer_features)

    @property
    def peers(self) -> slice:
        """Flat slice of all peer blocks; reshape to ``[max_peers, peer_size]``."""
        start = self.summary.stop
        return slice(start, start + self.max_peers * self.peer_size)

    def peer(self, p: int) -> slice:
        """Flat slice of peer slot `p` (0-based)."""
        if not 0 <= p < self.max_peers:
            raise IndexError(f"peer slot {p} is out of range 0..{self.max_peers - 1}")
        start = self.peers.start + p * self.peer_size
        return slice(start, start + self.peer_size)

    @property
    def size(self) -> int:
        return self.peers.stop

    @property
    def state_size(self) -> int:
        """Size of the global state: an own block and a presence flag per agent slot."""
        return (self.max_peers + 1) * (len(self.own_features) + 1)

    def names(self) -> list[str]:
        """Name of every entry of the flat observation, in order."""
        return list(self._positions)

    def features(self) -> list[tuple[str, Feature]]:
        """``(name, Feature)`` of every entry of the flat observation, in order."""
        rows = [(f"own.{f.name}", f) for f in self.own_features]
        rows += [(f"summary.{f.name}", f) for f in self.summary_features]
        for p in range(self.max_peers):
            rows += [(f"peer{p}.{f.name}", f) for f in self.peer_features]
        return rows

    def index(self, name: str) -> int:
        """Position of a named entry, e.g. ``layout.index("own.support")``."""
        try:
            return self._positions[name]
        except KeyError:
            feature = name.rpartition(".")[2]
            groups = sorted(
                {
                    f.group
                    for f in (*OWN_FEATURES, *SUMMARY_FEATURES, *PEER_FEATURES)
                    if f.name == feature and f.group is not None
                }
            )
            if groups:
                raise ValueError(
                    f"{name!r} belongs to the optional observation group(s) {groups}, which "
                    f"this layout does not enable (groups={sorted(self.groups)}); the env "
                    f"enables a group when its backend fills it: {GROUPS}"
                ) from None
            raise ValueError(
                f"{name!r} is not an observation entry; names are 'own.X', 'summary.X' "
                f"or 'peer<p>.X' (see ObservationLayout({self.max_peers}).names())"
            ) from None

    @classmethod
    def infer(cls, size: int) -> ObservationLayout:
        """The layout whose flat size is `size` (its `max_peers` and groups), for callers
        handed bare observations; an ambiguous size raises (pass the env's layout)."""
        found = []
        for k in range(len(GROUPS) + 1):
            for groups in itertools.combinations(sorted(GROUPS), k):
                base = cls(0, frozenset(groups))
                extra = size - base.size
                if extra >= 0 and extra % base.peer_size == 0:
                    found.append(cls(extra // base.peer_size, frozenset(groups)))
        if len(found) != 1:
            fits = [(x.max_peers, sorted(x.groups)) for x in found]
            raise ValueError(
                f"observation size {size} fits {len(found)} deliberation layouts "
                f"(max_peers, groups) {fits}; pass the env's flat observations with its "
                "layout (env.layout)"
            )
        return found[0]

    @functools.cached_property
    def _positions(self) -> dict[str, int]:
        return {name: i for i, (name, _) in enumerate(self.features())}

    @functools.cached_property
    def _writes(self) -> dict[str, Any]:
        """Where `build_observations` writes, all read off the tables."""
        agent = [f.name for f in self.agent_features]
        out: dict[str, Any] = {
            "own_agent": _rows(self.own_features, agent),
            "peer_agent": _rows(self.peer_features, agent),
        }
        summary, peer = _positions(self.summary_features), _positions(self.peer_features)
        for kind in ("mean", "max"):
            pairs = [
                (summary[f.name], peer[f.of])
                for f in self.summary_features
                if f.reduce == kind and f.of
            ]
            # Index arrays, built once: a list index is converted on every use.
            out[kind] = tuple(np.array([pair[k] for pair in pairs], np.intp) for k in (0, 1))
        out["visible"] = peer.get("visible", -1)
        out["read_by"] = summary.get("read_by", -1)
        return out


@functools.lru_cache(maxsize=64)
def layout_of(max_peers: int, groups: frozenset[str] = frozenset()) -> ObservationLayout:
    """A shared `ObservationLayout` (its derived tables are built once)."""
    return ObservationLayout(max_peers, groups)


def backend_groups(backend: object) -> frozenset[str]:
    """The optional groups a backend fills: its ``observation_groups`` attribute (an
    iterable of `GROUPS` names; none when it has no such attribute)."""
    return frozenset(getattr(backend, "observation_groups", ()) or ())


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
    verifier_score: np.ndarray | None = None,
    groups: Iterable[str] = frozenset(),
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The `AGENT_FEATURES` rows of a layout with `groups` ``[F, B, N]`` (feature-major)
    from arrays ``[B, N]``; `verifier_score` (NaN where none) is read when the
    ``"verifier"`` group is enabled. `out` (float32 ``[F, B, N]``, e.g. the own rows of an
    observation buffer: `own_feature_rows`) receives them instead of a new array."""
    layout = layout_of(0, frozenset(groups))
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
    if "verifier" in layout.groups:
        if verifier_score is None:
            raise ValueError("the 'verifier' observation group needs verifier_score arrays")
        values["verifier_score"] = np.nan_to_num(verifier_score, nan=0.0)
    if out is None:
        return np.stack([values[f.name] for f in layout.agent_features], dtype=np.float32)
    for k, f in enumerate(layout.agent_features):
        out[k] = values[f.name]
    return out


def new_observations(layout: ObservationLayout, B: int, N: int) -> np.ndarray:
    """An uninitialised feature-major buffer ``[size, B, N]`` for `build_observations`."""
    return np.empty((layout.size, B, N), dtype=np.float32)


def own_feature_rows(layout: ObservationLayout, obs: np.ndarray) -> np.ndarray:
    """The rows of a `new_observations` buffer that hold the observing agent's
    `AGENT_FEATURES` (``[F, B, N]``, a view): `agent_features(..., out=)` writes them there
    and `build_observations(..., out=obs)` then skips the copy."""
    return obs[layout.own][layout._writes["own_agent"]]


def _cyclic(out: np.ndarray, x: np.ndarray, p: int) -> None:
    """``out[..., i] = x[..., (i + p) % N]`` (agent i's p-th peer) as two slice copies: a
    gather with an index array on the last axis costs several times more."""
    N = x.shape[-1]
    out[..., : N - p] = x[..., p:]
    out[..., N - p :] = x[..., :p]


@functools.lru_cache(maxsize=16)
def _agents(N: int) -> np.ndarray:
    """``arange(N)``, built once (read-only)."""
    rows = np.arange(N)
    rows.flags.writeable = False
    return rows


@functools.lru_cache(maxsize=16)
def _peer_columns(N: int) -> tuple[np.ndarray, ...]:
    """Entry p (1 <= p < N): ``(arange(N) + p) % N``, every agent's p-th peer (read-only)."""
    columns = tuple((_agents(N) + p) % N for p in range(N))
    for c in columns:
        c.flags.writeable = False
    return columns


_TAKE_FROM = 16
"""From this many envs on `_peer_copy` gathers with `np.take` (a flat index per slot, built
once per shape); below, two slice copies cost less."""


@functools.lru_cache(maxsize=32)
def _peer_index(B: int, N: int, p: int) -> np.ndarray:
    """Flat indices into ``[B, N]``: entry ``b * N + i`` is ``b * N + (i + p) % N``."""
    index = (np.arange(B)[:, None] * N + (np.arange(N) + p) % N).ravel()
    index.flags.writeable = False
    return index


def _peer_copy(out: np.ndarray, feats: np.ndarray, p: int) -> None:
    """``out[f, b, i] = feats[f, b, (i + p) % N]``: every agent's p-th peer's features."""
    F, B, N = feats.shape
    if B < _TAKE_FROM or not (out.flags.c_contiguous and feats.flags.c_contiguous):
        _cyclic(out, feats, p)
        return
    flat = out.reshape(F, B * N)  # a view: `out` is contiguous
    np.take(feats.reshape(F, B * N), _peer_index(B, N, p), axis=1, out=flat, mode="clip")


def build_observations(
    feats: np.ndarray,
    same: np.ndarray,
    in_plurality: np.ndarray,
    round_frac: np.ndarray,
    max_peers: int,
    groups: Iterable[str] = frozenset(),
    visible: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Flat observations ``[B, N, size]`` of ``ObservationLayout(max_peers, groups)``.

    Args:
        feats: `agent_features` output (with the same `groups`), feature-major ``[F, B, N]``.
        same: ``[B, N, N]`` bool, agents i and j hold the same parsed answer.
        in_plurality: ``[B, N]`` bool, agent holds the team answer.
        round_frac: ``[B]`` rounds played / max_rounds.
        max_peers: peer slots in the layout (at least N - 1).
        groups: the enabled optional feature groups (`GROUPS`).
        visible: ``[B, N, N]`` bool, agent i reads agent j in the next REFINE (the round's
            communication graph); read when the ``"topology"`` group is enabled.
        out: a `new_observations` buffer to fill (allocated when None); when `feats` is its
            `own_feature_rows` (written in place by `agent_features`) they are not copied.

    The result is a transposed view of a feature-major buffer: every feature is written
    contiguously (a C-order write would touch one cache line per value), and torch
    reads it without a copy (a transposed GEMM).
    """
    _, B, N = feats.shape
    if N - 1 > max_peers:
        raise ValueError(f"{N} agents need max_peers >= {N - 1}, got max_peers={max_peers}")
    layout = layout_of(max_peers, frozenset(groups))
    if feats.shape[0] != len(layout.agent_features):
        raise ValueError(
            f"feats has {feats.shape[0]} agent features, the layout with groups "
            f"{sorted(layout.groups)} has {len(layout.agent_features)}: build them with "
            "agent_features(..., groups=) of the same groups"
        )
    writes = layout._writes
    topology = "topology" in layout.groups
    if topology and visible is None:
        raise ValueError("the 'topology' observation group needs the visible [B, N, N] graph")
    obs = new_observations(layout, B, N) if out is None else out

    own = obs[layout.own]
    sizes = same[..., 0].astype(np.float32)  # holders of my answer, me included
    for j in range(1, N):
        sizes += same[..., j]
    own[OWN["support"]] = sizes * (1.0 / N)
    distinct = np.where(sizes > 0, 1.0 / np.maximum(sizes, 1.0), 0.0)
    own[OWN["distinct"]] = (distinct.sum(-1) * (1.0 / N))[:, None]
    own[OWN["in_plurality"]] = in_plurality
    own[OWN["round"]] = round_frac[:, None]
    if out is None or not np.may_share_memory(feats, out):
        own[writes["own_agent"]] = feats

    # Loops run over peer slots (a handful), never over the batch.
    slots = obs[layout.peers].reshape(max_peers, layout.peer_size, B, N)
    rows = _agents(N)
    visible_row = writes["visible"]
    for p in range(1, N):
        peer_of = _peer_columns(N)[p]  # agent i's p-th peer
        slot = slots[p - 1]
        slot[PEER["present"]] = 1.0
        slot[PEER["agrees"]] = same[:, rows, peer_of]
        _cyclic(slot[PEER["in_plurality"]], in_plurality, p)
        _peer_copy(slot[writes["peer_agent"]], feats, p)
        if topology:
            slot[visible_row] = visible[:, rows, peer_of]  # type: ignore[index]
    slots[N - 1 :] = 0.0

    # The summary reduces the slots just written (every peer has one, as N <= max_peers + 1).
    summary = obs[layout.summary]
    summary[:] = 0.0
    if N > 1:
        peers = slots[: N - 1]
        mean_rows, mean_of = writes["mean"]
        max_rows, max_of = writes["max"]
        summary[mean_rows] = peers[:, mean_of].sum(0) * (1.0 / (N - 1))
        summary[max_rows] = peers[:, max_of].max(0)
        if topology:  # column sums: who reads me (the diagonal is True, so less one)
            read_by = visible.sum(1, dtype=np.float32) - 1.0  # type: ignore[union-attr]
            summary[writes["read_by"]] = read_by * (1.0 / (N - 1))
    summary[SUMMARY["num_agents"]] = N / (max_peers + 1)
    return obs.transpose(1, 2, 0)
