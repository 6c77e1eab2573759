"""Counter-based random numbers: every draw is a hash of (episode key, tags, counter).

Why not one `np.random.Generator` shared by the batch: with a shared stream, env `b` of a
vector env would see different numbers than the same env run alone, so the two views of
the core could not be compared trajectory by trajectory. Keyed draws make each env's
randomness depend only on its own seed (as JAX keys do), stay fully vectorised, and let a
group of rollouts share the initial solutions (same key) and differ later (other tags).
The hash is SplitMix64's finaliser, which passes BigCrush on a counter.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = (np.uint64(s) for s in (30, 27, 31, 40))
_TO_UNIT = np.float32(2.0**-24)


def mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = np.atleast_1d(np.asarray(x, dtype=np.uint64))  # 0-d uint64 warns on wrap-around
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


# Odd 64-bit multipliers, one per tag position: a key and its tags are combined as
# key + sum(tag_i * P_i) and hashed once (distinct small tag tuples never collide).
_TAG_MULTIPLIERS = tuple(
    np.uint64(m)
    for m in (0xD6E8FEB86659FD93, 0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3)
)


def derive(keys: np.ndarray, *tags: int | np.ndarray) -> np.ndarray:
    """A new key per entry of `keys` for each combination of `tags` (broadcast)."""
    if len(tags) > len(_TAG_MULTIPLIERS):
        raise ValueError(f"derive takes at most {len(_TAG_MULTIPLIERS)} tags, got {len(tags)}")
    k = np.atleast_1d(np.asarray(keys, dtype=np.uint64))
    for tag, m in zip(tags, _TAG_MULTIPLIERS):
        k = k + np.atleast_1d(np.asarray(tag, dtype=np.uint64)) * m
    return mix(k)


def seed_key(seed: int | np.ndarray) -> np.ndarray:
    """The root key of an integer seed (any non-negative int below 2**64)."""
    return mix(mix(np.asarray(seed, dtype=np.uint64)) + _GOLDEN)


def uniform(keys: np.ndarray, size: int) -> np.ndarray:
    """`size` float32 uniforms in (0, 1) per key: shape `keys.shape + (size,)`.

    24 bits of resolution: plenty for a simulator, and half the memory traffic of float64.
    """
    counters = np.arange(1, size + 1, dtype=np.uint64) * _GOLDEN
    x = mix(np.asarray(keys, dtype=np.uint64)[..., None] + counters)
    return ((x >> _S40).astype(np.float32) + np.float32(0.5)) * _TO_UNIT


def normal(keys: np.ndarray, size: int) -> np.ndarray:
    """`size` standard normals per key (inverse CDF of `uniform`)."""
    return ndtri(uniform(keys, size))


def seeds(keys: np.ndarray) -> np.ndarray:
    """31-bit integer seeds (for LLM samplers) from keys."""
    return (mix(keys) >> np.uint64(33)).astype(np.int64)
