from __future__ import annotations

from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from clm_engine import Engine, VirtualClock
from clm_engine.cli import cli
from tests.helpers import STORE

#: The plugins the example rulesets in rulesets/ use, by entry point name.
EXAMPLE_PLUGINS = ("email", "referral", "warranty", "sms", "loyalty", "webhook")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 11, 2, 12, 0, tzinfo=UTC))


@pytest.fixture
def run(tmp_path, monkeypatch):
    """``clm ARGS`` in ``tmp_path``; an exception escaping the command fails the test."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, registry=None):
        """``registry``: the plugins of this run (a ``Registry``), else what ``clm`` loads."""
        return CliRunner().invoke(cli, list(args), catch_exceptions=False, obj=registry)

    return invoke


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "clm.db"


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, db_path, clock):
    """An engine on a new store: a SQLite file (``db_path``), or a new PostgreSQL database."""
    target = request.getfixturevalue("postgres_url") if request.param == "postgres" else db_path
    with Engine(target, clock=clock) as engine:
        yield engine


@pytest.fixture
def example_plugins(monkeypatch):
    """The installed plugins the shipped example rulesets need, loaded from their entry points
    by every engine and ``clm`` run of the test (the root conftest allows none, so each test
    says what it uses)."""
    monkeypatch.setenv("CLM_LOAD_PLUGINS", ",".join(EXAMPLE_PLUGINS))


@pytest.fixture(params=["sqlite", "postgres"])
def on_store(request):
    """Run the test on each store: ``tests.helpers.store_in`` opens the test's engines on it."""
    if request.param == "postgres":
        STORE["url"] = request.getfixturevalue("postgres_url")
    yield request.param
    STORE.clear()
