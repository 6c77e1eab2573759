"""Counter-based random numbers: every draw is a hash of (episode key, tags, counter).

Why not one `np.random.Generator` shared by the batch: with a shared stream, env `b` of a
vector env would see different numbers than the same env run alone, so the two views of
the core could not be compared trajectory by trajectory. Keyed draws make each env's
randomness depend only on its own seed (as JAX keys do), stay fully vectorised, and let a
group of rollouts share the initial solutions (same key) and differ later (other tags).
The hash is SplitMix64's finaliser, which passes BigCrush on a counter.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import ndtri

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = (np.uint64(s) for s in (30, 27, 31, 40))
_TO_UNIT = np.float32(2.0**-24)
_BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))
"""The largest float32 below 1. The top 24-bit value plus 0.5 rounds to 2**24 in float32,
which would make a uniform of exactly 1 (and an infinite normal) once in 2**24 draws."""
_WRAP = 2**64


def _as_keys(x: np.ndarray | int) -> np.ndarray:
    """`x` as a uint64 array of at least one dimension (0-d uint64 warns on wrap-around)."""
    if type(x) is np.ndarray and x.dtype == np.uint64 and x.ndim:
        return x  # the common case, without three conversion calls
    return np.atleast_1d(np.asarray(x, dtype=np.uint64))


def mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = _as_keys(x)
    out = np.empty(x.shape, np.uint64)
    if x.size <= _CHUNK:
        _mix_into(x, out, np.empty(x.shape, np.uint64))
        return out
    # Chunk by chunk: each of the eight passes then runs in cache (~3x faster at 1e5 keys).
    flat, flat_out = x.reshape(-1), out.reshape(-1)
    scratch = np.empty(_CHUNK, np.uint64)
    for i in range(0, flat.size, _CHUNK):
        part = flat_out[i : i + _CHUNK]
        _mix_into(flat[i : i + _CHUNK], part, scratch[: part.size])
    return out


_CHUNK = 32768
"""Keys `mix` hashes at a time (256 KiB a pass)."""


def _mix_into(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> None:
    """`mix` of `x` written into `y`, with `t` (same shape) as scratch."""
    np.right_shift(x, _S30, out=y)
    y ^= x
    y *= _M1
    np.right_shift(y, _S27, out=t)
    y ^= t
    y *= _M2
    np.right_shift(y, _S31, out=t)
    y ^= t


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
    k = _as_keys(keys)
    offset = 0  # the Python-int tags' sum, exact mod 2**64 (addition commutes there)
    for tag, m in zip(tags, _TAG_MULTIPLIERS):
        if isinstance(tag, int):
            offset += tag * int(m)
        else:
            k = k + _as_keys(tag) * m
    if offset:
        k = k + np.uint64(offset % _WRAP)
    return mix(k)


def seed_key(seed: int | np.ndarray) -> np.ndarray:
    """The root key of an integer seed (any non-negative int below 2**64)."""
    return mix(mix(np.asarray(seed, dtype=np.uint64)) + _GOLDEN)


def uniform(keys: np.ndarray, size: int) -> np.ndarray:
    """`size` float32 uniforms in (0, 1) per key: shape `keys.shape + (size,)`.

    24 bits of resolution: plenty for a simulator, and half the memory traffic of float64.
    """
    keys = np.asarray(keys, dtype=np.uint64)
    out = np.empty((*keys.shape, size), np.float32)
    flat_keys, flat_out = keys.reshape(-1), out.reshape(-1, size)
    rows = max(1, _CHUNK // size)  # keys per chunk: every pass stays in cache
    for i in range(0, flat_keys.size, rows):
        x = mix(flat_keys[i : i + rows, None] + _counters(size))
        x >>= _S40
        u = flat_out[i : i + rows]
        u[...] = x  # uint64 -> float32, as astype
        u += np.float32(0.5)
        u *= _TO_UNIT
        np.minimum(u, _BELOW_ONE, out=u)
    return out


@functools.lru_cache(maxsize=16)
def _counters(size: int) -> np.ndarray:
    counters = np.arange(1, size + 1, dtype=np.uint64) * _GOLDEN
    counters.flags.writeable = False
    return counters


def normal(keys: np.ndarray, size: int) -> np.ndarray:
    """`size` standard normals per key (inverse CDF of `uniform`)."""
    return ndtri(uniform(keys, size))


def seeds(keys: np.ndarray) -> np.ndarray:
    """31-bit integer seeds (for LLM samplers) from keys."""
    return (mix(keys) >> np.uint64(33)).astype(np.int64)
