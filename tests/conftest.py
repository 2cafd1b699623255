from __future__ import annotations

import importlib
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from clm_engine import Engine, VirtualClock
from clm_engine.cli import cli
from clm_engine.testing import registered

#: The plugins the example rulesets in rulesets/ use, by entry point name.
EXAMPLE_PLUGINS = {"email": "clm_email", "referral": "clm_referral", "warranty": "clm_warranty"}


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 11, 2, 12, 0, tzinfo=UTC))


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``clm ARGS`` in ``tmp_path``; an exception escaping the command fails the test."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "clm.db"


@pytest.fixture
def engine(db_path, clock):
    with Engine(db_path, clock=clock) as engine:
        yield engine


@pytest.fixture
def example_plugins():
    """The plugins the shipped example rulesets need, registered for the test (the root
    conftest loads no installed plugin, so each test says what it uses)."""
    with ExitStack() as stack:
        for name, module in EXAMPLE_PLUGINS.items():
            stack.enter_context(registered(importlib.import_module(module), name))
        yield
