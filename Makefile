# WaveFlow: `make demo` runs the whole pipeline on this machine; `make test` runs every check.
# Every target installs what it needs into .venv on first use (Python 3.11+, make, the registries).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## Show the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

install: $(INSTALLED) ## Create .venv and install WaveFlow with everything tests and lint need

# The audio kernel is C compiled into the editable install: a change to it reinstalls too.
$(INSTALLED): pyproject.toml $(wildcard jobimage/waveflow_job/audio/kernel/*)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "WaveFlow needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

-include charts/Makefile.mk
-include charts/images/images.mk

# The browser players the demo page shows (peaks.js, wavesurfer.js), from the npm registry.
PLAYERS_DIR := operator/waveflow_dev/players
PLAYERS := $(PLAYERS_DIR)/node_modules/.package-lock.json
CHROMIUM ?= chromium
TEST_TOOLS += players tools-chromium tools-cross

players: $(PLAYERS) ## npm ci the demo page's players (peaks.js, wavesurfer.js) into operator/waveflow_dev/players

$(PLAYERS): $(PLAYERS_DIR)/package.json $(PLAYERS_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make demo needs npm (Node.js 18+) to install \
	peaks.js and wavesurfer.js for the demo page: apt-get install npm, or see nodejs.org" >&2; exit 1; }
	npm ci --prefix $(PLAYERS_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

tools-chromium: ## Debian's chromium for the demo page's browser test (skipped when on PATH)
	@if command -v $(CHROMIUM) >/dev/null 2>&1; then \
		echo "chromium: $$(command -v $(CHROMIUM))"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; \
	fi

tools-cross: ## Debian's aarch64 cross compiler: a test builds the kernel as Graviton nodes do
	@if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && [ -f /usr/aarch64-linux-gnu/include/stdio.h ]; then \
		echo "aarch64 cross compiler: $$(command -v aarch64-linux-gnu-gcc)"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			gcc-aarch64-linux-gnu libc6-dev-arm64-cross; \
	fi

lint: install chart-lint ## ruff, mypy, hadolint on both Dockerfiles, helm lint
	$(VENV)/bin/ruff check jobimage operator tests charts/dev charts/images
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint jobimage/Dockerfile operator/Dockerfile

test: install $(TEST_TOOLS) ## Run the whole test suite (installs helm, promtool and podman if missing)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

bench: install tools-podman ## Benchmarks: waveform speed/memory vs the naive baseline, dispatch latency, image sizes and job start-up
	$(PY) tests/bench/bench_waveform.py
	$(PY) tests/bench/bench_local.py
	$(PY) tests/bench/bench_dispatch.py
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) tests/bench/bench_images.py

soak: install ## Load at full size: 1,000+ mixed messages under seeded faults; prints the figures
	WAVEFLOW_LOAD_MESSAGES=$${WAVEFLOW_LOAD_MESSAGES:-1000} \
		WAVEFLOW_LOAD_KILLS=$${WAVEFLOW_LOAD_KILLS:-3} $(PY) -m pytest \
		tests/reliability/test_load.py -s -p no:logging $(PYTEST_ARGS)

fuzz: install ## Hostile-input fuzzers at full size (messages, audio): WAVEFLOW_FUZZ_EXAMPLES=2000
	WAVEFLOW_FUZZ_EXAMPLES=$${WAVEFLOW_FUZZ_EXAMPLES:-2000} $(PY) -m pytest -s -p no:logging \
		tests/reliability/test_hostile_messages.py tests/reliability/test_hostile_audio.py \
		--timeout=5400 $(PYTEST_ARGS)

demo: install players ## The whole pipeline end to end on this machine: no AWS, no cluster
	$(VENV)/bin/waveflow demo --players $(PLAYERS_DIR)/node_modules

schemas: install ## Re-export the contract's JSON Schemas to docs/schemas
	$(PY) -m waveflow_job.contract docs/schemas

clean: ## Remove the virtualenv, caches and demo output
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output $(PLAYERS_DIR)/node_modules

.PHONY: help install lint test bench soak fuzz demo schemas clean players tools-chromium tools-cross
