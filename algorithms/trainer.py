"""The training loop every RL method runs, written once: collect rollouts, update, log,
evaluate, checkpoint; and `make_train`, which turns a method's config class and
``update`` into the ``train(cfg, policy=None, ref=None, progress=True, resume=False)``
function the method's module exports.

A trainer owns its randomness: one ``torch.Generator`` seeded with ``cfg.seed`` draws the
initial weights, the actions and the minibatch order, and checkpoints carry its state.
Torch's global generator is never read, so seeding it elsewhere changes nothing.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from algorithms.common import TrainConfig, make_policy, split_tasks
from algorithms.kl import make_kl_controller
from algorithms.policy import MetaPolicy, use_generator, with_value_head
from algorithms.rollout import Rollout, collect
from deliberation_env import VectorDeliberationEnv

C = TypeVar("C", bound=TrainConfig)
History = list[dict[str, Any]]


class UpdateFn(Protocol):
    """``update(policy, ref, optimizer, roll, cfg, generator) -> diagnostics``: one policy
    update on a batch of rollouts, drawing its randomness (minibatch order) from
    `generator`. (An update without the `generator` parameter still runs: torch's global
    generator then plays the trainer's stream for the call.)"""

    def __call__(
        self,
        policy: MetaPolicy,
        ref: MetaPolicy,
        optimizer: torch.optim.Optimizer,
        roll: Rollout,
        cfg: Any,
        generator: torch.Generator,
    ) -> dict[str, float]: ...


def rollout_stats(roll: Rollout) -> dict[str, float]:
    counts = roll.action_counts.sum(0)
    shares = counts / max(counts.sum(), 1)
    return {
        "team_accuracy": float(roll.team_correct.mean()),
        "mean_return": float(roll.returns.mean()),
        "tokens_per_question": float(roll.tokens.mean()),
        "persist_share": float(shares[0]),
        "refine_share": float(shares[1]),
        "concede_share": float(shares[2]),
    }


class Trainer:
    """The loop every method runs: collect rollouts, update, log, evaluate, checkpoint.
    Interrupting it (Ctrl-C) saves a checkpoint first.

    `policy` is the start (default: fresh weights, the first draws of the trainer's
    generator) and `ref` the KL anchor (default: a frozen copy of the start).
    `critic_state_size` is for methods with a value head (PPO): None, no value head; an
    int, a value head reading a global state of that size (0: own features only)."""

    def __init__(
        self,
        name: str,
        cfg: TrainConfig,
        update: UpdateFn | Callable[..., dict[str, float]],
        policy: MetaPolicy | None = None,
        ref: MetaPolicy | None = None,
        progress: bool = True,
        critic_state_size: int | None = None,
    ) -> None:
        self.name, self.cfg = name, cfg
        self.update: Callable[..., dict[str, float]] = update
        self.update_takes_generator = "generator" in inspect.signature(update).parameters
        torch.set_num_threads(cfg.torch_threads)
        self.train_tasks, self.eval_tasks = split_tasks(cfg)
        self.env = VectorDeliberationEnv(
            cfg.questions_per_update * cfg.group_size,
            config=replace(cfg.env, tasks=tuple(self.train_tasks)),
            autoreset=False,
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.policy = self.start_policy(policy, critic_state_size)
        self.ref = copy.deepcopy(ref if ref is not None else self.policy).requires_grad_(False)
        # foreach: one fused kernel per step over all parameters, not one loop per tensor.
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, foreach=True)
        self.kl = make_kl_controller(cfg)  # beta of each update (`cfg.kl_control`)
        self.history: History = []
        self.start = 0
        self.progress = progress
        self.out = Path(cfg.out) if cfg.out else None

    def start_policy(self, policy: MetaPolicy | None, critic_state_size: int | None) -> MetaPolicy:
        """`policy`, or fresh weights; given a value head when the method needs one."""
        if critic_state_size is None:
            return policy if policy is not None else make_policy(self.cfg, generator=self.generator)
        # A value head's weights come from a generator of their own, seeded alike, and the
        # rollouts start at the seed: PPO's numbers from before trainers had generators.
        weights = torch.Generator().manual_seed(self.cfg.seed)
        if policy is None:
            return make_policy(self.cfg, True, critic_state_size, generator=weights)
        return with_value_head(policy, critic_state_size, generator=weights)

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "algo": self.name,
            "config": asdict(self.cfg),
            "update": len(self.history),
            "policy": self.policy.state_dict(),
            "policy_config": asdict(self.policy.config),
            "ref": self.ref.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "generator": self.generator.get_state(),
            "kl_controller": self.kl.state_dict(),
        }
        tmp = self.out / "checkpoint.pt.tmp"
        torch.save(payload, tmp)
        tmp.replace(self.out / "checkpoint.pt")  # atomic: a kill never leaves half a file

    def resume(self) -> bool:
        """Load ``out/checkpoint.pt`` if there is one; returns whether it did."""
        if self.out is None or not (self.out / "checkpoint.pt").exists():
            return False
        path = self.out / "checkpoint.pt"
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if payload["algo"] != self.name:
            raise ValueError(
                f"{path} is a {payload['algo']} checkpoint, not {self.name}: pick another --out"
            )
        self.policy.load_state_dict(payload["policy"])
        self.ref.load_state_dict(payload["ref"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.history = payload["history"]
        if "kl_controller" in payload:  # absent from checkpoints before KL controllers
            self.kl.load_state_dict(payload["kl_controller"])
        self.start = payload["update"]
        # Checkpoints written before trainers owned a generator hold the global state.
        self.generator.set_state(payload.get("generator", payload.get("torch_rng")))
        # Rows logged after the checkpoint will be produced again: keep the log in step.
        with open(self.out / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.history)
        return True

    # -------------------------------------------------------------- loop
    def evaluate(self) -> float:
        from algorithms.evaluate import evaluate

        runs = evaluate(
            self.policy,
            self.cfg.env,
            self.eval_tasks,
            seeds=(10_000 + self.cfg.seed,),
            episodes=self.cfg.eval_episodes,
        )
        return float(runs[0]["team_accuracy"])

    def update_policy(self, roll: Rollout) -> dict[str, float]:
        policy, ref, optimizer = self.policy, self.ref, self.optimizer
        cfg = replace(self.cfg, beta=self.kl.value)  # the KL controller's current beta
        if self.update_takes_generator:
            return self.update(policy, ref, optimizer, roll, cfg, generator=self.generator)
        with use_generator(self.generator):  # a five-argument update draws from the global one
            return self.update(policy, ref, optimizer, roll, cfg)

    def step(self, u: int) -> dict[str, Any]:
        """Update `u` (0-based): collect, update, and the record logged for it."""
        cfg = self.cfg
        t0 = time.perf_counter()
        seed = cfg.seed * 1_000_003 + u
        roll = collect(self.env, self.policy, seed, cfg.group_size, self.generator)
        beta = self.kl.value
        stats = self.update_policy(roll)
        self.kl.update(stats.get("kl", 0.0), self.env.num_envs)
        record = {"update": u + 1, "agent_steps": roll.agent_steps, **rollout_stats(roll), **stats}
        record["beta"] = beta
        if cfg.eval_every and (u + 1) % cfg.eval_every == 0:
            record["eval_team_accuracy"] = self.evaluate()
        record["seconds"] = time.perf_counter() - t0
        return record

    def run(self) -> tuple[MetaPolicy, History]:
        cfg = self.cfg
        bar = tqdm(
            range(self.start, cfg.updates), desc=self.name, disable=not self.progress, leave=False
        )
        try:
            for u in bar:
                record = self.step(u)
                self.history.append(record)
                bar.set_postfix(
                    acc=f"{record['team_accuracy']:.3f}", persist=f"{record['persist_share']:.2f}"
                )
                if self.out is not None:
                    self.out.mkdir(parents=True, exist_ok=True)
                    with open(self.out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    if (u + 1) % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        if self.out is not None:
            self.save_checkpoint()
            self.policy.save(self.out / "policy.pt", algo=self.name, train_config=asdict(cfg))
        return self.policy, self.history


def make_train(
    name: str,
    config: type[C],
    update: UpdateFn,
    *,
    critic_state_size: Callable[[C], int] | None = None,
    doc: str = "",
) -> Callable[..., tuple[MetaPolicy, History]]:
    """The ``train(cfg=None, policy=None, ref=None, progress=True, resume=False)`` of the
    method `name`: `update` inside the shared `Trainer` loop, with ``config()`` when no
    `cfg` is given. `critic_state_size(cfg)`, for methods with a value head (PPO), gives
    the size of the global state the critic reads (0: none); a start policy without a
    value head gets one. `doc` becomes the function's docstring."""

    def train(
        cfg: C | None = None,
        policy: MetaPolicy | None = None,
        ref: MetaPolicy | None = None,
        progress: bool = True,
        resume: bool = False,
    ) -> tuple[MetaPolicy, History]:
        cfg = cfg if cfg is not None else config()
        size = critic_state_size(cfg) if critic_state_size is not None else None
        trainer = Trainer(name, cfg, update, policy, ref, progress, critic_state_size=size)
        if resume:
            trainer.resume()
        return trainer.run()

    train.__doc__ = doc or f"Train a meta-policy with {name} (`{config.__name__}`)."
    train.__module__ = config.__module__
    return train
