# Developer and CI entry points. `make install` once, then `make test` / `make lint`.
# PY is the virtualenv's python when .venv exists (so CI and developers run the
# same interpreter and packages), else the system python3.
VENV   ?= .venv
PYTHON ?= python3
PY     ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,$(PYTHON))

.PHONY: install test lint bench

install:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'

# pyproject's addopts already deselect the bench and slow markers.
test:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --strict gateway

bench:
	$(PY) -m pytest -m bench tests/bench -s
