"""The training loop every RL method runs, written once: collect rollouts, update, log,
evaluate, checkpoint; and `make_train`, which turns a method's config class and
``update`` into the ``train(cfg, policy=None, ref=None, progress=True, resume=False)``
function the method's module exports.

A trainer owns its randomness: one ``torch.Generator`` seeded with ``cfg.seed`` draws the
initial weights, the actions and the minibatch order, and checkpoints carry its state.
Torch's global generator is never read, so seeding it elsewhere changes nothing. The env's
randomness is a seed per update, so a run resumed from a checkpoint (taken between two
updates; `algorithms.checkpoint`) is bit-identical to one never stopped.
"""

from __future__ import annotations

import copy
import inspect
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from algorithms.checkpoint import (
    append_metrics,
    resume_checkpoint,
    saved_on_interrupt,
    unfinished,
    write_checkpoint,
    write_metrics,
)
from algorithms.common import TrainConfig, make_policy, split_tasks
from algorithms.kl import make_kl_controller
from algorithms.policy import MetaPolicy, use_generator, with_value_head
from algorithms.rollout import Rollout, collect
from algorithms.tracking import Tracker, log_row, start_run
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
    Interrupting it (Ctrl-C or SIGTERM) saves the checkpoint of the last whole update
    first, then prints "saved checkpoint; continue with --resume" and re-raises
    (KeyboardInterrupt, or `algorithms.checkpoint.Terminated`, exit status 143).

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
        tracker: Tracker | None = None,
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
        # fused: one kernel per step over all parameters (on CPU, foreach still loops over
        # the tensors: twice the time of this tiny network's step).
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, fused=True)
        self.kl = make_kl_controller(cfg)  # beta of each update (`cfg.kl_control`)
        self.history: History = []
        self.start = 0
        self.progress = progress
        self.out = Path(cfg.out) if cfg.out else None
        self.boundary: dict[str, Any] | None = None  # the state after the last whole update
        self._config_dict: dict[str, Any] | None = None
        self.resumed = False
        self.tracker = tracker  # TensorBoard / W&B (`algorithms.tracking`): rows, config

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
    def config_dict(self) -> dict[str, Any]:
        """``asdict(cfg)``, made once (only runs that write checkpoints need it)."""
        if self._config_dict is None:
            self._config_dict = asdict(self.cfg)
        return self._config_dict

    def snapshot(self) -> dict[str, Any]:
        """Everything a resumed run needs, as of now (an update boundary), copied: the
        policy, the KL anchor, the optimizer, the generator, beta's controller and the
        history (`algorithms.checkpoint` lists what each entry is)."""
        return {
            "algo": self.name,
            "config": self.config_dict(),
            "update": len(self.history),
            "total": self.cfg.updates,
            "policy": copy.deepcopy(self.policy.state_dict()),
            "policy_config": asdict(self.policy.config),
            "ref": self.ref.state_dict(),  # never trained: no copy needed
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "history": list(self.history),
            "generator": self.generator.get_state(),
            "kl_controller": copy.deepcopy(self.kl.state_dict()),
        }

    def save_checkpoint(self) -> Path | None:
        """Write the last update boundary's state to ``out/checkpoint.pt`` (atomically);
        returns the path (None without `out`). Called between updates, on Ctrl-C and on
        SIGTERM: a stop in the middle of an update saves the state before it."""
        if self.out is None:
            return None
        return write_checkpoint(self.out, self.boundary or self.snapshot())

    def resume(self) -> bool:
        """Continue from ``out/checkpoint.pt``; refused, with the reason, when there is none,
        when it is damaged, or when another method or another config wrote it
        (`algorithms.checkpoint.resume_checkpoint`). Returns True."""
        payload = resume_checkpoint(self.out, self.name, self.cfg)
        self.policy.load_state_dict(payload["policy"])
        self.ref.load_state_dict(payload["ref"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.history = list(payload["history"])
        if "kl_controller" in payload:  # absent from checkpoints before KL controllers
            self.kl.load_state_dict(payload["kl_controller"])
        self.start = payload["update"]
        # Checkpoints written before trainers owned a generator hold the global state.
        self.generator.set_state(payload["generator" if "generator" in payload else "torch_rng"])
        self.resumed = True
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
        if self.out is not None:
            if not self.resumed and (warning := unfinished(self.out)):
                warnings.warn(warning, stacklevel=2)
            # Rows logged after the checkpoint will be produced again; a fresh run starts
            # an empty log: either way the log holds exactly this run's history.
            write_metrics(self.out, self.history)
            self.boundary = self.snapshot()  # what Ctrl-C saves before the first update ends
        start_run(self.tracker, self.name, cfg)
        bar = tqdm(
            range(self.start, cfg.updates), desc=self.name, disable=not self.progress, leave=False
        )
        with saved_on_interrupt(self.save_checkpoint):
            for u in bar:
                record = self.step(u)
                self.history.append(record)
                log_row(self.tracker, record, u)
                bar.set_postfix(
                    acc=f"{record['team_accuracy']:.3f}", persist=f"{record['persist_share']:.2f}"
                )
                if self.out is not None:
                    self.boundary = self.snapshot()
                    append_metrics(self.out, record)
                    if (u + 1) % cfg.checkpoint_every == 0:
                        self.save_checkpoint()
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
    """The ``train(cfg=None, policy=None, ref=None, progress=True, resume=False,
    tracker=None)`` of the method `name`: `update` inside the shared `Trainer` loop, with
    ``config()`` when no `cfg` is given; `tracker` (`algorithms.tracking`) also gets the
    config and every row of ``metrics.jsonl``. `critic_state_size(cfg)`, for methods with
    a value head (PPO), gives the size of the global state the critic reads (0: none); a
    start policy without a value head gets one. `doc` becomes the function's docstring."""

    def train(
        cfg: C | None = None,
        policy: MetaPolicy | None = None,
        ref: MetaPolicy | None = None,
        progress: bool = True,
        resume: bool = False,
        tracker: Tracker | None = None,
    ) -> tuple[MetaPolicy, History]:
        cfg = cfg if cfg is not None else config()
        size = critic_state_size(cfg) if critic_state_size is not None else None
        trainer = Trainer(
            name, cfg, update, policy, ref, progress, critic_state_size=size, tracker=tracker
        )
        if resume:
            trainer.resume()
        return trainer.run()

    train.__doc__ = doc or f"Train a meta-policy with {name} (`{config.__name__}`)."
    train.__module__ = config.__module__
    return train
