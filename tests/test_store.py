from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sqlite_utils

from clm_engine import Engine, StoreError
from clm_engine.store.sqlite import SQLiteStore
from clm_engine.store.sqlite_schema import migrations


def test_core_migrations_on_an_in_memory_database():
    db = sqlite_utils.Database(memory=True)
    migrations.apply(db)
    assert {
        "events",
        "contacts",
        "stage_transitions",
        "ingest_failures",
        "erasures",
        "outbox",
        "rule_fires",
        "traces",
        "rulesets",
    } <= set(db.table_names())
    assert [m.name for m in migrations.pending(db)] == []
    migrations.apply(db)  # a second run is a no-op
    assert [m.name for m in migrations.applied(db)] == [
        "m001_initial",
        "m002_rules",
        "m003_time",
        "m004_time_indexes",
        "m005_outbox_entity",
        "m006_outbox_lease",
        "m007_same_history_same_outcome",
        "m008_ruleset_sets",
        "m009_compact_traces",
        "m010_erasure_records",
        "m011_api_keys",
        "m012_analytics",
        "m013_ops_action_history",
        "m014_pgworkers_claims",
        "m015_no_origin_index",
        "m016_due_index_of_pending_rows",
    ]
    assert "contacts_by_stage" in {index.name for index in db["contacts"].indexes}
    # Effects' origins are read with a contact's history (by contact_id), never by origin.
    assert {index.name for index in db["events"].indexes} == {
        "events_by_contact",
        "sqlite_autoindex_events_1",
    }
    # The due query's index holds pending rows only: a row written finished costs no entry.
    (due,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'outbox_due'").fetchone()
    assert due.endswith("WHERE status = 'pending'")


def test_store_uses_wal_and_a_busy_timeout(db_path):
    store = SQLiteStore(db_path, busy_timeout=7)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 7000
    store.close()


def test_a_write_that_raises_rolls_back_whole(db_path):
    engine = Engine(db_path)
    with pytest.raises(RuntimeError), engine.store.write() as tx:
        tx.conn.execute(
            "INSERT INTO erasures (erasure_id, erased_at, removed) VALUES ('x', 'now', '{}')"
        )
        raise RuntimeError("boom")
    assert engine.store.db["erasures"].count == 0
    engine.close()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(StoreError, match=r"not a clm-engine database|cannot open"):
        Engine(path)


def _events(prefix: str, count: int, contacts: int = 50) -> str:
    lines = []
    for n in range(count):
        lines.append(
            json.dumps(
                {
                    "id": f"{prefix}{n}",
                    "contact_id": f"c{n % contacts}",
                    "type": "purchase",
                    "occurred_at": f"2026-10-{1 + n % 28:02d}T10:{n % 60:02d}:00Z",
                    "properties": {"amount": 1},
                }
            )
        )
    return "\n".join(lines) + "\n"


def test_two_processes_ingesting_at_once_store_every_event_once(tmp_path):
    """BEGIN IMMEDIATE under a busy timeout: concurrent writers wait, none fails as locked."""
    db = tmp_path / "shared.db"
    Engine(db).close()  # migrate once, so both writers race on data, not on schema
    shared = _events("s", 3000)
    files = []
    for name, own in (("a", _events("a", 3000)), ("b", _events("b", 3000))):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(own + shared)
        files.append(path)
    env = {**os.environ, "CLM_LOAD_PLUGINS": ""}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clm_engine",
                "ingest",
                str(f),
                "--db",
                str(db),
                "--batch-size",
                "200",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for f in files
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    results = [json.loads(out) for out, _ in outputs]
    assert sum(r["ingested"] for r in results) == 9000
    assert sum(r["duplicates"] for r in results) == 3000
    with Engine(db) as engine:
        summary = engine.store.summary()
    assert summary["events"] == 9000
    assert summary["orders"] == 9000  # each event folded exactly once
