"""clm-referral, installed and used the way a third-party plugin is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import clm_referral
import pytest
import sqlite_utils

from clm_engine import Engine, ReducerError, VirtualClock
from clm_engine.plugins import get_migrations, pm

NAME = "referral"
TABLES = {"referral_codes", "referral_attributions"}

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
        pm.register(clm_referral, name=NAME)
    try:
        yield clm_referral
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
    assert (source, version) == ("clm-referral", "0.1.0")
    assert set(hooks) == {"register_reducers", "register_migrations", "forget_contact"}
    # CLM_LOAD_PLUGINS is an allow-list: the other installed plugins stay out.
    assert "email" not in loaded and "warranty" not in loaded


def test_migrations_create_the_tables_once(engine, tmp_path):
    db = engine.store.db
    assert set(db.table_names()) >= TABLES
    assert {tuple(i.columns) for i in db["referral_codes"].indexes} >= {("contact_id",)}
    indexes = {tuple(i.columns) for i in db["referral_attributions"].indexes}
    assert ("referrer_contact_id",) in indexes
    # Applying again is a no-op, in this store and in a new one on the same file.
    assert engine.store.migrate(get_migrations()) == []
    with Engine(tmp_path / "x.db") as again:
        assert set(again.store.db.table_names()) >= TABLES
    applied = db.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = 'clm_referral'"
    ).fetchall()
    assert applied == [("m001_initial",)]


def test_migrations_stay_inside_the_callers_transaction():
    db = sqlite_utils.Database(memory=True)
    db.conn.execute("BEGIN")
    clm_referral.migrations.apply(db)
    assert set(db.table_names()) >= TABLES
    db.conn.execute("ROLLBACK")  # executescript() would have committed: nothing to roll back
    assert not TABLES & set(db.table_names())
    clm_referral.migrations.apply(db)
    clm_referral.migrations.apply(db)
    assert set(db.table_names()) >= TABLES


def test_signup_records_the_first_referrer(engine):
    engine.ingest(event("referral.signup", {"referrer_id": "c7", "code": "ADA-7"}))
    assert engine.contact("c1").attributes["referred_by"] == "c7"
    engine.ingest(event("referral.signup", {"referrer_id": "c8"}, at="2026-03-05T10:00:00Z"))
    assert engine.contact("c1").attributes["referred_by"] == "c7"
    # A late event is folded in time order: the earliest referral wins, whenever it arrives.
    engine.ingest(event("referral.signup", {"referrer_id": "c9"}, at="2026-02-01T10:00:00Z"))
    assert engine.contact("c1").attributes["referred_by"] == "c9"


def test_sent_referrals_are_counted_on_the_referrer(engine):
    engine.ingest(event("referral.sent", contact_id="c7", at="2026-03-01T10:00:00Z"))
    engine.ingest(event("referral.sent", contact_id="c7", at="2026-03-02T10:00:00Z"))
    assert engine.contact("c7").metrics["referrals_sent"] == 2


def test_a_signup_without_referrer_is_a_recorded_failure(engine):
    engine.ingest(event("signup", {"email": "ada@example.com"}))
    before = engine.contact("c1")
    with pytest.raises(ReducerError, match="referrer_id"):
        engine.ingest(event("referral.signup", {"code": "ADA-7"}, id="signup-1"))
    assert engine.contact("c1") == before
    [failure] = engine.store.failures()
    assert failure["event_id"] == "signup-1"
    assert failure["reducer"] == "referral.signup"


def test_a_contact_cannot_refer_themselves(engine):
    with pytest.raises(ReducerError, match="cannot refer themselves"):
        engine.ingest(event("referral.signup", {"referrer_id": "c1"}))
    assert engine.contact("c1") is None


def test_forget_removes_the_contacts_rows(engine):
    engine.ingest(event("referral.sent"))
    db = engine.store.db
    db["referral_codes"].insert_all(
        [{"code": "ADA-1", "contact_id": "c1"}, {"code": "BOB-2", "contact_id": "c2"}]
    )
    db["referral_attributions"].insert_all(
        [
            {"referred_contact_id": "c1", "referrer_contact_id": "c9", "code": "EVE-9"},
            {"referred_contact_id": "c2", "referrer_contact_id": "c1", "code": "ADA-1"},
            {"referred_contact_id": "c3", "referrer_contact_id": "c4", "code": "DAN-4"},
        ]
    )
    removed = engine.forget("c1")
    assert removed["referral:referral_codes"] == 1
    assert removed["referral:referral_attributions"] == 2
    assert [r["code"] for r in db["referral_codes"].rows] == ["BOB-2"]
    assert [r["referred_contact_id"] for r in db["referral_attributions"].rows] == ["c3"]
