# Two commands on a fresh machine: `make leak-test` (the main job) and `make test`.
# Both bootstrap the project virtualenv (.venv) and the system packages they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# Test processes for `make test` (pytest-xdist): local and compose stacks run side by side,
# one stack per process (--dist loadscope: a module, or a self-test class of cells, stays in
# one process), the costliest scopes first (tests/conftest.py orders them; xdist's own
# reorder, by test count, is off). Most of a cell is the server's waiting (git timeouts,
# outages, boots), so 4 processes overlap on 2 cores; the compose backend's up/down wait in
# line for the engine (harness/stack/compose_cli.py). TEST_JOBS=0 runs everything in one process.
TEST_JOBS ?= 4

.PHONY: setup sysdeps lint test unit leak-test gates scale bench up down status clean logs distclean images-offline replay

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

setup: $(STAMP) sysdeps

# Installs redis-server, postgresql, git with apt when run as root; otherwise prints the command.
sysdeps: $(STAMP)
	$(BIN)/python -m harness.sysdeps ensure

## The project's tests: unit, integration (real stacks on 0.9.6 and 0.9.9), gate self-test.
test: setup
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

## The linters CI runs before the tests: ruff (lint) and mypy (types) over the harness.
lint: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/ruff check harness tests
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

# The gate runs judge against the shipped baseline of the target release when one exists
# (harness/baselines/opal-server-<v>.json): its known failures are xfail with their reason, a new
# failure fails. HARNESS_BASELINE=none turns it off; HARNESS_BASELINE=<file> uses your own.
GATE_BASELINE = $${HARNESS_BASELINE:-auto}

## The main job: the leak and repeat-sync gates against OPAL_VERSION / OPAL_SOURCE.
leak-test: setup
	HARNESS_BASELINE="$(GATE_BASELINE)" $(BIN)/pytest tests/gates -m "leak or repeat_sync" $(PYTEST_ARGS)

## Every gate.
gates: setup
	HARNESS_BASELINE="$(GATE_BASELINE)" $(BIN)/pytest tests/gates $(PYTEST_ARGS)

## An incident replayed from a scenario file or a shipped incident, judged and plotted:
## `make replay SCENARIO=git-host-outage` (REPLAY_ARGS="--version 0.9.6 --duration 8h" for a soak).
SCENARIO ?= git-host-outage
REPLAY_ARGS ?=
replay: setup
	$(BIN)/harness replay $(SCENARIO) $(REPLAY_ARGS)

## The cost curve: the server at N = 10, 100, 1,000, 5,000, 10,000 scopes, 0.9.6 and 0.9.9 on one
## plot (reports/<run>-scale/scale.json, plots/scale.png). E.g. SCALE_ARGS="--scopes 10,100,1000".
SCALE_ARGS ?=
scale: setup
	$(BIN)/harness scale $(SCALE_ARGS)

## Setup costs: server venv (cached; BENCH_ARGS=--cold adds a cold install), seeding 200 repos, stack up/down.
BENCH_ARGS ?=
bench: setup
	$(BIN)/python -m harness.bench $(BENCH_ARGS)

## The compose backend's offline image set (debootstrap'd base, no container registry; needs root).
images-offline: $(STAMP)
	$(BIN)/python -m harness.images build-offline

up: setup
	$(BIN)/harness up

down: $(STAMP)
	$(BIN)/harness down

status: $(STAMP)
	$(BIN)/harness status

clean: $(STAMP)
	$(BIN)/harness clean

logs:
	@ls -1 reports/latest/logs 2>/dev/null || echo "no report yet: run make leak-test or make gates"

distclean: clean
	rm -rf $(VENV) reports .pytest_cache
