"""KL controllers (`algorithms.kl`): the maths worked by hand, fixed beta = the paper's
numbers, the adaptive controller moving beta toward its target, and checkpoint/resume."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_trainers import GOLDEN, TINY

from algorithms import softrankpo
from algorithms.common import TrainConfig
from algorithms.kl import (
    AdaptiveKLController,
    AnnealedKLController,
    FixedKLController,
    make_kl_controller,
)


def test_fixed_controller_never_moves():
    c = FixedKLController(0.05)
    for kl in (0.0, 1.0, 100.0):
        c.update(kl, 1000)
    assert c.value == 0.05


def test_adaptive_controller_by_hand():
    # beta *= 1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon, target 0.02, n/h = 0.1.
    c = AdaptiveKLController(0.1, target=0.02, horizon=100)
    c.update(0.04, 10)  # error +1.0 -> clipped to +0.2: x 1.02
    assert c.value == pytest.approx(0.102)
    c.update(0.021, 10)  # error +0.05: x 1.005
    assert c.value == pytest.approx(0.10251)
    c.update(0.0, 10)  # error -1.0 -> clipped to -0.2: x 0.98
    assert c.value == pytest.approx(0.1004598)
    c.update(0.02, 10)  # on target: unchanged
    assert c.value == pytest.approx(0.1004598)


def test_annealed_controller_by_hand():
    lin = AnnealedKLController(0.1, start=0.1, floor=0.0, horizon=100)
    for steps, expected in ((25, 0.075), (25, 0.05), (100, 0.0), (10, 0.0)):
        lin.update(123.0, steps)  # the KL is not read
        assert lin.value == pytest.approx(expected)
    exp = AnnealedKLController(0.1, start=0.1, floor=0.001, horizon=100, schedule="exponential")
    exp.update(0.0, 50)
    assert exp.value == pytest.approx(0.01)  # 0.1 * (0.001 / 0.1) ** 0.5
    exp.update(0.0, 50)
    assert exp.value == pytest.approx(0.001)
    exp.update(0.0, 50)
    assert exp.value == pytest.approx(0.001)


def test_controllers_round_trip_their_state():
    c = AnnealedKLController(0.1, start=0.1, floor=0.0, horizon=100)
    c.update(0.0, 30)
    d = AnnealedKLController(0.5, start=0.5, floor=0.0, horizon=7)
    d.load_state_dict(c.state_dict())
    assert d == c


def test_make_kl_controller_reads_the_config_and_names_bad_values():
    cfg = TrainConfig(beta=0.03, kl_control="adaptive", target_kl=0.5, kl_horizon=64)
    c = make_kl_controller(cfg)
    assert isinstance(c, AdaptiveKLController)
    assert (c.value, c.target, c.horizon) == (0.03, 0.5, 64)
    assert isinstance(make_kl_controller(TrainConfig()), FixedKLController)
    with pytest.raises(ValueError, match="unknown kl_control 'pid'"):
        make_kl_controller(replace(TrainConfig(), kl_control="pid"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kl_horizon must be > 0"):
        make_kl_controller(TrainConfig(kl_control="anneal", kl_horizon=0))
    with pytest.raises(ValueError, match="target_kl must be > 0"):
        make_kl_controller(TrainConfig(kl_control="adaptive", target_kl=0.0))


def test_fixed_control_is_the_golden_run_and_logs_a_constant_beta():
    cfg = softrankpo.SoftRankPOConfig(**dict(TINY, updates=3), kl_control="fixed")
    _, history = softrankpo.train(cfg, progress=False)
    for key, expected in GOLDEN.items():
        assert [h[key] for h in history] == pytest.approx(expected, rel=1e-4, abs=1e-8), key
    assert [h["beta"] for h in history] == [cfg.beta] * 3


def test_adaptive_control_moves_beta_toward_the_target():
    # The tiny run's KL is ~1e-4: far below a target of 1, so beta shrinks every update
    # at the clipped rate; far above a target of 1e-9, so it grows.
    base = dict(TINY, updates=4, kl_control="adaptive", kl_horizon=64)
    n = TINY["questions_per_update"] * TINY["group_size"]
    for target, factor in ((1.0, 1 - 0.2 * n / 64), (1e-9, 1 + 0.2 * n / 64)):
        _, history = softrankpo.train(
            softrankpo.SoftRankPOConfig(**base, target_kl=target), progress=False
        )
        betas = [h["beta"] for h in history]
        expected = [0.02 * factor**u for u in range(4)]
        assert betas == pytest.approx(expected, rel=1e-9), target


def test_anneal_reaches_its_floor():
    n = TINY["questions_per_update"] * TINY["group_size"]
    cfg = softrankpo.SoftRankPOConfig(
        **dict(TINY, updates=4), kl_control="anneal", kl_horizon=2 * n, kl_floor=0.005
    )
    _, history = softrankpo.train(cfg, progress=False)
    assert [h["beta"] for h in history] == pytest.approx([0.02, 0.0125, 0.005, 0.005])


@pytest.mark.parametrize("control", ["adaptive", "anneal"])
def test_resume_continues_the_controller_identically(tmp_path, control):
    base = dict(TINY, updates=4, checkpoint_every=2, kl_control=control, kl_horizon=128)
    cfg = softrankpo.SoftRankPOConfig(**base, target_kl=1.0)
    _, full = softrankpo.train(cfg, progress=False)
    out = tmp_path / "run"
    softrankpo.train(replace(cfg, updates=2, out=str(out)), progress=False)
    _, resumed = softrankpo.train(replace(cfg, out=str(out)), progress=False, resume=True)
    assert len(resumed) == 4
    assert len({h["beta"] for h in full}) == 4  # beta moved every update
    for a, b in zip(full, resumed):
        for key in ("beta", "loss", "kl", "team_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (key, a["update"])
