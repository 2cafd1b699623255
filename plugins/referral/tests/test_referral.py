"""clm-referral, installed and used the way a third-party plugin is."""

from __future__ import annotations

import sqlite3

import clm_referral
import pytest
from clm_referral import ledger
from clm_referral.facts import balance, referral_count

from clm_engine import Engine, ReducerError, StoreError, VirtualClock
from clm_engine.store import open_store
from clm_engine.testing import check_rejected, check_tables, discover
from clm_engine.testing import make_event as event

NAME = "referral"
TABLES = clm_referral.schema.TABLE_NAMES


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
        "register_tables",
        "forget_contact",
        "register_actions",
        "register_facts",
        "register_commands",
        "register_event_handlers",
        "register_hookspecs",  # its own hook, register_fraud_checks, which it implements
        "register_fraud_checks",
    }
    assert set(loaded[NAME]["hooks"]) == hooks
    # CLM_LOAD_PLUGINS is an allow-list: the other installed plugins stay out.
    assert "email" not in loaded and "warranty" not in loaded


def test_its_tables_are_created_once(tmp_path):
    check_tables(TABLES, tmp_path, plugins={NAME: clm_referral})


def test_the_tables_are_declared_with_their_keys_and_indexes(engine):
    declared = {t.name: t for t in engine.registry.tables}
    assert set(declared) >= TABLES
    assert declared["referral_entries"].auto_key == "seq"
    assert all(declared[n].append_only for n in ("referral_rewards", "referral_entries"))
    one_active = [i for i in declared["referral_codes"].indexes if i.conditions]
    assert [(i.columns, i.unique, i.conditions) for i in one_active] == [
        (("contact_id",), True, (("retired_at", None),))
    ]


#: The tables as the plugin's former sqlite-utils migrations (m001 and m002) left them.
FORMER_SCHEMA = [
    "CREATE TABLE referral_codes (code TEXT PRIMARY KEY, contact_id TEXT NOT NULL, "
    "created_at TEXT)",
    "CREATE INDEX referral_codes_by_contact ON referral_codes (contact_id)",
    "CREATE TABLE referral_attributions (referred_contact_id TEXT PRIMARY KEY, "
    "referrer_contact_id TEXT, code TEXT, attributed_at TEXT)",
    "CREATE INDEX referral_attributions_by_referrer ON referral_attributions (referrer_contact_id)",
    "ALTER TABLE referral_codes ADD COLUMN retired_at TEXT",
    "CREATE UNIQUE INDEX referral_codes_one_active ON referral_codes (contact_id) "
    "WHERE retired_at IS NULL",
    "ALTER TABLE referral_attributions ADD COLUMN event_id TEXT",
    """CREATE TABLE referral_rewards (id TEXT PRIMARY KEY, referred_contact_id TEXT NOT NULL,
    referrer_contact_id TEXT NOT NULL, beneficiary_contact_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('referrer', 'referred')), kind TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0), currency TEXT NOT NULL,
    earned_at TEXT NOT NULL, approve_after TEXT, held_reasons TEXT NOT NULL DEFAULT '[]',
    action_key TEXT, ruleset TEXT, rule TEXT, created_at TEXT NOT NULL,
    UNIQUE (referred_contact_id, kind, role))""",
    "CREATE INDEX referral_rewards_by_beneficiary ON referral_rewards (beneficiary_contact_id)",
    "CREATE INDEX referral_rewards_by_referrer ON referral_rewards "
    "(referrer_contact_id, earned_at)",
    """CREATE TABLE referral_entries (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE, reward_id TEXT NOT NULL REFERENCES referral_rewards (id),
    kind TEXT NOT NULL, state TEXT NOT NULL, at TEXT NOT NULL, actor TEXT NOT NULL,
    reason TEXT)""",
    "CREATE INDEX referral_entries_by_reward ON referral_entries (reward_id, seq)",
    """CREATE TABLE referral_lines (id INTEGER PRIMARY KEY,
    entry_seq INTEGER NOT NULL REFERENCES referral_entries (seq), account TEXT NOT NULL,
    contact_id TEXT, amount_minor INTEGER NOT NULL, currency TEXT NOT NULL)""",
    "CREATE INDEX referral_lines_by_entry ON referral_lines (entry_seq)",
    "CREATE INDEX referral_lines_by_contact ON referral_lines (contact_id, account)",
    "CREATE TRIGGER referral_entries_immutable BEFORE UPDATE ON referral_entries "
    "BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable: post a new entry'); END",
    """CREATE TABLE referral_fingerprints (contact_id TEXT NOT NULL, kind TEXT NOT NULL,
    value TEXT NOT NULL, first_seen_at TEXT NOT NULL, event_id TEXT,
    PRIMARY KEY (contact_id, kind, value))""",
    "CREATE INDEX referral_fingerprints_by_value ON referral_fingerprints (kind, value)",
]

