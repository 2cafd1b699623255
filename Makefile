# The two commands of the README: `make demo` and `make test`. Everything else is set-up they need.
VENV    := .venv
PY      := $(VENV)/bin/python
CLM     := $(VENV)/bin/clm
STAMP   := $(VENV)/.installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: demo test lint install clean postgres-server

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Core and every plugin under plugins/, editable, with dev extras; redone when a pyproject changes.
$(STAMP): pyproject.toml $(PLUGINS) | $(PY)
	$(PY) -m pip install -q -e '.[dev,bench]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The tests start a throwaway PostgreSQL cluster with the server's binaries (tests/postgres.py):
# install Debian's package when they are missing (CI runs as root on a fresh machine).
postgres-server:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	    echo "installing the PostgreSQL server (Debian's postgresql package) for the tests"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	fi

test: lint postgres-server
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) .demo
