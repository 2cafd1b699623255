"""GDPR erasure is complete and provable: ``clm contacts forget`` on a realistic store.

The store is built the way an operator builds one: ``clm ingest --dispatch`` of a file of
events with the example rulesets and the three plugins, the email plugin's file transport
writing ``.eml`` copies into a folder, a bad line landing in a rejects file. Ada signs up,
buys, registers a product, refers Bob (who completes onboarding: both earn a reward) and gets
emails. After ``clm contacts forget ada``, every column of every row of every table, and every
file in the outbox and rejects folders, is searched for her id, her address and her name.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clm_engine import Column, Engine, PluginError, StoreError, Table, hookimpl
from clm_engine.erasure import Erasure

ROOT = Path(__file__).resolve().parent.parent
ADA = ("cust-ada", "ada.lovelace@example.org", "Ada Lovelace")
SECRETS = (*ADA, "Lovelace", "ADA.LOVELACE@EXAMPLE.ORG".lower())


def _events(now: datetime) -> list[dict[str, object]]:
    def at(hours: float) -> str:
        return (now - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")

    def ev(id_: str, contact: str, type_: str, hours: float, **props: object) -> dict[str, object]:
        return {
            "id": id_,
            "contact_id": contact,
            "type": type_,
            "occurred_at": at(hours),
            "properties": props,
        }

    return [
        ev(
            "a1",
            "cust-ada",
            "signup",
            50,
            email="ada.lovelace@example.org",
            name="Ada Lovelace",
            first_name="Ada",
            last_name="Lovelace",
            consent={"email": True},
        ),
        ev("a2", "cust-ada", "purchase", 49, amount=120.0),
        ev("a3", "cust-ada", "product.registered", 48, product_id="p-ada-1", sku="TV-55"),
        ev(
            "b1",
            "cust-bob",
            "signup",
            30,
            email="bob@example.net",
            name="Bob Builder",
            consent={"email": True},
        ),
        ev("b2", "cust-bob", "referral.signup", 29.9, referrer_id="cust-ada"),
        ev("b3", "cust-bob", "onboarding.completed", 20),
        ev("b4", "cust-bob", "purchase", 10, amount=55.5),
        ev("c1", "cust-cy", "signup", 5, email="cy@example.com", consent={"email": True}),
    ]


def _bad_lines() -> list[str]:
    return [
        # Ada's: an unreadable time (the rejects file keeps the line, with her address).
        json.dumps(
            {
                "id": "a-bad",
                "contact_id": "cust-ada",
                "type": "signup",
                "occurred_at": "yesterday",
                "properties": {"email": "ada.lovelace@example.org"},
            }
        ),
        # Someone else's, which stays.
        json.dumps({"id": "c-bad", "contact_id": "cust-cy", "type": "purchase"}),
    ]


@pytest.fixture
def store(tmp_path, monkeypatch, run, example_plugins):
    outbox = tmp_path / "outbox"
    rejects = tmp_path / "rejects"
    rejects.mkdir()
    monkeypatch.setenv("CLM_EMAIL_OUTBOX", str(outbox))
    source = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in _events(datetime.now(UTC))] + _bad_lines()
    source.write_text("\n".join(lines) + "\n")
    db = tmp_path / "clm.db"
    result = run(
        "ingest",
        str(source),
        "--db",
        str(db),
        "--rulesets",
        str(ROOT / "rulesets"),
        "--rejects",
        str(rejects / "events.rejects.jsonl"),
        "--dispatch",  # after every event, as a live engine would: the welcome email goes out
        "--batch-size",
        "1",
    )
    assert result.exit_code == 1, result.output  # two lines rejected
    source.unlink()  # the operator's own input file is theirs to delete
    return {"db": db, "outbox": outbox, "rejects": rejects}


def _everything(store: dict[str, Path]) -> dict[str, list[str]]:
    """Every column of every row of every table (as text), and every file's bytes (as
    text), by where it was found."""
    found: dict[str, list[str]] = {}
    conn = sqlite3.connect(store["db"])
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for row in conn.execute(f'SELECT * FROM "{table}"'):
            found.setdefault(f"table {table}", []).extend(
                "" if value is None else str(value) for value in row
            )
    conn.close()
    for folder in (store["outbox"], store["rejects"], store["db"].parent):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("clm.db"):
                text = path.read_bytes().decode("utf-8", "replace")
                found.setdefault(f"file {path}", []).append(text)
    return found


def _mentions(store: dict[str, Path]) -> list[str]:
    return sorted(
        {
            f"{where}: {secret!r}"
            for where, values in _everything(store).items()
            for value in values
            for secret in SECRETS
            if secret.lower() in value.lower()
        }
    )


def _bob(db: Path) -> dict[str, object]:
    with Engine(db) as engine:
        contact = engine.contact("cust-bob")
        assert contact is not None
        return contact.model_dump(mode="json")


def test_forget_leaves_the_contact_nowhere_and_others_whole(store, run):
    from clm_referral import ledger

    before = _mentions(store)
    # The store really holds her: rows of Bob's, her emails, the rejects file.
    assert any("table events" in m for m in before)
    assert any("table email_messages" in m for m in before)
    assert any(".eml: 'ada.lovelace@example.org'" in m for m in before)
    assert any("events.rejects.jsonl" in m for m in before)
    bob_before = _bob(store["db"])
    assert bob_before["attributes"]["referred_by"] == "cust-ada"

    result = run("contacts", "forget", "cust-ada", "--db", str(store["db"]), "--by", "dpo")
    assert result.exit_code == 0, result.output
    assert "rows removed" in result.output and "rows pseudonymised" in result.output
    assert "file removed" in result.output and "file rewritten" in result.output

    assert _mentions(store) == []

    # The record: who, when, what; no personal data (checked above with everything else).
    conn = sqlite3.connect(store["db"])
    (erasure_id, by, removed, pseudonymised), *more = conn.execute(
        "SELECT erasure_id, requested_by, removed, pseudonymised FROM erasures"
    ).fetchall()
    assert not more and by == "dpo" and erasure_id.startswith("erased-")
    assert json.loads(removed)["events"] >= 3
    assert json.loads(pseudonymised)["events"] >= 2
    conn.close()

    # Bob is whole: same stage and scores, his referrer is the pseudonym, the books balance.
    bob = _bob(store["db"])
    assert bob["attributes"]["referred_by"] == erasure_id
    assert (bob["stage"], bob["scores"], bob["metrics"]) == (
        bob_before["stage"],
        bob_before["scores"],
        bob_before["metrics"],
    )
    with Engine(store["db"]) as engine:
        assert ledger.check_balanced(engine.store.tables) == {}
        rewards = list(engine.store.db["referral_rewards"].rows)
        assert {r["referrer_contact_id"] for r in rewards} == {erasure_id}
        assert len(rewards) == 2

    # Cy's rejected line is still there; Ada's is gone.
    lines = (store["rejects"] / "events.rejects.jsonl").read_text().splitlines()
    assert [json.loads(json.loads(line)["input"])["contact_id"] for line in lines] == ["cust-cy"]

    # A late event makes Bob's history fold again from his stored events: the pseudonym holds.
    late = store["db"].parent / "late.jsonl"
    first = datetime.now(UTC) - timedelta(days=30)
    late.write_text(
        json.dumps(
            {
                "id": "b0",
                "contact_id": "cust-bob",
                "type": "crm.note",
                "occurred_at": first.isoformat().replace("+00:00", "Z"),
                "properties": {},
            }
        )
        + "\n"
    )
    result = run(
        "ingest", str(late), "--db", str(store["db"]), "--rulesets", str(ROOT / "rulesets")
    )
    assert result.exit_code == 0, result.output
    refolded = _bob(store["db"])
    assert refolded["attributes"]["referred_by"] == erasure_id
    assert (refolded["stage"], refolded["scores"]) == (bob_before["stage"], bob_before["scores"])
    assert _mentions(store) == []


def _snapshot(db: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(db)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    snapshot = {
        t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables
    }
    conn.close()
    return snapshot


def test_forgetting_twice_changes_nothing(store, run):
    assert run("contacts", "forget", "cust-ada", "--db", str(store["db"])).exit_code == 0
    tables = _snapshot(store["db"])
    files = {p: p.read_bytes() for p in store["outbox"].rglob("*")}
    result = run("contacts", "forget", "cust-ada", "--db", str(store["db"]), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["removed"], report["pseudonymised"], report["files_removed"]) == ({}, {}, [])
    again = _snapshot(store["db"])
    # The second request is recorded (it was made), and nothing else changed.
    assert len(again.pop("erasures")) == len(tables.pop("erasures")) + 1
    assert again == tables
    assert {p: p.read_bytes() for p in store["outbox"].rglob("*")} == files


NOTES = Table(
    "crm_notes",
    columns=(Column("id", "integer", auto_increment=True), Column("note", "text")),
    primary_key=("id",),
)


class Refuses:
    """A plugin whose erasure fails halfway (after the core and other plugins did theirs)."""

    @hookimpl
    def register_tables(self, register):
        register(NOTES)

    @hookimpl
    def forget_contact(self, tables, contact_id, erasure):
        tables["crm_notes"].delete({})  # would be a disaster if it were kept
        for path in erasure.files_to_remove:  # nothing planned may happen either
            erasure.remove_file(path)
        raise RuntimeError("cannot reach the archive")


def test_a_plugin_that_fails_to_erase_stops_the_whole_erasure(store):
    with Engine(store["db"], plugins={"refuses": Refuses()}) as engine:
        with engine.store.write() as tx:
            tx.tables["crm_notes"].insert({"note": "a note about someone else"})
        tables = _snapshot(store["db"])
        files = {
            p: p.read_bytes() for p in (*store["outbox"].rglob("*"), *store["rejects"].rglob("*"))
        }
        with pytest.raises(PluginError, match=r"'refuses' failed to erase.*nothing was erased"):
            engine.forget("cust-ada")
    assert _snapshot(store["db"]) == tables
    after = {p: p.read_bytes() for p in (*store["outbox"].rglob("*"), *store["rejects"].rglob("*"))}
    assert after == files


class LeavesAName:
    """A plugin that keeps personal data in a table and does not erase it."""

    @hookimpl
    def register_tables(self, register):
        register(NOTES)

    @hookimpl
    def forget_contact(self, tables, contact_id):
        tables["crm_notes"].insert({"note": "wrote to ada.lovelace@example.org"})
        return {}


def test_an_erasure_that_would_leave_a_mention_is_refused(store):
    with Engine(store["db"], plugins={"leaves": LeavesAName()}) as engine:
        tables = _snapshot(store["db"])
        with pytest.raises(StoreError, match=r"crm_notes\.note still mentions the contact"):
            engine.forget("cust-ada")
    assert _snapshot(store["db"]) == tables


def test_rewriting_replaces_whole_values_and_mentions_not_lookalikes():
    erasure = Erasure("c1", emails=["Ada@Example.org"], names=["Ada Lovelace"], key=b"k")
    p = erasure.pseudonym
    value = {
        "referrer_id": "c1",
        "other": "c10",
        "to": "ada@example.org",
        "note": "c1 and c1-x wrote from ADA@example.org",
        "referrer_name": "ADA LOVELACE",
        "list": ["c1", 3],
        "c1": True,
    }
    assert erasure.rewrite(value) == {
        "referrer_id": p,
        "other": "c10",
        "to": erasure.pseudonym_email,
        "note": f"{p} and c1-x wrote from {erasure.pseudonym_email}",
        "referrer_name": p,
        "list": [p, 3],
        p: True,
    }
    # Another person called the same keeps their own name; a name in prose is not matched.
    namesake = {"name": "Ada Lovelace", "bio": "Ada Lovelace fan"}
    assert erasure.rewrite(namesake) == namesake
    assert not erasure.mentions(json.dumps(namesake))
    assert erasure.mentions('{"referrer_name": "Ada Lovelace"}')
    assert erasure.keyed_hash("ada@example.org ") == erasure.keyed_hash("ADA@example.org")
    assert "ada" not in erasure.keyed_hash("ada@example.org")
    assert Erasure("c1").pseudonym != Erasure("c1").pseudonym  # random, not derived


def test_a_migrated_store_keeps_no_hash_of_an_erased_id(tmp_path):
    from sqlite_utils import Database

    from clm_engine.store.sqlite_schema import migrations

    db = Database(tmp_path / "old.db")
    for migration in migrations._migrations[:9]:  # up to m009: erasures kept a sha256 of the id
        migration.fn(db)
    db.execute(
        "INSERT INTO erasures (contact_hash, erased_at, removed) VALUES "
        "('c7cf548df2b6a70397ea652b2f87d947e28223f62364f435ccb55adcd48e0183', 't', '{}')"
    )
    migrations._migrations[9].fn(db)  # m010_erasure_records
    (erasure_id,) = db.execute("SELECT erasure_id FROM erasures").fetchone()
    assert erasure_id.startswith("erased-")
