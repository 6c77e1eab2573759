# The two commands a new user needs: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: run demo test test-all bench lint format clean

demo: $(BIN)/activate
	$(BIN)/deliberate demo

$(BIN)/activate: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/activate

run: $(BIN)/activate
	$(BIN)/deliberate compare --preset quick --out runs/compare

test: $(BIN)/activate
	$(BIN)/python -m pytest -n 2 -q

test-all: $(BIN)/activate
	$(BIN)/python -m pytest -n 2 -q --runslow

bench: $(BIN)/activate
	$(BIN)/python benchmarks/env_speed.py
	$(BIN)/python benchmarks/llm_throughput.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/summary.py

lint: $(BIN)/activate
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(BIN)/activate
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache
