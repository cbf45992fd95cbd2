# claude-gateway: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
# `make test` runs this many pytest processes (pytest-xdist), each taking whole test files (module fixtures start
# once). On two cores: one process 860 s; here two took 685 to 723 s and three 470 to 526 s (much of a
# test's time is waiting on the servers it starts). TEST_PROCESSES=0 runs it in this one process.
TEST_PROCESSES ?= 3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := $(CURDIR)/.tools
export PATH := $(TOOLS)/bin:$(PATH)

.PHONY: help install run test lint format bench

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# Every dependency from the hashed lock (make lock), then the gateway itself, editable, without dependencies.
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the gateway with its dev tools

run: $(STAMP) ## serve the gateway on http://127.0.0.1:8000 (the bundled simulator when ANTHROPIC_API_KEY is unset)
	$(BIN)/claude-gateway dev --host 127.0.0.1 --port 8000

test: $(STAMP) ## run every test (starts its own redis-server, simulator, ... on free ports)
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP) ## ruff + mypy (and promtool on the alert rules, when it is installed; always under CI=true)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy service tests bench
	$(BIN)/python -c 'import claude_gateway'
	@if command -v promtool >/dev/null || [ "$$CI" = true ]; then $(MAKE) --no-print-directory lint-observability; \
	else echo "promtool not found: alert rules not checked (apt-get install prometheus)"; fi

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix service tests bench
	$(BIN)/ruff format service tests bench

bench: $(STAMP) ## the benchmarks, side by side in one run, printing ratios
	$(BIN)/python -m bench $(BENCH_ARGS)

-include make/*.mk
