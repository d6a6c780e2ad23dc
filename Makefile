# Quick start: `make demo` and `make test` on a fresh machine. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt
JOBS ?= 2

.PHONY: help install dev system demo test test-fast schemas bench clean

help:
	@echo "make demo    - install and run the GNAP demo on the bundled digits data"
	@echo "make test    - install with the dev extra and run the whole test suite"
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

test: dev system
	$(PY) -m pytest -n $(JOBS) -q

test-fast: dev
	$(PY) -m pytest -n $(JOBS) -q -m "not slow"

schemas: install
	$(PY) -m archgraph schema -o schemas

bench: dev
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
