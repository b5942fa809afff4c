# Two entry points: `make book` (set up, build the book) and `make test` (set up, run every test).
# `make setup` alone creates .venv. In CI (CI=true) torch is pinned by ci/constraints.txt.

VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := $(if $(filter true 1,$(CI)),-c ci/constraints.txt,)
CAMVID_MINI := $(abspath ../shared/data/camvid-mini)
TEST_ENV := OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HAFORMER_SMOKE=1 $(if $(wildcard $(CAMVID_MINI)),CAMVID_ROOT=$(CAMVID_MINI),)

.PHONY: setup book test lint

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(CONSTRAINTS) -r requirements-dev.txt
	touch $@

book: setup
	$(BIN)/jupyter-book build . --all -W -n --keep-going

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(TEST_ENV) $(BIN)/python -m pytest -n 2 --dist loadgroup --nbmake tests book
