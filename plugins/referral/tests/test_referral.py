"""clm-referral, installed and used the way a third-party plugin is."""

from __future__ import annotations

import clm_referral
import pytest

from clm_engine import Engine, ReducerError, VirtualClock
from clm_engine.testing import check_migrations, check_rejected, discover
from clm_engine.testing import make_event as event

NAME = "referral"
TABLES = clm_referral.schema.TABLES


@pytest.fixture
def engine(monkeypatch, tmp_path):
    # Should this test be the first in the process to load plugins, load no other one.
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    with Engine(tmp_path / "x.db", clock=VirtualClock()) as engine:
        yield engine


def test_discovered_through_its_entry_point():
    loaded = discover(NAME)
    assert (loaded[NAME]["source"], loaded[NAME]["version"]) == ("clm-referral", "0.1.0")
    hooks = {
        "register_reducers",
        "register_migrations",
        "forget_contact",
        "register_actions",
        "register_facts",
        "register_commands",
        "register_event_handlers",
    }
    assert set(loaded[NAME]["hooks"]) == hooks
    # CLM_LOAD_PLUGINS is an allow-list: the other installed plugins stay out.
    assert "email" not in loaded and "warranty" not in loaded


def test_migrations_run_once_inside_the_callers_transaction(engine, tmp_path):
    check_migrations(clm_referral.migrations, TABLES, tmp_path)


def test_migrations_create_the_tables_and_indexes(engine):
    db = engine.store.db
    assert set(db.table_names()) >= TABLES
    assert {tuple(i.columns) for i in db["referral_codes"].indexes} >= {("contact_id",)}
    indexes = {tuple(i.columns) for i in db["referral_attributions"].indexes}
    assert ("referrer_contact_id",) in indexes
    # Stored databases know the set by its name: renaming it would run its migrations again.
    applied = [m.name for m in clm_referral.migrations.applied(db)]
    assert (clm_referral.migrations.name, applied) == (
        "clm_referral",
        ["m001_initial", "m002_ledger"],
    )


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


def test_a_signup_without_referrer_nor_code_is_a_recorded_failure(engine):
    engine.ingest(event("signup", {"email": "ada@example.com"}))
    signup = event("referral.signup", {"channel": "email"}, id="signup-1")
    check_rejected(engine, signup, match="referrer_id", reducer="referral.signup")


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
    report = engine.forget("c1")
    assert report.removed["referral_codes"] == 1
    assert report.pseudonymised["referral_attributions"] == 2
    assert [r["code"] for r in db["referral_codes"].rows] == ["BOB-2"]
    # Both sides are kept with the contact replaced by the erasure's pseudonym (and their
    # code, which named them, too): c9 still referred someone, c2 still has a referrer.
    pseudonym = report.erasure_id
    assert sorted(
        (r["referred_contact_id"], r["referrer_contact_id"], r["code"])
        for r in db["referral_attributions"].rows
    ) == [("c2", pseudonym, pseudonym), ("c3", "c4", "DAN-4"), (pseudonym, "c9", "EVE-9")]
