"""BenchMARL MAPPO / IPPO on the deliberation env (TorchRL `PettingZooWrapper` underneath,
``info_mode="numeric"``), with a small frame budget.

    .venv/bin/python examples/benchmarl_mappo.py --algorithm mappo --frames 6000

Prints the mean episode reward of the collected batches, first and last iteration.
"""

from __future__ import annotations

import argparse
import tempfile

from benchmarl.algorithms import IppoConfig, MappoConfig
from benchmarl.experiment import Experiment, ExperimentConfig
from benchmarl.models.mlp import MlpConfig

from deliberation_env.integrations.benchmarl import DeliberationTask

ALGORITHMS = {"mappo": MappoConfig, "ippo": IppoConfig}


def build(
    algorithm: str = "mappo",
    frames: int = 6000,
    seed: int = 0,
    env: dict | None = None,
    batch: int = 1200,
):
    """A BenchMARL `Experiment` on ``profile="toy"`` (or `env`): CPU, no loggers, no eval."""
    config = ExperimentConfig.get_from_yaml()
    config.sampling_device = config.train_device = config.buffer_device = "cpu"
    config.max_n_frames = frames
    config.on_policy_collected_frames_per_batch = batch
    config.on_policy_n_envs_per_worker = 1
    config.on_policy_n_minibatch_iters = 2
    config.on_policy_minibatch_size = batch // 4
    config.loggers = []
    config.evaluation = False
    config.render = False
    config.checkpoint_interval = 0
    config.checkpoint_at_end = False
    config.create_json = False
    config.save_folder = tempfile.mkdtemp(prefix="benchmarl-")
    model = MlpConfig.get_from_yaml()
    model.num_cells = [32, 32]
    return Experiment(
        task=DeliberationTask.DELIBERATION.get_task(env or {"profile": "toy"}),  # type: ignore[attr-defined]
        algorithm_config=ALGORITHMS[algorithm].get_from_yaml(),
        model_config=model,
        critic_model_config=model,
        seed=seed,
        config=config,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="mappo")
    p.add_argument("--frames", type=int, default=6000)
    args = p.parse_args()
    experiment = build(args.algorithm, args.frames)
    experiment.run()
    print(
        f"{args.algorithm}: {experiment.total_frames} frames, {experiment.n_iters_performed} iterations"
    )


if __name__ == "__main__":
    main()
