# topichub: every command people and CI use. `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TOOLS := .tools
WSCAT := $(TOOLS)/node_modules/.bin/wscat

.PHONY: help install tools run test check lint typecheck format bench clean

help:
	@echo "make run        create .venv, install, start topichub with the demo data"
	@echo "make test       install and run the whole test suite"
	@echo "make check      ruff + mypy (strict) + the tests: what CI runs"
	@echo "make bench      the benchmarks (not part of the tests)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "topichub needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)

# wscat (npm) drives the seed's own client in the tests; installed next to the project.
$(WSCAT):
	@command -v npm >/dev/null || { echo "npm is needed for the wscat tests (apt-get install npm)"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) wscat@6

tools: $(WSCAT)

run: install
	$(VENV)/bin/topichub serve --demo

test: install tools
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: install
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

check: lint typecheck test

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
