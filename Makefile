# Every target creates .venv in the repository root when it is missing, then acts.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0
# No RAY_AUTH_MODE here: a private local Ray then gets Ray's token auth by default (it listens on
# all interfaces), and a cluster keeps its own mode. Only the test targets turn it off.
TEST_ENV := RAY_AUTH_MODE=disabled
export PYTHONUNBUFFERED := 1

.PHONY: install reproduce test test-all lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch/torchvision first and exactly: on this machine they come from local disk in seconds.
	$(PIP) install -q --no-compile torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q --no-compile -e '.[dev]'
	# pip byte-compiles what it installs one file at a time (70 of the install's 127 s on 2 cores,
	# 2026-12-05); compileall does the same on every core (35 s). A few files only newer Pythons
	# parse (torch's py312_intrinsics.py) fail here as they fail silently under pip: not an error.
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null 2>&1 || true
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH dvc repro

test: $(STAMP)
	$(TEST_ENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest

test-all: $(STAMP)
	$(TEST_ENV) PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check ddrn pipeline tests benchmarks

bench: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m benchmarks

clean-venv:
	rm -rf $(VENV)

# The paper path (issue 15): CUDA checks in one go, and the full-size paper profile on the CPU.
.PHONY: gpu-check paper-smoke
gpu-check: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m benchmarks.gpu_check

paper-smoke: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -m slow -s tests/pipeline/test_paper_smoke.py
