# The two commands a new user needs: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: run demo test test-all test-min test-integrations bench lint format clean

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

# The oldest supported pettingzoo, gymnasium and transformers (torch: the CPU wheel 2.13.0,
# its floor is not exercised here), in .venv-min, on the fast tests.
MIN_VENV ?= .venv-min
MIN_PINS := torch==2.13.0 torchvision==0.28.0 pettingzoo==1.24.3 gymnasium==1.1.0 transformers==4.45.0
$(MIN_VENV)/bin/activate: pyproject.toml
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	printf '%s\n' $(MIN_PINS) > $(MIN_VENV)/constraints.txt
	$(MIN_VENV)/bin/pip install --quiet -c $(MIN_VENV)/constraints.txt torch==2.13.0 -e ".[dev]"
	touch $(MIN_VENV)/bin/activate

# PettingZoo < 1.27 has no registry: tests/test_conformance.py skips its registry tests.
MIN_TESTS ?=
test-min: $(MIN_VENV)/bin/activate
	$(MIN_VENV)/bin/python -m pytest -n 2 -q $(MIN_TESTS)

# RLlib, TorchRL/BenchMARL, Tianshou and AgileRL, each in its own venv (.ci/integrations).
test-integrations:
	bash .ci/integrations

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

# Keeps runs/*.sqlite: a response cache holds paid-for LLM replies.
clean:
	rm -rf $(VENV) .pytest_cache
	test ! -d runs || find runs -mindepth 1 -maxdepth 1 ! -name '*.sqlite' -exec rm -rf {} +

# The mpdf-bench-v1 leaderboard (docs/benchmark.md): every built-in learner but SB3 PPO,
# with every heuristic and the oracle, 3 seeds, 2 workers; --resume continues a killed run.
.PHONY: bench-suite
bench-suite: $(BIN)/activate
	$(BIN)/python -m experiments.bench --suite mpdf-bench-v1 --algo softrankpo --algo grpo \
		--algo ppo --algo reinforce --algo sft --seeds 3 --workers 2 --out runs/bench-suite --resume
