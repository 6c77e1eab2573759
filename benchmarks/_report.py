"""What the benchmark scripts share: a target's PASS/MISS entry, the Markdown table of the
targets, and writing a report (the Markdown to stdout, the numbers to a JSON file)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def target(name: str, measured: Any, text: str, passed: bool) -> dict[str, Any]:
    """One target of a report: what it asks, the measured value (and as text), PASS/MISS."""
    return {
        "target": name,
        "measured": measured,
        "text": text,
        "result": "PASS" if passed else "MISS",
    }


def targets_table(targets: Iterable[Mapping[str, Any]]) -> list[str]:
    """Markdown lines of the targets table, with a blank line before it."""
    lines = ["", "| target | measured | result |", "|---|---:|---|"]
    return lines + [f"| {t['target']} | {t['text']} | {t['result']} |" for t in targets]


def write_report(report: Mapping[str, Any], out: Path, markdown: str) -> None:
    """Print `markdown`, then write `report` as JSON to `out` (creating its folder)."""
    print(markdown)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
