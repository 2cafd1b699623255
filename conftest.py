"""Shared by the core's and the plugins' tests.

Tests must not pick up whatever plugins happen to be installed: external plugins load only
when a test registers them itself (see ``tests/plugins``) or runs a subprocess that asks.
"""

import os
from contextlib import ExitStack

import pytest

os.environ["CLM_LOAD_PLUGINS"] = ""


@pytest.fixture(autouse=True, scope="session")
def _email_outbox(tmp_path_factory):
    """Tests that dispatch the example drips write their .eml files here, never into the
    working directory (the email plugin's file transport defaults to ./outbox)."""
    os.environ["CLM_EMAIL_OUTBOX"] = str(tmp_path_factory.mktemp("outbox"))


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL cluster (``tests/postgres.py``), started once per session."""
    from tests.postgres import running_cluster

    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster):
    """The URL of a fresh database with the core's schema on the session's cluster."""
    with postgres_cluster.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request, tmp_path):
    """``new_store(name)``: where a new, empty store of the parametrised kind is (a SQLite file
    in ``tmp_path``, or the URL of a new database on the session's PostgreSQL cluster); a test
    taking it runs on both."""
    if request.param == "sqlite":
        yield lambda name: tmp_path / name
        return
    cluster = request.getfixturevalue("postgres_cluster")
    with ExitStack() as stack:
        yield lambda name: stack.enter_context(cluster.database())
