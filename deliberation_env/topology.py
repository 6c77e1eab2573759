"""Communication graphs: who reads whom when an agent REFINEs.

Convention: ``edges[i, j] = 1`` means agent i reads agent j's solution when i REFINEs (row
i lists i's in-neighbours); the diagonal is ignored (an agent always has its own solution).
A graph is a named topology (`TOPOLOGIES`), one 0/1 matrix ``[N, N]`` for every round, or
one per round ``[T, N, N]`` (T = ``max_rounds``; round r, 0-based, uses ``edges[r]``).
``"complete"`` (every agent reads every other) is the default and the env's behaviour
without a topology. Only REFINE reads the graph: CONCEDE still copies from all peers.
The full description: ``docs/topology.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np

TopologySpec: TypeAlias = str | tuple[Any, ...]
"""What `EnvConfig.topology` holds: a `TOPOLOGIES` name, or a 0/1 matrix ``[N, N]`` /
``[T, N, N]`` as nested tuples of ints (any array-like is normalised to that)."""

COMPLETE = "complete"

TOPOLOGIES: dict[str, Callable[[int], np.ndarray]] = {}
"""Named graphs: name -> function of N giving a bool ``[N, N]`` edge matrix."""


def register_topology(name: str, fn: Callable[[int], np.ndarray]) -> None:
    """Register a named graph (``topology=name``): `fn(num_agents)` returns ``[N, N]`` 0/1."""
    TOPOLOGIES[name] = fn


def _complete(n: int) -> np.ndarray:
    return np.ones((n, n), bool)


def _ring(n: int) -> np.ndarray:
    # A directed cycle (Exchange-of-Thought's Ring): agent i reads its predecessor.
    i = np.arange(n)
    out = np.zeros((n, n), bool)
    out[i, (i - 1) % n] = True
    return out


def _star(n: int) -> np.ndarray:
    # Agent 0 is the hub: it reads every spoke, each spoke reads the hub.
    out = np.zeros((n, n), bool)
    out[0, :] = True
    out[:, 0] = True
    return out


def _chain(n: int) -> np.ndarray:
    # A directed path 0 -> 1 -> ... -> N-1: agent i reads i-1, agent 0 reads nobody.
    i = np.arange(1, n)
    out = np.zeros((n, n), bool)
    out[i, i - 1] = True
    return out


def _none(n: int) -> np.ndarray:
    return np.zeros((n, n), bool)


register_topology("complete", _complete)
register_topology("ring", _ring)
register_topology("star", _star)
register_topology("chain", _chain)
register_topology("none", _none)

_FIX = (
    "pass a name ({names}), a 0/1 matrix [N, N] = [{n}, {n}] (edges[i, j] = 1: agent i "
    "reads agent j when it REFINEs) or one per round [T, N, N] = [{t}, {n}, {n}]"
)


def _fix(num_agents: int, max_rounds: int) -> str:
    return _FIX.format(names=", ".join(map(repr, TOPOLOGIES)), n=num_agents, t=max_rounds)


def is_complete(spec: Any) -> bool:
    """True for the default ``"complete"`` name (not for an all-ones matrix: a matrix
    turns the ``"topology"`` observation group on)."""
    return isinstance(spec, str) and spec == COMPLETE


def named(name: str, num_agents: int) -> np.ndarray:
    """The bool ``[N, N]`` matrix of a registered topology."""
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}; registered topologies: {sorted(TOPOLOGIES)}")
    out = np.asarray(TOPOLOGIES[name](num_agents), bool)
    if out.shape != (num_agents, num_agents):
        raise ValueError(
            f"topology {name!r} gave shape {out.shape} for {num_agents} agents, not "
            f"({num_agents}, {num_agents})"
        )
    return out


def as_matrix(spec: Any, what: str = "topology") -> np.ndarray:
    """A 0/1 array-like (or a JSON string of one) as a bool array, refusing other values."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            raise ValueError(
                f"{what}={spec!r} is neither a registered topology ({sorted(TOPOLOGIES)}) "
                "nor a JSON 0/1 matrix such as '[[0, 1], [1, 0]]'"
            ) from None
    try:
        arr = np.asarray(spec)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{what} is not a rectangular 0/1 matrix ({err})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be a 0/1 matrix of numbers, got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))].ravel()[0].item()
        raise ValueError(
            f"{what} must hold only 0 and 1 (edges[i, j] = 1: agent i reads agent j), got {bad!r}"
        )
    return arr.astype(bool)


def resolve(spec: Any, num_agents: int, max_rounds: int, what: str = "topology") -> np.ndarray:
    """The bool ``[T, N, N]`` graph of every round for `spec` (a name, ``[N, N]`` or
    ``[T, N, N]``), diagonal set True; a `ValueError` says what is wrong and the fix."""
    N, T = num_agents, max_rounds
    if isinstance(spec, str) and spec in TOPOLOGIES:
        graph = np.broadcast_to(named(spec, N), (T, N, N))
    else:
        arr = as_matrix(spec, what)
        if arr.shape == (N, N):
            graph = np.broadcast_to(arr, (T, N, N))
        elif arr.shape == (T, N, N):
            graph = arr
        else:
            raise ValueError(f"{what} has shape {arr.shape}: {_fix(N, T)}")
    graph = graph.copy()
    graph[:, np.arange(N), np.arange(N)] = True
    return graph


def normalise(spec: Any, num_agents: int, max_rounds: int) -> TopologySpec:
    """`spec` as `EnvConfig.topology` stores it (checked): a name stays, a matrix becomes
    nested tuples of ints (hashable, picklable, compared by value)."""
    if isinstance(spec, str) and spec in TOPOLOGIES:
        return spec
    if isinstance(spec, str) and not spec.lstrip().startswith("["):
        raise ValueError(f"unknown topology {spec!r}; {_fix(num_agents, max_rounds)}")
    resolve(spec, num_agents, max_rounds)
    return _tuples(as_matrix(spec).astype(int).tolist())


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else int(value)


def batch(
    edges: Any, num_envs: int, num_agents: int, max_rounds: int, what: str = "edges"
) -> np.ndarray:
    """`set_topology`'s argument as bool ``[B, T, N, N]`` (diagonal True): a name or
    ``[N, N]`` (every env), ``[B, N, N]`` (one graph per env, every round) or
    ``[B, T, N, N]``."""
    B, N, T = num_envs, num_agents, max_rounds
    if isinstance(edges, str) and edges in TOPOLOGIES:
        out = np.broadcast_to(named(edges, N), (B, T, N, N))
    else:
        arr = as_matrix(edges, what)
        if arr.shape == (N, N):
            out = np.broadcast_to(arr, (B, T, N, N))
        elif arr.shape == (B, N, N):
            out = np.broadcast_to(arr[:, None], (B, T, N, N))
        elif arr.shape == (B, T, N, N):
            out = arr
        else:
            raise ValueError(
                f"{what} has shape {arr.shape}: pass a name ({', '.join(TOPOLOGIES)}), "
                f"[N, N] = [{N}, {N}] for every env, [B, N, N] = [{B}, {N}, {N}] (one "
                f"graph per env) or [B, T, N, N] = [{B}, {T}, {N}, {N}] (per env and round)"
            )
    out = out.copy()
    out[..., np.arange(N), np.arange(N)] = True
    return out


def groups(spec: Any) -> frozenset[str]:
    """The observation groups a topology enables: ``{"topology"}`` unless ``"complete"``."""
    return frozenset() if is_complete(spec) else frozenset({"topology"})
