# The two set-up commands of the README: `make demo` and `make test`.
# Each creates its own virtual environment in $(VENV) and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: demo test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime install (the demo needs no torch).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# Test install: torch's CPU build first (pinned: an unpinned torch pulls a multi-GB CUDA
# build), then the [compare], [dev] and [c4] extras.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[compare,dev,c4]"
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/mesh-t5 demo --output_dir=$(OUT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check mesh_t5 tests benchmarks
	$(BIN)/ruff format --check mesh_t5 tests benchmarks

test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

format: $(VENV)/.installed-test
	$(BIN)/ruff format mesh_t5 tests benchmarks
	$(BIN)/ruff check --fix mesh_t5 tests benchmarks

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.run $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
