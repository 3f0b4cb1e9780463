# The two set-up commands of the README. Both create .venv at the repo root on first use.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet
FLUXEDIT := $(VENV)/bin/fluxedit
# The model `make serve` uses: the real one by default; MODEL=tiny runs anywhere (its images are noise).
MODEL ?= black-forest-labs/FLUX.1-Kontext-dev

.PHONY: serve test install install-test lint clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The service: API, queue and workers on http://127.0.0.1:8000, data in ./fluxedit-data.
serve: install
	$(FLUXEDIT) serve --model $(MODEL)

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

test: install-test lint
	$(PY) -m pytest

clean:
	rm -rf $(VENV) out
