# The two commands that matter: `make run` (the app on the local stack) and `make test`.
# Everything they need (venv, Python and npm packages, certificates) is installed by these targets.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed
PYTEST_WORKERS ?= 2
# Options passed on: `make run RUN_ARGS=--no-demo`, `make bench BENCH_ARGS=--smoke` (docs/benchmarks.md).
RUN_ARGS ?=
BENCH_ARGS ?=

.PHONY: run demo test deps lint typecheck unit bench clean help

help:
	@echo "make run    start Azurite, the D365 F&O emulator and the function app locally"
	@echo "make demo   run every flow once on a fresh local stack (a smoke test; docs/demo.md)"
	@echo "make test   lint, type-check and run every test against the real local stack"
	@echo "make bench  run the benchmarks (results: docs/benchmarks.md)"

deps: $(STAMP_PY) $(STAMP_NODE)

$(STAMP_PY): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMP_NODE): package.json
	@if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; \
	 else npm install --no-audit --no-fund --loglevel=error; fi
	@touch $@

lint: $(STAMP_PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || (echo "run: $(VENV)/bin/ruff format ." && false)

typecheck: $(STAMP_PY)
	$(VENV)/bin/mypy

# The browser tests drive Debian's chromium (Playwright never downloads a browser here).
.PHONY: chromium
chromium:
	@test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get install -y --no-install-recommends chromium || \
	  { $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium; }; }

test: deps lint typecheck chromium
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

run: deps
	$(PY) -m localstack $(RUN_ARGS)

demo: deps
	$(PY) -m demo

bench: deps
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules .local .mypy_cache .ruff_cache .pytest_cache
