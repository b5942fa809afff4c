# Two entry points: `make book` (set up, build the book) and `make test` (set up, run every test).
# `make setup` alone creates .venv (JupyterLab included); `make lab` opens the chapters in it.
# In CI (CI=true) torch is pinned by ci/constraints.txt.

VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := $(if $(filter true 1,$(CI)),-c ci/constraints.txt,)
CAMVID_MINI := $(abspath ../shared/data/camvid-mini)
TEST_ENV := OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HAFORMER_SMOKE=1 $(if $(wildcard $(CAMVID_MINI)),CAMVID_ROOT=$(CAMVID_MINI),)
# The browser test's local MathJax (ci/package.json), installed when npm is there.
MATHJAX := ci/node_modules/mathjax/package.json
NPM := $(shell command -v npm 2>/dev/null)

.PHONY: setup book test lint lab

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -r requirements-dev.txt
	touch $@

$(MATHJAX): ci/package.json ci/package-lock.json
	npm ci --prefix ci --no-audit --no-fund
	touch $@

book: setup
	$(BIN)/jupyter-book build . --all -W -n --keep-going

# JupyterLab in book/ (LAB_ARGS: more options, e.g. --no-browser --port=8890).
lab: setup
	cd book && $(abspath $(BIN))/jupyter-lab $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint $(if $(NPM),$(MATHJAX),)
	$(TEST_ENV) $(BIN)/python -m pytest -n 2 --dist loadgroup --nbmake tests book
