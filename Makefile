# The two commands of the README: `make demo` and `make test`. Everything else is set-up they need.
VENV    := .venv
PY      := $(VENV)/bin/python
CLM     := $(VENV)/bin/clm
STAMP   := $(VENV)/.installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: demo test lint install clean system-packages

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

# What the tests need from the system, installed when missing (CI runs as root on a fresh
# Debian machine), with one `apt-get update`: the PostgreSQL server's binaries (the tests start
# a throwaway cluster, tests/postgres.py) and Chromium (the HTML report's test opens the page).
system-packages:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	    echo "installing for the tests:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

test: lint system-packages
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) .demo
