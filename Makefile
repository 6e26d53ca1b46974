# Developer and CI entry points.
#   make test   installs what is missing (Orthanc, DCMTK, Chromium, Node via apt-get; .venv with
#               the test extras), then runs the test suite. The README's test command.
#   make lint   ruff check, ruff format --check, mypy --strict gateway
#   make bench  benchmarks under tests/bench (side by side with DCMTK/Orthanc)
#   make conformance-report  regenerates docs/conformance.md (gateway vs Orthanc's plugin)
# PY is the virtualenv's python when .venv exists, else the system python3.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,$(PYTHON))
SUDO    = $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install system-deps test lint bench demo conformance-report

# The PACS the tests run against; apt-get only when one is missing.
system-deps:
	@if ! command -v dcmqrscp >/dev/null 2>&1 || ! test -x /usr/sbin/Orthanc \
	    || ! test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so \
	    || ! test -x /usr/bin/chromium || ! command -v npm >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends --no-upgrade \
	    orthanc orthanc-dicomweb dcmtk chromium $$(command -v npm >/dev/null 2>&1 || echo nodejs npm); \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# pyproject's addopts deselect the bench and slow markers.
test: system-deps install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --strict gateway

bench: system-deps install
	$(PY) -m pytest -m bench tests/bench -s -p no:cacheprovider

demo: install
	$(VENV)/bin/dicomweb-gateway demo

# The conformance suite against the gateway (in front of Orthanc and dcmqrscp)
# and against Orthanc's own DICOMweb plugin, side by side.
conformance-report: system-deps install
	$(PY) -m tests.conformance_report --out docs/conformance.md
