"""The core's database migrations. Never edit one that has been released: add the next."""

from __future__ import annotations

from sqlite_utils.migrations import Migrations

from ..hooks import hookimpl

migrations = Migrations("clm_engine")


@migrations()
def m001_initial(db) -> None:
    # One statement at a time: sqlite3's executescript() would COMMIT the caller's transaction.
    for statement in _M001.split(";"):
        if statement.strip():
            db.execute(statement)


_M001 = """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,          -- arrival order: breaks ties of equal times
            id TEXT NOT NULL UNIQUE,          -- the idempotency key
            contact_id TEXT NOT NULL,
            type TEXT NOT NULL,
            occurred_at TEXT NOT NULL,        -- fixed-width UTC text: text order is time order
            properties TEXT NOT NULL,         -- JSON
            received_at TEXT NOT NULL
        );
        CREATE INDEX events_by_contact ON events (contact_id, occurred_at);

        CREATE TABLE contacts (
            id TEXT PRIMARY KEY,
            email TEXT,
            stage TEXT,
            timezone TEXT NOT NULL DEFAULT 'UTC',
            created_at TEXT,
            updated_at TEXT,
            last_event_at TEXT,
            data TEXT NOT NULL                -- the whole Contact as JSON
        );
        CREATE INDEX contacts_by_stage ON contacts (stage);
        CREATE INDEX contacts_by_email ON contacts (email);

        CREATE TABLE stage_transitions (
            id INTEGER PRIMARY KEY,
            contact_id TEXT NOT NULL,
            from_stage TEXT,
            to_stage TEXT NOT NULL,
            at TEXT NOT NULL,                 -- when the cause happened
            cause TEXT NOT NULL,              -- why, in words
            event_id TEXT                     -- the event that caused it, if any
        );
        CREATE INDEX stage_transitions_by_contact ON stage_transitions (contact_id, at);

        CREATE TABLE ingest_failures (
            event_id TEXT PRIMARY KEY,
            contact_id TEXT NOT NULL,
            type TEXT NOT NULL,
            event TEXT NOT NULL,              -- the event as JSON, to retry it
            reducer TEXT NOT NULL,
            error TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 1,
            failed_at TEXT NOT NULL
        );
        CREATE INDEX ingest_failures_by_contact ON ingest_failures (contact_id);

        CREATE TABLE erasures (
            id INTEGER PRIMARY KEY,
            contact_hash TEXT NOT NULL,       -- sha256 of the id: proves the erasure, holds no data
            erased_at TEXT NOT NULL,
            removed TEXT NOT NULL             -- JSON: table -> rows removed
        );
"""


@hookimpl
def register_migrations(register):
    register(migrations)