T0 = "2026-05-01T10:00:00.000000Z"


def test_a_store_made_by_the_former_migrations_is_taken_over_with_nothing_lost(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in FORMER_SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO referral_codes (code, contact_id, created_at) "
            f"VALUES ('ADA-1', 'ada', '{T0}')"
        )
        conn.execute(
            "INSERT INTO referral_attributions VALUES ('bob', 'ada', 'ADA-1', ?, 'e1')", [T0]
        )
        conn.execute(
            "INSERT INTO referral_rewards (id, referred_contact_id, referrer_contact_id, "
            "beneficiary_contact_id, role, kind, amount_minor, currency, earned_at, "
            "held_reasons, created_at) VALUES ('rw-old', 'bob', 'ada', 'ada', 'referrer', "
            "'onboarding', 5000, 'USD', ?, '[\"burst\"]', ?)",
            [T0, T0],
        )
        conn.execute(
            "INSERT INTO referral_entries (key, reward_id, kind, state, at, actor) "
            "VALUES ('rw-old/credit', 'rw-old', 'credit', 'pending', ?, 'rule')",
            [T0],
        )
        conn.executemany(
            "INSERT INTO referral_lines (entry_seq, account, contact_id, amount_minor, "
            "currency) VALUES (1, ?, ?, ?, 'USD')",
            [("referral_expense", None, 5000), ("contact:ada:pending", "ada", -5000)],
        )
    store = open_store(str(path))
    try:
        assert store.migrate([], clm_referral.schema.TABLES) == []  # nothing to add
        tables = store.tables
        assert tables["referral_codes"].one({"contact_id": "ada", "retired_at": None})
        assert referral_count(tables, "ada") == 1
        reward = ledger.get_reward(tables, "rw-old")
        assert (reward["state"], reward["held_reasons"]) == ("pending", ["burst"])
        assert balance(tables, "ada", part="pending") == 5000
        with store.write() as tx:  # new entries number on from the old ones
            ledger.transition(
                tx.tables, "rw-old", "approve", at=T0, actor="review by ann", review=True
            )
            with pytest.raises(StoreError, match=r"(?i)unique"):  # still one active code
                tx.tables["referral_codes"].insert({"code": "ADA-2", "contact_id": "ada"})
        assert [e["seq"] for e in ledger.entries(store.tables, "ada")] == [1, 2]
        assert balance(store.tables, "ada") == 5000
        assert ledger.check_balanced(store.tables) == {}
    finally:
        store.close()


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
    with engine.store.write() as tx:
        tx.tables["referral_codes"].insert_many(
            [{"code": "ADA-1", "contact_id": "c1"}, {"code": "BOB-2", "contact_id": "c2"}]
        )
        tx.tables["referral_attributions"].insert_many(
            [
                {"referred_contact_id": "c1", "referrer_contact_id": "c9", "code": "EVE-9"},
                {"referred_contact_id": "c2", "referrer_contact_id": "c1", "code": "ADA-1"},
                {"referred_contact_id": "c3", "referrer_contact_id": "c4", "code": "DAN-4"},
            ]
        )
    db = engine.store.tables
    report = engine.forget("c1")
    assert report.removed["referral_codes"] == 1
    assert report.pseudonymised["referral_attributions"] == 2
    assert [r["code"] for r in db["referral_codes"].rows()] == ["BOB-2"]
    # Both sides are kept with the contact replaced by the erasure's pseudonym (and their
    # code, which named them, too): c9 still referred someone, c2 still has a referrer.
    pseudonym = report.erasure_id
    assert sorted(
        (r["referred_contact_id"], r["referrer_contact_id"], r["code"])
        for r in db["referral_attributions"].rows()
    ) == [("c2", pseudonym, pseudonym), ("c3", "c4", "DAN-4"), (pseudonym, "c9", "EVE-9")]
