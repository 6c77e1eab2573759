"""The counter-based random streams of `deliberation_env.rng`: uniforms strictly inside
(0, 1), so the normals drawn from them are finite."""

from __future__ import annotations

import numpy as np

from deliberation_env import rng

TOP = np.array([3747935], np.uint64)
"""A key whose first draw is the largest 24-bit value, 2**24 - 1 (found by search): plus
0.5 it rounds to 2**24 in float32, a uniform of exactly 1 before the clamp."""


def test_the_top_draw_stays_below_one_and_its_normal_is_finite() -> None:
    bits = rng.mix(TOP[:, None] + rng._counters(4)) >> np.uint64(40)
    assert bits[0, 0] == 2**24 - 1
    u = rng.uniform(TOP, 4)
    assert u[0, 0] == np.nextafter(np.float32(1), np.float32(0))
    z = rng.normal(TOP, 4)
    assert np.isfinite(z).all() and 5.0 < z[0, 0] < 6.0


def test_uniforms_lie_strictly_inside_the_unit_interval() -> None:
    u = rng.uniform(np.arange(200_000, dtype=np.uint64), 8)
    assert u.dtype == np.float32 and u.shape == (200_000, 8)
    assert 0.0 < u.min() and u.max() < 1.0
    assert abs(float(u.mean()) - 0.5) < 1e-3
