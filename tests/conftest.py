"""Shared test setup: offline Hugging Face hub, the `--runslow` switch, the data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the network; loaders that would download fail fast instead.
os.environ["HF_HUB_OFFLINE"] = "1"
# The meta-policy is tiny: with 2 test workers on 2 cores, more torch threads only wait.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: pass --runslow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``shared/data`` beside the repository (or ``$DELIBERATION_DATA_DIR``); skips if absent.

    `tests/test_tasks.py` defines a module-level fixture of the same name and meaning, which
    takes precedence there.
    """
    env = os.environ.get("DELIBERATION_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"benchmark data not found at {path}; set DELIBERATION_DATA_DIR")
    return path
