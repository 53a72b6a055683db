# The two commands: `make run` (CoinLink on the embedded default) and `make test` (everything).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/activate:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "CoinLink needs Python 3.11: set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-deps: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/coinlink serve

test: $(VENV)/.test-deps
	bash scripts/ensure-servers.sh
	bash scripts/run-tests.sh

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check coinlink config blueprints models
	$(BIN)/mypy

bench: $(VENV)/.test-deps
	$(BIN)/python -m bench.http

clean:
	rm -rf $(VENV) var .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
