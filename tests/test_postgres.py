"""The PostgreSQL store end to end: ``Engine(url)``, ``clm --db URL`` and ``$CLM_DB``, real
processes writing at once. The store's own contract is ``test_store_protocol.py``, run on both
stores; same history, same outcome is ``test_same_outcome.py``, on both too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clm_engine import Engine, StoreError
from clm_engine.store import open_store
from clm_engine.store.postgres import PostgresStore
from clm_engine.store.postgres_schema import CORE_MIGRATIONS
from tests.test_store import _events

ROOT = Path(__file__).resolve().parent.parent
CORE = [name for name, _ in CORE_MIGRATIONS]
EXAMPLES = Path(__file__).resolve().parent.parent / "rulesets"
CORE_RULESETS = [
    ROOT / "rulesets" / "lifecycle-stages.json",
    ROOT / "rulesets" / "lead-scoring.json",
]


def test_a_postgresql_url_opens_the_postgresql_store(postgres_url):
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url)
        try:
            assert isinstance(store, PostgresStore)
            assert store.applied_migrations() == {"clm_engine": CORE}
            indexes = store._all(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'events' ORDER BY 1"
            )
            assert [name for (name,) in indexes] == [
                "events_by_contact",
                "events_id_key",
                "events_pkey",
            ]
            (due,) = store._one("SELECT indexdef FROM pg_indexes WHERE indexname = 'outbox_due'")
            assert due.endswith("WHERE (status = 'pending'::text)")
        finally:
            store.close()


def test_the_cli_runs_on_postgresql_with_db_or_clm_db(postgres_url, run, tmp_path, monkeypatch):
    events = tmp_path / "events.jsonl"
    assert (
        run("sample-events", "--contacts", "40", "--months", "3", "-o", str(events)).exit_code == 0
    )
    rulesets = [arg for path in CORE_RULESETS for arg in ("--rulesets", str(path))]
    ingested = run("ingest", str(events), "--db", postgres_url, *rulesets, "--dispatch", "--json")
    assert ingested.exit_code == 0, ingested.output
    counts = json.loads(ingested.output)
    assert counts["ingested"] > 100

    again = run("ingest", str(events), "--db", postgres_url, *rulesets, "--json")
    assert json.loads(again.output)["ingested"] == 0  # every event is stored once

    sqlite = str(tmp_path / "same.db")  # the same history into SQLite: the same report
    assert run("ingest", str(events), "--db", sqlite, *rulesets, "--dispatch").exit_code == 0
    pg, lite = (
        json.loads(run("report", "--db", db, "--json").output) for db in (postgres_url, sqlite)
    )
    pg_kpis, lite_kpis = pg.pop("analytics"), lite.pop("analytics")
    assert pg_kpis.pop("as_of")[:10] == lite_kpis.pop("as_of")[:10]  # two runs' wall clocks
    assert pg_kpis == lite_kpis  # the lifecycle KPIs: the same on both stores
    for example in pg["examples"] + lite["examples"]:
        del example["updated_at"]  # the wall clock's time of each run
    assert pg == lite
    with Engine(postgres_url) as engine:
        contact = engine.store.list_contacts(order_by="orders", limit=1)[0]
        assert engine.store.summary()["events"] >= counts["ingested"]  # and decisions' effects

    monkeypatch.setenv("CLM_DB", postgres_url)  # the same database through the environment
    shown = run("contacts", "show", contact.id, "--json")
    assert shown.exit_code == 0, shown.output
    assert contact.id in shown.output
    listed = run("contacts", "list", "--json")
    assert listed.exit_code == 0 and contact.id in listed.output
    explained = run("explain", contact.id, *rulesets)
    assert explained.exit_code == 0, explained.output
    migrated = run("migrate", "--json")
    assert json.loads(migrated.output)["applied"] == {"clm_engine": CORE}
    forgotten = run("contacts", "forget", contact.id, "--json")
    assert forgotten.exit_code == 0, forgotten.output
    assert json.loads(forgotten.output)["removed"]["contacts"] == 1
    assert run("contacts", "show", contact.id).exit_code != 0


def test_two_processes_ingesting_at_once_store_every_event_once(postgres_url, tmp_path):
    """Every write takes the store's one advisory lock: two writers on one contact each wait
    their turn, and no event is stored or folded twice."""
    shared = _events("s", 2000)
    files = []
    for name, own in (("a", _events("a", 2000)), ("b", _events("b", 2000))):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(own + shared)
        files.append(path)
    env = {**os.environ, "CLM_LOAD_PLUGINS": ""}
    command = [sys.executable, "-m", "clm_engine", "ingest"]
    procs = [
        subprocess.Popen(
            [*command, str(f), "--db", postgres_url, "--batch-size", "200", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for f in files
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    results = [json.loads(out) for out, _ in outputs]
    assert sum(r["ingested"] for r in results) == 6000
    assert sum(r["duplicates"] for r in results) == 2000
    with Engine(postgres_url) as engine:
        summary = engine.store.summary()
    assert summary["events"] == 6000
    assert summary["orders"] == 6000  # each event folded exactly once


def test_a_database_that_cannot_be_reached_is_a_clean_error(run, postgres_cluster):
    url = f"postgresql://postgres@127.0.0.1:{postgres_cluster.port}/no_such_database"
    with pytest.raises(StoreError, match="cannot connect"):
        PostgresStore(url, connect_timeout=1)
    result = run("report", "--db", url)
    assert result.exit_code != 0
    assert "cannot connect" in result.output and "Traceback" not in result.output


def test_clm_copy_moves_every_row_to_postgresql_and_verifies_it(postgres_url, run, tmp_path):
    """Events, contacts, the outbox, traces, fires, anchors, ruleset versions: all of it, with
    ids kept, counted and checksummed on both sides; the engine goes on where it stopped."""
    events, sqlite = tmp_path / "events.jsonl", tmp_path / "clm.db"
    run("sample-events", "--contacts", "30", "--months", "2", "-o", str(events))
    rulesets = [arg for path in CORE_RULESETS for arg in ("--rulesets", str(path))]
    assert run("ingest", str(events), "--db", str(sqlite), *rulesets, "--dispatch").exit_code == 0
    with Engine(sqlite) as engine:
        before = engine.store.summary(), engine.store.rules_summary()
        high_water = engine.store.read().high_water()

    copied = run("copy", "--from", str(sqlite), "--to", postgres_url, "--json")
    assert copied.exit_code == 0, copied.output
    report = json.loads(copied.output)
    assert report["verified"]
    assert report["rows"]["events"] == before[0]["events"] > 0
    assert report["rows"]["outbox"] > 0 and report["rows"]["traces"] > 0
    assert report["checksums"]["outbox"]["rows"] == report["rows"]["outbox"]

    with Engine(postgres_url, rulesets=CORE_RULESETS) as engine:
        assert (engine.store.summary(), engine.store.rules_summary()) == before
        assert engine.store.read().high_water() == high_water
        # New rows take ids past the copied ones (identity columns set past the largest id):
        # an event, a contact, a stage transition and a trace, each without a key conflict.
        engine.ingest(
            {"contact_id": "new", "type": "signup", "occurred_at": "2026-12-01T10:00:00Z"}
        )
        assert engine.store.last_event("new", "signup") is not None
        assert [t.to_stage for t in engine.store.stage_history("new")] == ["awareness"]

    again = run("copy", "--from", str(sqlite), "--to", postgres_url)
    assert again.exit_code != 0 and "already holds data" in again.output


@pytest.mark.usefixtures("example_plugins")
def test_clm_copy_moves_the_plugins_ledgers_and_logs_too(postgres_url, run, tmp_path):
    """The tables plugins declare (the loyalty and referral ledgers, the email log, the
    cross-channel log, experiment exposures) go with the core's: every row, numbered keys
    kept, verified by count and checksum; nothing is left behind."""
    events, sqlite = tmp_path / "events.jsonl", tmp_path / "clm.db"
    run("sample-events", "--contacts", "40", "--months", "3", "-o", str(events))
    ingest = ["ingest", str(events), "--db", str(sqlite), "--rulesets", str(EXAMPLES)]
    assert run(*ingest, "--dispatch").exit_code == 0
    with Engine(sqlite) as engine:
        held = {name: engine.store.tables[name].count() for name in engine.store.tables.names}
    assert held["loyalty_entries"] > 0 and held["email_messages"] > 0

    copied = run("copy", "--from", str(sqlite), "--to", postgres_url, "--json")
    assert copied.exit_code == 0, copied.output
    report = json.loads(copied.output)
    assert report["verified"] and report["not_copied"] == []
    for name, count in held.items():
        assert report["rows"][name] == count, name
        assert report["checksums"][name]["rows"] == count
    with Engine(postgres_url) as engine:
        assert {n: engine.store.tables[n].count() for n in held} == held


def test_clm_simulate_starts_from_a_copy_of_a_postgresql_store(postgres_url, run, tmp_path):
    """``--db postgresql://...``: the backtest starts from the store's contacts and history
    (copied in one snapshot into its scratch file) and never writes to it."""
    events = tmp_path / "events.jsonl"
    run("sample-events", "--contacts", "30", "--months", "2", "-o", str(events))
    rulesets = [arg for path in CORE_RULESETS for arg in ("--rulesets", str(path))]
    assert run("ingest", str(events), "--db", postgres_url, *rulesets).exit_code == 0
    with Engine(postgres_url) as engine:
        before = engine.store.summary(), engine.store.read().high_water()
    later = tmp_path / "later.jsonl"
    later.write_text(
        json.dumps(
            {"contact_id": "late-1", "type": "signup", "occurred_at": "2026-09-02T10:00:00Z"}
        )
        + "\n"
    )
    window = ["--from", "2026-09-01", "--to", "2026-09-08", "--step", "1d"]
    kept = tmp_path / "kept"
    keep = ["--keep", str(kept), "--json"]
    result = run(
        "simulate", "--db", postgres_url, *rulesets, "--events", str(later), *window, *keep
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["events"]["ingested"] == 1
    with Engine(kept / "simulation.db", migrate=False) as copy:
        summary = copy.store.summary()
    assert summary["contacts"] == before[0]["contacts"] + 1  # the copy's, and the new one
    assert summary["events"] > before[0]["events"]
    with Engine(postgres_url) as engine:
        assert (engine.store.summary(), engine.store.read().high_water()) == before


def test_the_postgresql_schema_is_the_sqlite_schema(postgres_url, tmp_path):
    """Every table and column the core's SQLite migrations leave, PostgreSQL's have (and only
    ``rulesets.seq`` more: SQLite's rowid made visible)."""
    from clm_engine.store.sqlite import SQLiteStore

    sqlite = SQLiteStore(tmp_path / "schema.db")
    sqlite.migrate()
    lite = {
        table: {row[1] for row in sqlite.conn.execute(f"PRAGMA table_info({table})")}
        for table in sqlite.db.table_names()
        if not table.startswith("_sqlite")
    }
    sqlite.close()
    store = PostgresStore(postgres_url)
    try:
        rows = store._all(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name != 'clm_migrations'"
        )
    finally:
        store.close()
    pg: dict[str, set[str]] = {}
    for table, column in rows:
        pg.setdefault(table, set()).add(column)
    pg["rulesets"].discard("seq")
    assert pg == lite


def test_the_example_rulesets_and_plugins_run_on_postgresql_as_on_sqlite(
    postgres_url, run, tmp_path, example_plugins
):
    """The shipped rulesets with the email, referral and warranty plugins (their tables on the
    table API): the same history gives the same report on both stores."""
    events = tmp_path / "events.jsonl"
    run("sample-events", "--contacts", "60", "--months", "3", "-o", str(events))
    sqlite = str(tmp_path / "same.db")
    for db in (postgres_url, sqlite):
        ingest = ["ingest", str(events), "--db", db, "--rulesets", str(ROOT / "rulesets")]
        done = run(*ingest, "--dispatch", "--json")
        assert done.exit_code == 0, done.output
    pg, lite = (
        json.loads(run("report", "--db", db, "--json").output) for db in (postgres_url, sqlite)
    )
    pg_kpis, lite_kpis = pg.pop("analytics"), lite.pop("analytics")
    assert pg_kpis.pop("as_of")[:10] == lite_kpis.pop("as_of")[:10]  # two runs' wall clocks
    assert pg_kpis == lite_kpis  # the lifecycle KPIs: the same on both stores
    for report in (pg, lite):  # the wall clock's time of each run (dispatch emits events)
        report.pop("last_event_at")
        for example in report["examples"]:
            del example["updated_at"]
    assert pg == lite
    assert pg["rules"] and pg["events"] > 1000
