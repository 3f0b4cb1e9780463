# The two set-up commands of the README. Both create .venv at the repo root on first use.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet
FLUXEDIT := $(VENV)/bin/fluxedit
# The model `make serve` uses: the real one by default; MODEL=tiny runs anywhere (its images are noise).
MODEL ?= black-forest-labs/FLUX.1-Kontext-dev

.PHONY: serve test screenshots install install-test browser postgres lint clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test browser postgres

# The playground's tests drive Debian's chromium through Playwright (which never downloads a browser
# here). As root it is installed when missing; otherwise those tests skip, saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "chromium is missing: the browser tests will be skipped (as root: apt-get install -y chromium)"; \
	  fi; }

# The PostgreSQL tests start a throwaway cluster of Debian's server (tests/postgres.py). As root it is
# installed when missing; otherwise those tests skip, saying so.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else \
	    echo "postgresql is missing: the PostgreSQL tests will be skipped (as root: apt-get install -y postgresql)"; \
	  fi; }

# The service: API, queue and workers on http://127.0.0.1:8000, data in ./fluxedit-data.
serve: install
	$(FLUXEDIT) serve --model $(MODEL)

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# The Ray cluster tests (tests/cluster) run after the rest, inside a loopback-only network namespace that the
# script makes and removes (as root; otherwise they are skipped, saying why).
test: install-test lint
	$(PY) -m pytest -m "not cluster"
	PY=$(PY) tests/cluster/run_in_netns.sh

# Screenshots of every test run land in build/screenshots/ (git-ignored); this refreshes the tracked
# docs pictures (playground.png, the batch grid's and the mask tool's) from fresh runs of their tests, on purpose.
screenshots: install-test
	FLUXEDIT_UPDATE_DOCS_SCREENSHOT=1 FLUXEDIT_REQUIRE_BROWSER=1 $(PY) -m pytest \
	  tests/web/test_edit_flow.py tests/web/test_batch_grid.py tests/web/test_mask_tool.py

clean:
	rm -rf $(VENV) out
