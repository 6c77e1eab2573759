"""AgileRL: ``import deliberation_env`` works on AgileRL's pettingzoo (< 1.27, no registry)
and IPPO trains on flat observations with the masks in the infos
(`examples/agilerl_ippo.py`). Skips without agilerl (`.ci/integrations`: ``.venv-agilerl``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("agilerl")

import deliberation_env  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_env_works_whatever_the_pettingzoo_registry():
    import pettingzoo

    env = deliberation_env.parallel_env(profile="toy")
    env.reset(seed=0)
    if not hasattr(pettingzoo, "parallel_registry"):
        deliberation_env.register_envs()  # a no-op there, not an AttributeError


def test_ippo_trains_with_masks_from_the_infos():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import agilerl_ippo
    finally:
        sys.path.remove(str(EXAMPLES))
    curve = agilerl_ippo.train(updates=2, learn_step=48)
    assert len(curve) == 2 and np.isfinite(curve).all()
