"""One summary table of the benchmark JSONs under runs/bench/ (written by `make bench`)."""

from __future__ import annotations

import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "runs" / "bench"


def _load(name: str) -> dict | None:
    path = BENCH / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    lines = ["| benchmark | measurement | value |", "|---|---|---:|"]
    env = _load("env_speed")
    if env:
        for r in env["results"]:
            lines.append(
                f"| env speed | {r['name']} agent-steps/s | {r['agent_steps_per_s']:,.0f} |"
            )
        for t in env.get("targets", []):
            lines.append(
                f"| env speed | target: {t.get('target', t.get('name', ''))} | {t.get('result', '')} |"
            )
    llm = _load("llm_throughput")
    if llm:
        for section in llm["sections"].values():
            for r in section.get("rows", []):
                if r.get("speedup", 1.0) != 1.0:
                    lines.append(
                        f"| LLM throughput | {r['section']}: {r['mode']} speed-up | {r['speedup']:.1f}x |"
                    )
    train = _load("train_speed")
    if train:
        for r in train["rows"]:
            lines.append(
                f"| training | {r['method']} agent-steps/s | {r['agent_steps_per_s']:,.0f} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
