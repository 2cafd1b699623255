# The two commands of the README: `make demo` and `make test`. Everything else is set-up they need.
VENV    := .venv
PY      := $(VENV)/bin/python
CLM     := $(VENV)/bin/clm
STAMP   := $(VENV)/.installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)

.PHONY: demo test lint install clean

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

test: lint
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) .demo
