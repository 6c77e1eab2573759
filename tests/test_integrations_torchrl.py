"""TorchRL and BenchMARL: `PettingZooWrapper` passes `check_env_specs` and rolls out (parallel
and AEC, flat and dict observations), and BenchMARL's MAPPO and IPPO run on
`DeliberationTask`. Skips without torchrl (BenchMARL: without benchmarl and a torchrl it
works with, < 0.12; `.ci/integrations` runs it in ``.venv-rllib``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torchrl = pytest.importorskip("torchrl")
from torchrl.envs.libs.pettingzoo import PettingZooWrapper  # noqa: E402
from torchrl.envs.utils import check_env_specs  # noqa: E402

import deliberation_env  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("obs_mode", ["flat", "dict"])
@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "aec"])
def test_pettingzoo_wrapper_checks_specs_and_rolls_out(obs_mode, parallel):
    make = deliberation_env.parallel_env if parallel else deliberation_env.env
    env = PettingZooWrapper(
        make(info_mode="numeric", obs_mode=obs_mode),
        use_mask=True,
        categorical_actions=True,
        seed=0,
    )
    check_env_specs(env)
    td = env.rollout(12, break_when_any_done=False)
    group = "agent" if parallel else "agent_0"
    assert (group, "action_mask") in td.keys(True, True)
    assert (group, "info", "final") in td.keys(True, True)
    assert ("next", group, "reward") in td.keys(True, True)
    rounds = 12 if parallel else 12 // 3
    assert td["next", "done"].sum() >= rounds // 3 - 1  # episodes end and reset


def test_default_infos_are_what_tensor_pipelines_refuse():
    # The reason info_mode="numeric" exists (issue 14): text answers and nested dicts.
    with pytest.raises(TypeError):
        PettingZooWrapper(deliberation_env.parallel_env(), use_mask=True, categorical_actions=True)


def test_torchrl_env_helper_has_state_and_mask():
    from deliberation_env.integrations.torchrl import torchrl_env

    env = torchrl_env(seed=0, profile="toy")
    td = env.reset()
    assert td["state"].shape[-1] == env._env.state_space.shape[0]
    assert td["agent", "action_mask"].shape == (3, 3)


@pytest.mark.parametrize("algorithm", ["mappo", "ippo"])
def test_benchmarl_runs_on_the_task(algorithm):
    try:
        import benchmarl.experiment  # noqa: F401

        import deliberation_env.integrations.benchmarl  # noqa: F401
    except ImportError as e:  # benchmarl 1.5 needs torchrl < 0.12
        pytest.skip(f"benchmarl does not import with torchrl {torchrl.__version__}: {e}")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import benchmarl_mappo
    finally:
        sys.path.remove(str(EXAMPLES))
    experiment = benchmarl_mappo.build(algorithm, frames=240, batch=120)
    policy = experiment.policy
    before = [p.detach().clone() for p in policy.parameters()]
    experiment.run()
    assert experiment.n_iters_performed == 2 and experiment.total_frames == 240
    assert any((a != b).any() for a, b in zip(before, policy.parameters()))
