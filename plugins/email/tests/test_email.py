"""clm-email, installed and used the way a third-party plugin is."""

from __future__ import annotations

import clm_email
import pytest

from clm_engine import Engine, VirtualClock
from clm_engine.testing import check_migrations, check_rejected, discover
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
        "register_migrations",
        "forget_contact",
        "register_event_handlers",
        "register_documents",
        "register_actions",
        "dispatch_policy",
        "register_commands",
        "check_unsubscribe_token",
    }
    assert set(loaded[NAME]["hooks"]) == hooks
    # CLM_LOAD_PLUGINS is an allow-list: the other installed plugins stay out.
    assert "referral" not in loaded and "warranty" not in loaded


def test_migrations_run_once_inside_the_callers_transaction(engine, tmp_path):
    check_migrations(clm_email.migrations, TABLES, tmp_path)


def test_migrations_create_the_tables_and_indexes(engine):
    db = engine.store.db
    assert set(db.table_names()) >= TABLES
    assert {tuple(i.columns) for i in db["email_messages"].indexes} >= {("contact_id",)}
    assert db["email_messages"].columns_dict["idempotency_key"] is str
    # Stored databases know the set by its name: renaming it would run its migrations again.
    applied = [m.name for m in clm_email.migrations.applied(db)]
    assert (clm_email.migrations.name, applied) == (
        "clm_email",
        ["m001_initial", "m002_delivery_and_sequences"],
    )


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

    from clm_engine import erasure_hash

    engine.ingest(event("signup", {"email": "ada@example.com"}))
    db = engine.store.db
    db["email_messages"].insert_all(
        [
            {"contact_id": "c1", "idempotency_key": "welcome:c1", "to_address": "ada@example.com"},
            {"contact_id": "c2", "idempotency_key": "welcome:c2", "to_address": "bob@example.com"},
        ]
    )
    db["email_suppressions"].insert(
        {"address": "ada@example.com", "contact_id": "c1", "reason": "hard_bounce", "at": "t"}
    )
    removed = engine.forget("c1").removed
    assert removed["email_messages"] == 1
    assert removed["email_suppressions"] == 1
    assert [r["contact_id"] for r in db["email_messages"].rows] == ["c2"]
    # The address and the link to the contact are gone; the same address is still refused.
    assert list(db["email_suppressions"].rows) == [
        {
            "address": erasure_hash(db, "ada@example.com"),
            "contact_id": None,
            "reason": "hard_bounce",
            "at": "t",
        }
    ]
    assert next(iter(db["email_suppressions"].rows))["address"].startswith("hmac:")
    assert is_suppressed(db, "Ada@Example.com") == ("hard_bounce", "t")


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
