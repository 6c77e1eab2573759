"""The paper's topology baselines as registered methods: AgentPrune (one-shot pruning of
a spatial-temporal communication graph), GPTSwarm (edge distribution optimised with
REINFORCE) and DyLAN (agent importance, early stop at consensus). Each trains to a
policy that `algorithms.evaluate.evaluate` runs like any other; docs/baselines.md maps
each to its paper and lists every deviation the env forces.

`load_policy(path)` reads the ``policy.json`` a training run writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["load_policy"]


def load_policy(path: str | Path) -> Any:
    """The policy saved as ``policy.json`` by ``train(cfg)`` with ``cfg.out`` set (any of
    the three methods)."""
    payload = json.loads(Path(path).read_text())
    algo = payload.get("algo") if isinstance(payload, dict) else None
    if algo == "dylan":
        from algorithms.topology_methods.dylan import DyLANPolicy

        return DyLANPolicy(payload["drop"], payload["select_round"], payload["selection"],
                           payload["team_importance"],
                           payload["env_overrides"].get("stop_on_consensus", True),
                           payload["rating_floor"])  # fmt: skip
    if algo in ("agentprune", "gptswarm"):
        from algorithms.topology_methods.common import GraphPolicy

        info = {k: v for k, v in payload.items() if k not in ("algo", "graph", "env_overrides")}
        return GraphPolicy(algo, payload["graph"], info, payload.get("env_overrides"))
    raise ValueError(f"{path} is not a topology baseline's policy.json (algo: {algo!r})")
