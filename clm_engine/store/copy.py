"""Moving an embedded deployment to PostgreSQL: every row of the core's tables, verified.

``copy_to_postgres(sqlite_path, url)`` reads each core table of a SQLite store in key order and
streams it into the same table of an empty PostgreSQL store with COPY, keeping ids (events'
``seq``, outbox ``seq``, trace ids: the order of arrival and what a backtest's high water counts
from); then it sets each identity column past the largest id, and compares the two stores
table by table: the number of rows and a SHA-256 over every row in key order, JSON compared as
values (``jsonb`` keeps no key order or spacing). The copy is one transaction on the target,
under its write lock: a failure leaves it empty.

The tables the plugins (and the core's built-ins) declare with the table API (a referral or
loyalty ledger, the email log, experiment exposures) are copied the same way through that API,
in key order and in chunks, with their numbered keys kept, and verified alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from .postgres import PostgresStore
from .sqlite import SQLiteStore
from .tables import Table, TableAccess, Tables

#: The core's tables and the key each is read in (SQLite's ``rulesets`` has no id column:
#: its ``rowid`` becomes PostgreSQL's ``seq``).
CORE_TABLES: dict[str, str] = {
    "events": "seq",
    "contacts": "id",
    "stage_transitions": "id",
    "ingest_failures": "event_id",
    "erasures": "id",
    "rulesets": "seq",
    "outbox": "seq",
    "rule_fires": "contact_id, ruleset, rule, entity, occurrence",
    "traces": "id",
    "trace_prunes": "id",
    "action_history": "id",
    "anchors": "ruleset, rule, contact_id, entity",
    "anchor_rules": "ruleset, rule",
    "schedules": "ruleset, rule, timezone",
    "ruleset_sets": "id",
    "runtime_status": "key",
    "rejects_files": "path",
    "erasure_key": "id",  # the source's key: what its keyed hashes (suppressions) were made with
    "api_keys": "id",
    "analytics_models": "name",
    "analytics_customers": "contact_id",
    "analytics_rfm": "contact_id",
}

CHUNK = 5000


@dataclass
class CopyReport:
    """What a copy moved: table -> rows, and table -> (rows, sha256) on each side."""

    rows: dict[str, int] = field(default_factory=dict)
    source: dict[str, tuple[int, str]] = field(default_factory=dict)
    target: dict[str, tuple[int, str]] = field(default_factory=dict)
    not_copied: list[str] = field(default_factory=list)  # tables no loaded plugin declares

    @property
    def verified(self) -> bool:
        return self.source == self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "verified": self.verified,
            "checksums": {t: {"rows": n, "sha256": h} for t, (n, h) in self.target.items()},
            "not_copied": self.not_copied,
        }


def _columns(target: PostgresStore, table: str) -> tuple[list[str], set[str]]:
    """A table's columns on PostgreSQL, in order, and which of them hold JSON."""
    rows = target._all(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        [table],
    )
    return [r[0] for r in rows], {r[0] for r in rows if r[1] in ("json", "jsonb")}


def _sqlite_rows(conn: sqlite3.Connection, table: str, columns: Sequence[str]) -> Iterator[Any]:
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    select = ", ".join(c if c in present else f"rowid AS {c}" for c in columns)
    key = (
        CORE_TABLES[table]
        if all(k.strip() in present for k in CORE_TABLES[table].split(","))
        else "rowid"
    )
    yield from conn.execute(f"SELECT {select} FROM {table} ORDER BY {key}")


def _canonical(row: Sequence[Any], json_at: Sequence[int]) -> bytes:
    values = list(row)
    for i in json_at:
        if values[i] is not None:
            values[i] = json.loads(values[i]) if isinstance(values[i], str) else values[i]
    return json.dumps(values, sort_keys=True, separators=(",", ":"), default=str).encode()


def _digest(rows: Iterator[Any], json_at: Sequence[int]) -> tuple[int, str]:
    digest, count = hashlib.sha256(), 0
    for row in rows:
        digest.update(_canonical(row, json_at))
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()


def checksums_sqlite(source: SQLiteStore, target: PostgresStore) -> dict[str, tuple[int, str]]:
    found = {}
    for table in CORE_TABLES:
        columns, json_columns = _columns(target, table)
        json_at = [i for i, c in enumerate(columns) if c in json_columns]
        found[table] = _digest(_sqlite_rows(source.conn, table, columns), json_at)
    return found


def checksums_postgres(target: PostgresStore) -> dict[str, tuple[int, str]]:
    found = {}
    for table in CORE_TABLES:
        columns, json_columns = _columns(target, table)
        json_at = [i for i, c in enumerate(columns) if c in json_columns]
        select = ", ".join(f"{c}::text" if c in json_columns else c for c in columns)
        found[table] = _digest(
            target._stream(f"SELECT {select} FROM {table} ORDER BY {CORE_TABLES[table]}", []),
            json_at,
        )
    return found


def _declared_rows(table: TableAccess) -> Iterator[dict[str, Any]]:
    """A declared table's rows in key order, a chunk at a time (bounded memory)."""
    key = list(table.schema.primary_key)
    offset = 0
    while True:
        chunk = table.rows({}, order_by=key, limit=CHUNK, offset=offset)
        yield from chunk
        if len(chunk) < CHUNK:
            return
        offset += CHUNK


