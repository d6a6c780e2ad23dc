# Quick start: `make demo` and `make test` on a fresh machine. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt
JOBS ?= 2

.PHONY: help install dev system demo test test-fast lint schemas bench clean

help:
	@echo "make demo    - install and run the GNAP demo on the bundled digits data"
	@echo "make test    - install with the dev extra and run the whole test suite"
	@echo "make lint    - ruff and mypy (also part of make test)"
	@echo "make schemas - regenerate the JSON Schemas in schemas/"
	@echo "make bench   - run the benchmarks in benchmarks/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml constraints.txt
	$(PIP) install $(PIP_FLAGS) -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install $(PIP_FLAGS) -e ".[dev]"
	@touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# System tools: graphviz's dot (pictures) and Chromium with its driver (the report's browser test).
system:
	@bash scripts/system-deps.sh

demo: install system
	$(PY) -m archgraph validate examples/seeds/*.yaml
	rm -rf runs/digits_gnap
	$(PY) -m archgraph grow examples/digits_gnap.yaml --out runs/digits_gnap
	$(PY) -m archgraph report runs/digits_gnap
	$(PY) -m archgraph render runs/digits_gnap -o runs/digits_gnap/history.svg
	@echo "open runs/digits_gnap/report.html to see how the network grew"

test: dev system
	$(PY) -m pytest -n $(JOBS) -q

test-fast: dev
	$(PY) -m pytest -n $(JOBS) -q -m "not slow"

# ruff and mypy as configured in pyproject.toml (tests/test_lint.py runs both in the suite too)
lint: dev
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

schemas: install
	$(PY) -m archgraph schema -o schemas

bench: dev
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
