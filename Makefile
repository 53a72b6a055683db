# The two commands: `make run` (CoinLink on the embedded default) and `make test` (everything).
# Every install comes from the hash-pinned locks in requirements/ (see its README).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --require-hashes --no-deps
LOCK := $(BIN)/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 \
	--custom-compile-command "make lock" $(LOCK_FLAGS)

.PHONY: run test lint lock image bench clean

$(BIN)/activate:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "CoinLink needs Python 3.11: set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.build-deps: $(BIN)/activate requirements/build.txt
	$(PIP) -r requirements/build.txt
	touch $@

# --no-deps everywhere: the lock already names every package, so nothing else is resolved;
# `pip check` then fails if the lock misses something a package needs.
$(VENV)/.run-deps: $(VENV)/.build-deps requirements/runtime.txt setup.cfg pyproject.toml
	$(PIP) -r requirements/runtime.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

$(VENV)/.test-deps: $(VENV)/.build-deps requirements/dev.txt setup.cfg pyproject.toml \
		clients/python/pyproject.toml
	$(PIP) -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	# The Python client (its dependencies, httpx and websockets, are in the dev lock).
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e clients/python
	$(BIN)/python -m pip check
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/coinlink serve

test: $(VENV)/.test-deps
	bash scripts/ensure-servers.sh
	bash scripts/run-tests.sh

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check coinlink config blueprints models scripts clients/python
	$(BIN)/mypy

# Runtime first; the dev lock is constrained by it, so both hold the same runtime pins.
# The tools (uv) come from the current lock without `pip check`: setup.cfg may already name
# a package the lock does not hold yet, which is why the lock is being made.
lock: $(VENV)/.build-deps
	$(PIP) -r requirements/dev.txt
	$(LOCK) requirements/build.in -o requirements/build.txt
	$(LOCK) setup.cfg -o requirements/runtime.txt
	$(LOCK) setup.cfg --extra test --extra bench --extra dev \
		--constraint requirements/runtime.txt -o requirements/dev.txt

# Builds the Dockerfile and runs the image against real PostgreSQL and Redis.
image: $(VENV)/.test-deps
	bash scripts/ensure-servers.sh
	bash scripts/check-image.sh

# Every benchmark, side by side in production mode, written to docs/bench/ (the report with
# its plots); the hour-long soak is its own command, `python -m bench.soak --minutes 60`.
bench: $(VENV)/.test-deps
	bash scripts/ensure-servers.sh
	$(BIN)/python -m bench.report

clean:
	rm -rf $(VENV) var .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache
