"""clm-email, installed and used the way a third-party plugin is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import clm_email
import pytest
import sqlite_utils

from clm_engine import Engine, ReducerError, VirtualClock
from clm_engine.plugins import get_migrations, pm

NAME = "email"
TABLES = {"email_messages", "email_suppressions"}

DISCOVER = """
import json
from clm_engine.plugins import get_plugin_info, load_plugins
load_plugins()
print(json.dumps([[i.name, i.source, i.version, list(i.hooks)] for i in get_plugin_info()]))
"""


@pytest.fixture
def plugin(monkeypatch):
    # clm_engine loads plugins once per process, and the core's tests run in this process with
    # no external plugin: register the module directly and leave the manager as it was found.
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    added = pm.get_plugin(NAME) is None
    if added:
        pm.register(clm_email, name=NAME)
    try:
        yield clm_email
    finally:
        if added:
            pm.unregister(name=NAME)


@pytest.fixture
def engine(plugin, tmp_path):
    with Engine(tmp_path / "x.db", clock=VirtualClock()) as engine:
        yield engine


def event(type_, properties=None, *, contact_id="c1", at="2026-03-01T10:00:00Z", **extra):
    return {
        "contact_id": contact_id,
        "type": type_,
        "occurred_at": at,
        "properties": properties or {},
        **extra,
    }


def test_discovered_through_its_entry_point():
    # In a fresh process: this one's plugin manager is shared with the core's tests.
    env = {**os.environ, "CLM_LOAD_PLUGINS": NAME}
    done = subprocess.run(
        [sys.executable, "-c", DISCOVER], env=env, capture_output=True, text=True, check=True
    )
    loaded = {name: rest for name, *rest in json.loads(done.stdout)}
    source, version, hooks = loaded[NAME]
    assert (source, version) == ("clm-email", "0.1.0")
    assert set(hooks) == {"register_reducers", "register_migrations", "forget_contact"}
    # CLM_LOAD_PLUGINS is an allow-list: the other installed plugins stay out.
    assert "referral" not in loaded and "warranty" not in loaded


def test_migrations_create_the_tables_once(engine, tmp_path):
    db = engine.store.db
    assert set(db.table_names()) >= TABLES
    assert {tuple(i.columns) for i in db["email_messages"].indexes} >= {("contact_id",)}
    assert db["email_messages"].columns_dict["idempotency_key"] is str
    # Applying again is a no-op, in this store and in a new one on the same file.
    assert engine.store.migrate(get_migrations()) == []
    with Engine(tmp_path / "x.db") as again:
        assert set(again.store.db.table_names()) >= TABLES
    applied = db.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = 'clm_email'"
    ).fetchall()
    assert applied == [("m001_initial",)]


def test_migrations_stay_inside_the_callers_transaction():
    db = sqlite_utils.Database(memory=True)
    db.conn.execute("BEGIN")
    clm_email.migrations.apply(db)
    assert set(db.table_names()) >= TABLES
    db.conn.execute("ROLLBACK")  # executescript() would have committed: nothing to roll back
    assert not TABLES & set(db.table_names())
    clm_email.migrations.apply(db)
    clm_email.migrations.apply(db)
    assert set(db.table_names()) >= TABLES


def test_bounces_count_and_a_hard_bounce_withdraws_consent(engine):
    engine.ingest(event("signup", {"email": "ada@example.com", "consent": {"email": True}}))
    engine.ingest(event("email.bounced", {"type": "soft"}, at="2026-03-02T08:00:00Z"))
    contact = engine.contact("c1")
    assert contact.metrics["email_bounces"] == 1
    assert contact.consent["email"] is True
    assert "email_hard_bounced_at" not in contact.metrics

    bounce = {"type": "hard", "address": "ada@example.com"}
    engine.ingest(event("email.bounced", bounce, at="2026-03-03T09:30:00Z"))
    contact = engine.contact("c1")
    assert contact.metrics["email_bounces"] == 2
    assert contact.consent["email"] is False
    assert contact.metrics["email_hard_bounced_at"] == "2026-03-03T09:30:00Z"


def test_a_bounce_without_a_type_is_a_recorded_failure(engine):
    engine.ingest(event("signup", {"email": "ada@example.com", "consent": {"email": True}}))
    before = engine.contact("c1")
    with pytest.raises(ReducerError, match="'hard' or 'soft'"):
        engine.ingest(event("email.bounced", {"type": "permanent"}, id="bounce-1"))
    assert engine.contact("c1") == before
    [failure] = engine.store.failures()
    assert failure["event_id"] == "bounce-1"
    assert failure["reducer"] == "email.bounced"


def test_forget_removes_the_contacts_rows(engine):
    engine.ingest(event("signup", {"email": "ada@example.com"}))
    db = engine.store.db
    db["email_messages"].insert_all(
        [
            {"contact_id": "c1", "idempotency_key": "welcome:c1", "to_address": "ada@example.com"},
            {"contact_id": "c2", "idempotency_key": "welcome:c2", "to_address": "bob@example.com"},
        ]
    )
    db["email_suppressions"].insert(
        {"address": "ada@example.com", "contact_id": "c1", "reason": "hard_bounce"}
    )
    removed = engine.forget("c1")
    assert removed["email:email_messages"] == 1
    assert removed["email:email_suppressions"] == 1
    assert [r["contact_id"] for r in db["email_messages"].rows] == ["c2"]
    assert db["email_suppressions"].count == 0