def _declared_digest(tables: Tables, table: Table) -> tuple[int, str]:
    digest, count = hashlib.sha256(), 0
    for row in _declared_rows(tables[table.name]):
        digest.update(json.dumps(row, sort_keys=True, separators=(",", ":"), default=str).encode())
        digest.update(b"\n")
        count += 1
    return count, digest.hexdigest()


def copy_to_postgres(source_path: str, url: str, tables: Sequence[Table] = ()) -> CopyReport:
    """Copy the core's tables of the SQLite store at ``source_path``, and the declared
    ``tables`` it holds (the loaded plugins'), into the PostgreSQL database at ``url``
    (created tables, no rows), and verify the copy."""
    from .sqlite_schema import migrations

    source = SQLiteStore(source_path)
    target = PostgresStore(url)
    report = CopyReport()
    try:
        if migrations.pending(source.db):
            raise StoreError(
                f"{source_path} is not an up-to-date clm-engine database: run clm migrate"
            )
        present = set(source.db.table_names())
        declared = [t for t in tables if t.name in present]
        if declared and source.migrate(declared):  # declares them; a complete file needs nothing
            raise StoreError(f"{source_path} needed changes to its tables: run clm migrate first")
        target.migrate(tables)
        busy = [
            t for t in ("events", "contacts", "outbox") if target._one(f"SELECT 1 FROM {t} LIMIT 1")
        ]
        if busy:
            raise StoreError(
                f"{target.path} already holds data ({', '.join(busy)}): copy into an empty database"
            )
        core = set(CORE_TABLES) | {"_sqlite_migrations"} | {t.name for t in declared}
        report.not_copied = sorted(
            name for name in present if name not in core and not name.startswith("sqlite_")
        )
        with target.write() as tx:
            assert tx.conn is not None
            tx._run("DELETE FROM erasure_key")  # the new database's own, replaced by the source's
            for table in CORE_TABLES:
                columns, _ = _columns(target, table)
                count = 0
                with tx.conn.cursor().copy(
                    f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                ) as copy:
                    for row in _sqlite_rows(source.conn, table, columns):
                        copy.write_row(row)
                        count += 1
                report.rows[table] = count
                _past_largest(tx, table)
            for declared_table in declared:
                name = declared_table.name
                count = 0
                batch: list[dict[str, Any]] = []
                for row in _declared_rows(source.tables[name]):
                    batch.append(row)
                    if len(batch) == CHUNK:
                        count += tx.tables[name].insert_many(batch)
                        batch = []
                count += tx.tables[name].insert_many(batch)
                report.rows[name] = count
                _past_largest(tx, name)
        report.source = checksums_sqlite(source, target)
        report.target = checksums_postgres(target)
        for declared_table in declared:
            report.source[declared_table.name] = _declared_digest(source.tables, declared_table)
            report.target[declared_table.name] = _declared_digest(target.tables, declared_table)
    finally:
        source.close()
        target.close()
    return report


def _past_largest(tx: Any, table: str) -> None:
    """Each identity column of ``table`` set past its largest copied value: new rows on the
    target take the next numbers, as they would have on the source."""
    identity = tx._all(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = %s AND is_identity = 'YES'",
        [table],
    )
    for (column,) in identity:
        tx._run(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
            f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)"
        )


def copy_to_sqlite(source: PostgresStore, path: str | os.PathLike[str]) -> None:
    """A new SQLite store at ``path`` holding what the PostgreSQL store ``source`` holds: the
    core's tables read in one snapshot (``REPEATABLE READ``), then its declared tables (the
    ones ``source.migrate(tables)`` declared), each in key order. What a simulation starts
    from (``clm simulate --db postgresql://...``): the source is only read."""
    target = SQLiteStore(os.fspath(path))
    try:
        target.migrate(list(source.declared.values()))
        with source.pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            with target.write():
                target.conn.execute("DELETE FROM erasure_key")  # the source's key, below
                for table in CORE_TABLES:
                    lite = [r[1] for r in target.conn.execute(f"PRAGMA table_info({table})")]
                    columns, json_columns = _columns(source, table)
                    shared = [c for c in columns if c in lite]
                    select = ", ".join(f"{c}::text" if c in json_columns else c for c in shared)
                    order = CORE_TABLES[table]
                    insert = (
                        f"INSERT INTO {table} ({', '.join(shared)}) "
                        f"VALUES ({', '.join('?' * len(shared))})"
                    )
                    with conn.cursor(name=f"copy_{table}") as cursor:
                        cursor.execute(f"SELECT {select} FROM {table} ORDER BY {order}")
                        while found := cursor.fetchmany(CHUNK):
                            target.conn.executemany(insert, found)
            with target.write() as tx:
                for declared in source.declared.values():
                    batch: list[dict[str, Any]] = []
                    for row in _declared_rows(source.tables[declared.name]):
                        batch.append(row)
                        if len(batch) == CHUNK:
                            tx.tables[declared.name].insert_many(batch)
                            batch = []
                    tx.tables[declared.name].insert_many(batch)
    finally:
        target.close()
