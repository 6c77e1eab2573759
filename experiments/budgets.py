"""How much training and evaluation a run gets: one `Budget` type, named budgets in
`BUDGETS`, shared by `deliberate compare` and `deliberate reproduce`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """Training and evaluation budgets of a comparison or a paper experiment."""

    updates: int
    """Policy updates of each group RL method (SoftRankPO, GRPO, REINFORCE). PPO gets the
    same episodes per update (`questions_per_update` x `group_size` distinct questions,
    one rollout each) and SB3 PPO the same agent steps in all."""
    questions_per_update: int
    """Questions per update of a group method."""
    group_size: int
    """Rollouts per question (G, the group of SoftRankPO and GRPO)."""
    sft_episodes: int
    """Deliberations recorded for the SFT dataset (MPDF stage 1)."""
    sft_epochs: int
    """Passes of SFT over its dataset."""
    eval_episodes: int
    """Held-out questions per evaluation seed."""
    eval_seeds: tuple[int, ...]
    """Evaluation seeds: each draws its own held-out questions' episodes and noise; every
    method sees the same episodes under the same seed, so differences are paired."""
    train_seeds: tuple[int, ...]
    """Training seeds of the learned methods. Evaluation run r uses the policy trained with
    ``train_seeds[r % len(train_seeds)]``: with one training seed the interval over seeds
    covers evaluation noise only, with one per evaluation seed it covers training variance
    too (the paper's protocol)."""


BUDGETS: dict[str, Budget] = {
    # Seconds per run; for the test suite only (the numbers mean nothing).
    "tiny": Budget(updates=2, questions_per_update=4, group_size=4, sft_episodes=64,
                   sft_epochs=1, eval_episodes=40, eval_seeds=(0, 1), train_seeds=(0,)),
    # `make run`: about a minute on 2 CPU cores; one training seed, three evaluation seeds.
    # Derived from measured throughput (docs/reproduction.md, "Budgets"): on `make run`'s
    # profile every learned row but AgentPrune's (still improving at 40 updates) is within
    # 0.5 points of its paper-budget value, paired on the same evaluation.
    "quick": Budget(updates=40, questions_per_update=64, group_size=8, sft_episodes=4096,
                    sft_epochs=16, eval_episodes=1000, eval_seeds=(0, 1, 2), train_seeds=(0,)),
    # The paper's protocol: three training seeds, each evaluated on its own seed; twice
    # quick's updates per seed (about 7 minutes of `deliberate compare` on 2 cores).
    "paper": Budget(updates=80, questions_per_update=64, group_size=8, sft_episodes=4096,
                    sft_epochs=16, eval_episodes=2000, eval_seeds=(0, 1, 2),
                    train_seeds=(0, 1, 2)),
}  # fmt: skip

DEFAULT_BUDGET = "quick"
"""The budget of `deliberate compare` and `deliberate reproduce` when none is named."""

ALIASES = {"full": "paper"}
"""Older names: ``--budget full`` was reproduce's name for the paper's protocol."""


def get_budget(budget: str | Budget) -> Budget:
    """A `Budget` by name (``tiny``, ``quick``, ``paper``; ``full`` = ``paper``), or `budget`
    itself when it already is one."""
    if isinstance(budget, Budget):
        return budget
    name = ALIASES.get(budget, budget)
    if name not in BUDGETS:
        valid = ", ".join([*BUDGETS, *ALIASES])
        raise ValueError(f"unknown budget {budget!r}; valid budgets: {valid}")
    return BUDGETS[name]
