"""clm-email, installed and used the way a third-party plugin is."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import clm_email
import pytest
from clm_email import policy, store
from clm_email.settings import EmailSettings

from clm_engine import Contact, Engine, Event, VirtualClock
from clm_engine.channels import FrequencyCap
from clm_engine.store import open_store
from clm_engine.testing import check_rejected, check_tables, discover
from clm_engine.testing import make_event as event

NAME = "email"
TABLES = {"email_messages", "email_suppressions", "email_enrollments"}


@pytest.fixture
def engine(monkeypatch, tmp_path):
    # Should this test be the first in the process to load plugins, load no other one.
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    with Engine(tmp_path / "x.db", clock=VirtualClock()) as engine:
        yield engine


def test_discovered_through_its_entry_point():
    loaded = discover(NAME)
    assert (loaded[NAME]["source"], loaded[NAME]["version"]) == ("clm-email", "0.1.0")
    hooks = {
        "register_reducers",
        "register_tables",
        "forget_contact",
        "register_event_handlers",
        "register_documents",
        "register_actions",
        "dispatch_policy",
        "register_commands",
        "check_unsubscribe_token",
        "register_hookspecs",  # its own hook, register_email_transports, which it implements
        "register_email_transports",
    }
    assert set(loaded[NAME]["hooks"]) == hooks
    # CLM_LOAD_PLUGINS is an allow-list: the other installed plugins stay out.
    assert "referral" not in loaded and "warranty" not in loaded


def test_its_tables_are_created_once(tmp_path):
    check_tables(TABLES, tmp_path, plugins={NAME: clm_email})


def test_the_tables_are_declared_with_their_keys_and_indexes(engine):
    declared = {t.name: t for t in engine.registry.tables}
    assert set(declared) >= TABLES
    messages = declared["email_messages"]
    assert messages.auto_key == "id" and ("idempotency_key",) in messages.unique
    assert ("contact_id", "sent_at") in {i.columns for i in messages.indexes}


#: The tables as the plugin's former sqlite-utils migrations (m001 and m002) left them.
FORMER_SCHEMA = [
    """CREATE TABLE email_messages (id INTEGER PRIMARY KEY, contact_id TEXT NOT NULL,
    idempotency_key TEXT UNIQUE, template TEXT, category TEXT, to_address TEXT, subject TEXT,
    status TEXT, error TEXT, created_at TEXT, sent_at TEXT)""",
    "CREATE INDEX email_messages_by_contact ON email_messages (contact_id)",
    """CREATE TABLE email_suppressions (address TEXT PRIMARY KEY, contact_id TEXT, reason TEXT,
    at TEXT)""",
    "CREATE INDEX email_suppressions_by_contact ON email_suppressions (contact_id)",
    *(
        f"ALTER TABLE email_messages ADD COLUMN {column} TEXT"
        for column in ("message_id", "sequence", "step", "location")
    ),
    "CREATE INDEX email_messages_by_sent ON email_messages (contact_id, sent_at)",
    """CREATE TABLE email_enrollments (id TEXT PRIMARY KEY, contact_id TEXT NOT NULL,
    sequence TEXT NOT NULL, status TEXT NOT NULL, step TEXT, enrolled_at TEXT NOT NULL,
    last_step_at TEXT, ended_at TEXT, exit_reason TEXT, exit_events TEXT NOT NULL,
    exit_stages TEXT NOT NULL)""",
    "CREATE INDEX email_enrollments_by_contact ON email_enrollments (contact_id, status)",
]
T0 = "2026-11-02T10:00:00.000000Z"


def test_a_store_made_by_the_former_migrations_is_taken_over_with_nothing_lost(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in FORMER_SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO email_messages (contact_id, idempotency_key, category, status, "
            "created_at, sent_at, message_id) VALUES ('c1', 'k1', 'marketing', 'sent', ?, ?, "
            "'<m1>')",
            [T0, T0],
        )
        conn.execute(
            "INSERT INTO email_suppressions VALUES ('bob@example.com', 'c2', 'hard_bounce', ?)",
            [T0],
        )
        conn.execute(
            "INSERT INTO email_enrollments (id, contact_id, sequence, status, enrolled_at, "
            "exit_events, exit_stages) VALUES ('e-1', 'c1', 'onboarding', 'active', ?, "
            "'[\"purchase\"]', '[]')",
            [T0],
        )
    opened = open_store(str(path))
    try:
        applied = opened.migrate(clm_email.TABLES)
        assert [
            a for a in applied if not a.startswith("clm_engine:")
        ] == []  # the core's schema only
        tables = opened.tables
        assert store.is_suppressed(tables, "Bob@Example.com") == ("hard_bounce", T0)
        assert store.enrollment(tables, "e-1")["status"] == "active"
        settings = EmailSettings(frequency_caps=[FrequencyCap(max=1, per="P1D")])
        contact = Contact(id="c1", email="ada@example.com", consent={"email": True})
        at = datetime(2026, 11, 2, 12, tzinfo=UTC)
        answer = policy.decide(params={}, contact=contact, now=at, tables=tables, settings=settings)
        assert answer is not None and "frequency cap: 1 marketing emails" in answer.reason
        with opened.write() as tx:  # new messages number on from the old ones
            bought = Event(**event("purchase", contact_id="c1", at="2026-11-03T10:00:00Z"))
            store.on_any_event(tx.tables, contact, bought)
            sent = Event(**event("email.sent", {"key": "k2", "message_id": "<m2>"}, id="s2"))
            store.on_sent(tx.tables, contact, sent)
        assert store.enrollment(opened.tables, "e-1")["exit_reason"] == "event purchase"
        ids = [r["id"] for r in opened.tables["email_messages"].rows(order_by=["id"])]
        assert ids == [1, 2]
    finally:
        opened.close()


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
    bounce = event("email.bounced", {"type": "permanent"}, id="bounce-1")
    check_rejected(engine, bounce, match="'hard' or 'soft'", reducer="email.bounced")


def test_forget_removes_the_contacts_rows_and_keeps_suppressions_only_as_hashes(engine):
    from clm_email.store import is_suppressed

    engine.ingest(event("signup", {"email": "ada@example.com"}))
    with engine.store.write() as tx:
        tx.tables["email_messages"].insert_many(
            [
                {"contact_id": c, "idempotency_key": f"welcome:{c}", "to_address": address}
                for c, address in (("c1", "ada@example.com"), ("c2", "bob@example.com"))
            ]
        )
        tx.tables["email_suppressions"].insert(
            {"address": "ada@example.com", "contact_id": "c1", "reason": "hard_bounce", "at": T0}
        )
    db = engine.store.db
    removed = engine.forget("c1").removed
    assert removed["email_messages"] == 1
    assert removed["email_suppressions"] == 1
    assert [r["contact_id"] for r in db["email_messages"].rows] == ["c2"]
    # The address and the link to the contact are gone; the same address is still refused.
    assert list(db["email_suppressions"].rows) == [
        {
            "address": engine.store.tables.erasure_hash("ada@example.com"),
            "contact_id": None,
            "reason": "hard_bounce",
            "at": T0,
        }
    ]
    assert next(iter(db["email_suppressions"].rows))["address"].startswith("hmac:")
    assert is_suppressed(engine.store.tables, "Ada@Example.com") == ("hard_bounce", T0)


def test_clm_has_an_email_command_when_the_plugin_is_installed():
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "clm_engine", "email", "--help"],
        env={**os.environ, "CLM_LOAD_PLUGINS": NAME},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert {"preview", "log", "queue", "suppressions"} <= set(done.stdout.split())
