"""Every notebook runs top to bottom with small budgets (STYLE rule 11), and is stored clean.

Each notebook is executed in a fresh `python3` kernel (the venv's own: ipykernel installs
its kernelspec into ``sys.prefix/share/jupyter``, and jupyter_client starts it with
`sys.executable`), in a temporary working directory so that ``runs/`` outputs stay out of
the repository, with budgets lowered through the environment variables that each
notebook's first ("parameters") cell reads.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

SMALL_BUDGETS = {
    "NOTEBOOK_EPISODES": "100",
    "NOTEBOOK_SEEDS": "2",
    "NOTEBOOK_UPDATES": "2",
    "NOTEBOOK_QUESTIONS": "8",
    "NOTEBOOK_GROUP": "4",
    "NOTEBOOK_ROBUST_UPDATES": "2",
    "NOTEBOOK_LLM_QUESTIONS": "2",
    "NOTEBOOK_LLM_TOKENS": "16",
    "NOTEBOOK_OUT": "runs",
}
"""Budgets for the test run; the notebooks' own defaults are larger."""

SLOW: set[str] = set()
"""Notebooks run only with --runslow (none today: the five take about 55 s together with
these budgets, under `make test`'s two workers on 2 cores)."""

CELL_TIMEOUT = 180
"""Seconds per cell; the small budgets need a few."""


def _params(path: Path):  # -> pytest ParameterSet
    marks = [pytest.mark.slow] if path.name in SLOW else []
    return pytest.param(path, id=path.stem, marks=marks)


def test_there_are_notebooks() -> None:
    names = {p.name for p in NOTEBOOKS}
    expected = {
        "01_quickstart.ipynb",
        "02_baseline_comparison.ipynb",
        "03_algorithms.ipynb",
        "04_classroom.ipynb",
        "05_real_llm.ipynb",
    }
    assert expected <= names, f"missing notebooks: {sorted(expected - names)}"
    readme = (ROOT / "notebooks" / "README.md").read_text()
    for name in names:
        assert name in readme, f"notebooks/README.md does not mention {name}"


@pytest.mark.parametrize("path", [_params(p) for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path: Path) -> None:
    """No outputs in git, and a first code cell of parameters read from the environment."""
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(code):
        assert not cell.get("outputs") and cell.get("execution_count") is None, (
            f"{path.name}: code cell {i} holds outputs; strip them before committing"
        )
    first = code[0]
    assert "parameters" in first.get("metadata", {}).get("tags", []), (
        f"{path.name}: tag the first code cell 'parameters'"
    )
    assert "os.environ.get(" in "".join(first["source"]), (
        f"{path.name}: the parameters cell should read its budgets from the environment"
    )
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", [_params(p) for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[dev]' (nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[dev]' (nbclient)")
    pytest.importorskip("ipykernel", reason="pip install -e '.[dev]' (ipykernel)")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.fail("no 'python3' kernelspec: reinstall ipykernel into this environment")

    for name, value in SMALL_BUDGETS.items():
        monkeypatch.setenv(name, value)
    # The kernel inherits this environment: the repository importable, no network, one
    # thread per process, Jupyter's and IPython's scratch files in the temporary folder.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("DELIBERATION_MODEL", raising=False)
    monkeypatch.delenv("DELIBERATION_BASE_URL", raising=False)

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    seconds = time.perf_counter() - start
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, errors
    assert not (ROOT / "notebooks" / "runs").exists(), "a notebook wrote into the repository"
    print(f"{path.name}: {seconds:.1f} s")
