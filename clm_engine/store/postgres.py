"""The PostgreSQL store: many engine processes, on many machines, sharing one database.

Why it is built this way:

* psycopg 3 with a ``psycopg_pool.ConnectionPool``: a read borrows a connection for one query
  (autocommit: it sees everything committed), a write borrows one for its transaction. A
  thread inside a write reads through the write's own connection, so it sees what it wrote,
  as it does on SQLite's one shared connection.
* Writes come in two kinds (``write(concurrent=...)``). An *exclusive* write (a migration, a
  ruleset load, an erasure, a prune) takes one transaction-level advisory lock
  (``pg_advisory_xact_lock(WRITE_LOCK)``) and so excludes every other writer, as SQLite's
  ``BEGIN IMMEDIATE`` does. A *concurrent* write (ingestion, dispatch, sweeps, cron chunks:
  the work workers share) takes the same lock *shared*, so any number run at once, and holds
  only what it touches:

  - the contacts it folds or dispatches for, by a transaction-level advisory lock per contact
    (``pg_advisory_xact_lock(CONTACT_LOCKS, hashtext(id))``, under its bucket's lock taken
    shared; a call naming many contacts takes their buckets exclusively instead, so that no
    transaction needs more than ~1,000 lock slots: ``lock_contacts``), in key order. That is
    what still serialises: one contact's events are folded, and its actions run, one
    transaction after another, so its history has one order. Different contacts never wait
    on each other. A lock is a key, not a row, so it also holds a contact that does not
    exist yet (two first events of a new contact at once). Sweeps take contacts without
    waiting (``pg_try_advisory_xact_lock``) and leave a busy one for the next pump.
  - the outbox rows, anchors and schedules it claims, by row locks taken with
    ``FOR UPDATE SKIP LOCKED``: a second worker passes over them instead of waiting.

  Two concurrent writes that lock contacts in different orders (an action about one contact
  emitting an event about another) can deadlock; PostgreSQL then rolls one back, and it is
  raised as ``WriteConflict`` for the caller to run again (``retry_conflicts``).
  Each lock takes a slot of the server's lock table (``max_locks_per_transaction`` x
  ``max_connections``, 6,400 by default): a transaction holds at most about 1,024 of them
  (docs/operations.md, "Scaling out").
* Bulk writes go through ``executemany``, which psycopg runs in pipeline mode (one round trip
  per batch, not per row); duplicates are ``ON CONFLICT DO NOTHING`` on the same unique keys
  as SQLite's.
* SQL only here and in ``postgres_schema.py``; values are always parameters. The few names put
  into SQL text (orders of ``list_contacts``, savepoints) are fixed in this module.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic_core import to_json

from ..erasure import PROFILE_EVENTS, Erasure, ErasureReport, names_in
from ..errors import StoreError
from ..models import Contact, Event, utc_text
from . import ActionStep, IngestFailure, OutboxRow, StageTransition, Trace, WriteConflict
from .postgres_schema import CORE_MIGRATIONS, MIGRATIONS_TABLE
from .postgres_tables import PostgresTables, ensure_tables, plan_tables
from .tables import Table, Tables, check_tables, erase_declared_core_tables

#: The advisory lock every write transaction takes: exclusive, or shared when concurrent
#: ("clm" in ASCII).
WRITE_LOCK = 0x636C6D
#: The first key of contacts' advisory locks (the second is ``hashtext(contact id)``): a
#: two-key lock never meets ``WRITE_LOCK``'s one-key space.
CONTACT_LOCKS = 0x636C63
#: The first key of contacts' buckets' advisory locks (the second: ``hashtext(id) & 1023``).
BUCKET_LOCKS = 0x636C62
#: How many buckets contacts hash into: the most locks one large transaction takes.
BUCKETS = 1024
#: Up to this many contacts, a call locks each contact (and its bucket, shared); more lock
#: their buckets exclusively (``lock_contacts``).
FEW_CONTACTS = 256
#: What PostgreSQL says when it rolled a transaction back so another could go on.
_CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
#: The name of the core's migration set, as on SQLite.
CORE_SET = "clm_engine"

Connection = psycopg.Connection[tuple[Any, ...]]


def _dumps(value: Any) -> str:
    return to_json(value, fallback=str).decode()


def _json(value: Any) -> str | None:
    return _dumps(value) if value is not None else None


def _number(value: Any) -> Any:
    """A sum from PostgreSQL (``numeric``) as SQLite would give it: an int when whole."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database"
    return f"postgresql://{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


_EVENT_COLUMNS = "id, contact_id, type, occurred_at, properties"
_OUTBOX_COLUMNS = (
    "seq, key, ruleset, version, rule, contact_id, action, params, priority, depth, status, "
    "due_at, attempts, note, result, entity, content_hash, created_at, late, finished_at"
)
_TRACE_COLUMNS = (
    "contact_id, ruleset, version, content_hash, rule, occurrence, trigger, decision, detail, "
    "tree, actions, at, seen"
)


def _event_from_row(row: Sequence[Any]) -> Event:
    event_id, contact_id, type_, occurred_at, properties = row
    return Event.stored(event_id, contact_id, type_, occurred_at, properties)


#: The pool's size when neither ``pool_size`` nor ``$CLM_PG_POOL_SIZE`` says otherwise.
DEFAULT_POOL_SIZE = 4


def pool_size_from_env() -> int:
    """``$CLM_PG_POOL_SIZE`` (a whole number from 1 to 1000), or ``DEFAULT_POOL_SIZE``: how
    many connections each engine process may open (docs/operations.md, "Scaling out")."""
    text = os.environ.get("CLM_PG_POOL_SIZE", "").strip()
    if not text:
        return DEFAULT_POOL_SIZE
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise StoreError(
            f"CLM_PG_POOL_SIZE must be a whole number from 1 to 1000, not {text[:40]!r}"
        )
    return int(text)


def _qualified(table: str, columns: str) -> str:
    """``a, b`` as ``table.a, table.b`` (a RETURNING beside a CTE of the same names)."""
    return ", ".join(f"{table}.{c.strip()}" for c in columns.split(","))


def _in_dispatch_order(rows: Iterable[OutboxRow]) -> list[OutboxRow]:
    """Rows in the order dispatch takes them (an UPDATE ... RETURNING keeps none)."""
    return sorted(rows, key=lambda r: (r.due_at, -r.priority, r.seq))


def _outbox_row(row: Sequence[Any]) -> OutboxRow:
    values = list(row)
    values[18] = bool(values[18])
    return OutboxRow(*values)


def _trace_row(row: Sequence[Any]) -> Trace:
    values = list(row)
    if values[10] is None:
        values[10] = []
    return Trace(*values)


_OUTBOX_DEFAULTS: dict[str, Any] = {
    "entity": None,
    "status": "pending",
    "note": None,
    "result": None,
    "attempts": 0,
    "finished_at": None,
    "inline": 0,
    "late": 0,
}


def _metric(name: str) -> str:
    """A contact's metric as a number (NULL when absent or not a number); ``name`` is fixed."""
    path = f"data->'metrics'->'{name}'"
    return f"(CASE WHEN jsonb_typeof({path}) = 'number' THEN ({path})::text::numeric END)"


#: The orders ``list_contacts`` offers, by name: fixed SQL, never built from input. NULLs sort
#: as SQLite sorts them (first going up, last going down).
CONTACT_ORDERS = {
    "id": "id",
    "spent": f"coalesce({_metric('total_spent')}, 0) DESC, id",
    "orders": f"coalesce({_metric('orders_count')}, 0) DESC, id",
    "recent": "last_event_at DESC NULLS LAST, id",
    "created": "created_at NULLS FIRST, id",
}


class _NoSQLiteDatabase:
    """What ``db`` is on PostgreSQL until plugins' tables go through the dialect-free table
    API: using it says so, instead of failing somewhere inside sqlite-utils."""

    def __init__(self, where: str) -> None:
        self._where = where

    def __getattr__(self, name: str) -> Any:
        raise StoreError(
            f"{self._where} is a PostgreSQL store: plugins' own tables are not available on it "
            f"through a sqlite_utils.Database (tried .{name})"
        )


#: The core's tables with rows that are a contact's own (by ``contact_id``; ``contacts`` by id).
_ERASED_BY_CONTACT = (
    "events",
    "stage_transitions",
    "ingest_failures",
    "outbox",
    "traces",
    "action_history",
    "contacts",
    "rule_fires",
    "anchors",
)
#: The core's tables whose other rows may refer to a contact (its id, address, name).
_REWRITTEN = (*_ERASED_BY_CONTACT, "runtime_status")
#: Configuration and bookkeeping, not about people: an erasure neither rewrites nor checks them.
_NOT_PERSONAL = {"clm_migrations", "rulesets", "ruleset_sets", "erasure_key"}


def _rows_mentioning(
    tx: _Queries, erasure: Erasure, table: str
) -> tuple[list[tuple[str, str]], list[Any]]:
    """``table``'s (column, type), and ``(ctid, *values as text)`` of its rows in which some
    column may mention the contact (``strpos`` in SQL; ``Erasure.mentions`` decides). The
    table's name comes from the catalogue, never from input."""
    columns = [
        (name, kind)
        for name, kind in tx._all(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            [table],
        )
    ]
    tests, args = [], []
    for column, _ in columns:
        text = f'"{column}"::text'
        for term, folded in erasure.search_terms():
            tests.append(f"strpos(lower({text}), %s) > 0" if folded else f"strpos({text}, %s) > 0")
            args.append(term)
    if not tests:
        return columns, []
    selected = ", ".join(f'"{column}"::text' for column, _ in columns)
    rows = tx._all(f'SELECT ctid::text, {selected} FROM "{table}" WHERE {" OR ".join(tests)}', args)
    return columns, rows


def _rewrite_table(tx: _Queries, erasure: Erasure, table: str) -> int:
    """One of the core's tables on PostgreSQL: every text or JSON value that mentions the
    contact rewritten, value by value; the rows reported as pseudonymised."""
    columns, rows = _rows_mentioning(tx, erasure, table)
    changed = 0
    for ctid, *values in rows:
        updates = {
            (column, kind): erasure.rewrite_text(value)
            for (column, kind), value in zip(columns, values, strict=True)
            if kind in ("text", "json", "jsonb")
            and isinstance(value, str)
            and erasure.mentions(value)
        }
        if updates:
            assignments = ", ".join(
                f'"{column}" = %s' + (f"::{kind}" if kind != "text" else "")
                for column, kind in updates
            )
            tx._run(
                f'UPDATE "{table}" SET {assignments} WHERE ctid = %s::tid',
                [*updates.values(), ctid],
            )
            changed += 1
    erasure.pseudonymised(table, changed)
    return changed


def _check_erased(tx: _Queries, erasure: Erasure) -> None:
    """Every table but configuration: no column of any row may mention the contact."""
    tables = [
        row[0]
        for row in tx._all(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
        if row[0] not in _NOT_PERSONAL
    ]
    for table in tables:
        columns, rows = _rows_mentioning(tx, erasure, table)
        for _, *values in rows:
            for (column, _kind), value in zip(columns, values, strict=True):
                if value is not None and erasure.mentions(str(value)):
                    raise StoreError(
                        f"erasure incomplete: {table}.{column} still mentions the contact "
                        "(the plugin that owns the table must erase or pseudonymise it in "
                        "its forget_contact hook); nothing was erased"
                    )


class _Queries:
    """Running SQL on whichever connection ``_connection`` gives."""

    def _connection(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _all(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchone()

    def _run(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        with self._connection() as conn:
            return conn.execute(sql, params).rowcount

    def _many(self, sql: str, rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> int:
        """``executemany`` (pipelined); how many rows it changed."""
        rows = list(rows)
        if not rows:
            return 0
        with self._connection() as conn:
            if len(rows) == 1:  # one round trip; a pipeline's sync would cost a second
                return conn.execute(sql, rows[0]).rowcount
            with conn.cursor() as cursor:
                cursor.executemany(sql, rows)
                return cursor.rowcount

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[Any]:
        with self._connection() as conn, conn.cursor() as cursor:
            yield from cursor.execute(sql, params)


class PostgresStore(_Queries):
    """A clm-engine store in a PostgreSQL database, given by its URL (``postgresql://...``).

    The database must exist; ``migrate`` creates the tables. ``pool_size`` (default
    ``$CLM_PG_POOL_SIZE``, else 4) bounds the connections this process opens (reads borrow
    one per query, a write one per transaction).
    """

    def __init__(
        self, url: str, *, pool_size: int | None = None, connect_timeout: float = 10.0
    ) -> None:
        pool_size = pool_size if pool_size is not None else pool_size_from_env()
        self.url = url
        self.path = _redact(url)  # what messages call the store (SQLiteStore.path is its file)
        self._local = threading.local()
        try:  # once, directly: a wrong URL fails at once with the server's reason, not a timeout
            psycopg.connect(url, connect_timeout=max(1, round(connect_timeout))).close()
        except psycopg.Error as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error)
            raise StoreError(f"cannot connect to {self.path}: {reason}") from None
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(pool_size, 1),
            kwargs={"autocommit": True},
            open=False,
            name="clm-engine",
        )
        try:
            self.pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self.pool.close()
            raise StoreError(f"cannot connect to {self.path} within {connect_timeout:g}s") from None
        self._db = _NoSQLiteDatabase(self.path)
        #: The plugins' declared tables (``migrate(tables=...)``): what ``tables`` reaches.
        self.declared: dict[str, Table] = {}
        self._readable = PostgresTables(self._connection, self.declared, writable=False)

    @property
    def db(self) -> Any:
        """No ``sqlite_utils.Database`` here (see ``_NoSQLiteDatabase``)."""
        return self._db

    @property
    def tables(self) -> PostgresTables:
        """The plugins' declared tables, read only, outside any write (commands, reports)."""
        return self._readable

    def backup_to(self, path: str | os.PathLike[str]) -> None:
        """Copy the whole store, as committed now, into a new SQLite file at ``path`` (a
        simulation's scratch store): the core's tables in one snapshot, then the declared
        tables (``store.copy.copy_to_sqlite``). This store is only read."""
        from .copy import copy_to_sqlite

        copy_to_sqlite(self, path)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None:  # inside this thread's write: see what it wrote
            yield conn
            return
        with self.pool.connection() as conn:
            yield conn

    # -- writing -----------------------------------------------------------------------------

    @property
    def concurrent_writers(self) -> bool:
        """True: many processes write here at once (dispatch claims under a lease first)."""
        return True

    @contextmanager
    def write(self, *, concurrent: bool = False) -> Iterator[PostgresTransaction]:
        """A write transaction: exclusive, or ``concurrent`` (see the module's docstring)."""
        if getattr(self._local, "conn", None) is not None:
            raise StoreError(f"{self.path}: cannot begin a write inside a write")
        try:
            with self.pool.connection() as conn, conn.transaction():
                lock = "pg_advisory_xact_lock_shared" if concurrent else "pg_advisory_xact_lock"
                conn.execute(f"SELECT {lock}(%s)", [WRITE_LOCK])
                self._local.conn = conn
                try:
                    tx = PostgresTransaction(conn, declared=self.declared, holds_all=not concurrent)
                    yield tx
                    tx.write_action_history()
                finally:
                    self._local.conn = None
        except _CONFLICTS as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise WriteConflict(f"{self.path}: rolled back, run it again ({reason})") from error

    def read(self) -> PostgresTransaction:
        """The transaction's read methods, without taking the write lock (dry runs, reports)."""
        return PostgresTransaction(None, self._connection, declared=self.declared)

    def migrate(self, tables: Sequence[Table] = ()) -> list[str]:
        """Bring the core's schema up to date (the PostgreSQL DDL of ``postgres_schema``), then
        create or complete the plugins' declared ``tables`` (``postgres_tables``), in one
        write; what ran, as set:name and table:change."""
        declared = check_tables(tables)
        pending = bool(self.pending_migrations())
        if not pending:
            with self.pool.connection() as conn:
                if not plan_tables(conn, declared.values()):
                    self.declared.update(declared)
                    return []
        applied: list[str] = []
        with self.write() as tx:
            assert tx.conn is not None
            tx.conn.execute(MIGRATIONS_TABLE)
            done = {name for (name,) in tx._all(
                "SELECT name FROM clm_migrations WHERE migration_set = %s", [CORE_SET]
            )}  # fmt: skip
            for name, ddl in CORE_MIGRATIONS:
                if name in done:
                    continue
                for statement in ddl.split(";"):
                    if statement.strip():
                        tx.conn.execute(statement)
                if name == "m002_erasure_records":  # a random key, as SQLite's randomblob(32)
                    tx.conn.execute(
                        "INSERT INTO erasure_key (id, key) VALUES (1, %s)", [secrets.token_hex(32)]
                    )
                tx.conn.execute(
                    "INSERT INTO clm_migrations (migration_set, name) VALUES (%s, %s)",
                    [CORE_SET, name],
                )
                applied.append(f"{CORE_SET}:{name}")
            applied.extend(ensure_tables(tx.conn, declared.values()))
        self.declared.update(declared)
        return applied

    def pending_migrations(self) -> list[str]:
        """The core's migrations not yet applied to this database."""
        exists = self._one("SELECT to_regclass('clm_migrations') IS NOT NULL")[0]
        done = (
            {
                r[0]
                for r in self._all(
                    "SELECT name FROM clm_migrations WHERE migration_set = %s", [CORE_SET]
                )
            }
            if exists
            else set()
        )
        return [name for name, _ in CORE_MIGRATIONS if name not in done]

    def applied_migrations(self) -> dict[str, list[str]]:
        """Which migrations ran here, per set, in order."""
        if not self._one("SELECT to_regclass('clm_migrations') IS NOT NULL")[0]:
            return {}
        found: dict[str, list[str]] = {}
        for migration_set, name in self._all(
            "SELECT migration_set, name FROM clm_migrations ORDER BY applied_at, name"
        ):
            found.setdefault(migration_set, []).append(name)
        return found

    # -- reading -----------------------------------------------------------------------------

    def get_contact(self, contact_id: str) -> Contact | None:
        row = self._one("SELECT data::text FROM contacts WHERE id = %s", [contact_id])
        return Contact.model_validate_json(row[0]) if row else None

    def list_contacts(
        self,
        *,
        stage: str | None = None,
        limit: int = 50,
        offset: int = 0,
        order_by: str = "id",
    ) -> list[Contact]:
        if order_by not in CONTACT_ORDERS:
            raise StoreError(
                f"cannot sort contacts by {order_by!r}; use one of {list(CONTACT_ORDERS)}"
            )
        where, params = ("WHERE stage = %s", [stage]) if stage is not None else ("", [])
        rows = self._all(
            f"SELECT data::text FROM contacts {where} ORDER BY {CONTACT_ORDERS[order_by]} "
            "LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return [Contact.model_validate_json(data) for (data,) in rows]

    def iter_contacts(self, *, chunk_size: int = 1000) -> Iterator[Contact]:
        last = ""
        while True:
            rows = self._all(
                "SELECT id, data::text FROM contacts WHERE id > %s ORDER BY id LIMIT %s",
                [last, chunk_size],
            )
            if not rows:
                return
            for _, data in rows:
                yield Contact.model_validate_json(data)
            last = rows[-1][0]

    def count_contacts(self, *, stage: str | None = None) -> int:
        if stage is None:
            return int(self._one("SELECT count(*) FROM contacts")[0])
        return int(self._one("SELECT count(*) FROM contacts WHERE stage = %s", [stage])[0])

    def recent_events(self, contact_id: str, *, limit: int = 20) -> list[Event]:
        rows = self._all(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE contact_id = %s "
            "ORDER BY occurred_at DESC, seq DESC LIMIT %s",
            [contact_id, limit],
        )
        return [_event_from_row(row) for row in rows]

    def stage_history(self, contact_id: str) -> list[StageTransition]:
        rows = self._all(
            "SELECT contact_id, from_stage, to_stage, at, cause, event_id FROM stage_transitions "
            "WHERE contact_id = %s ORDER BY at, id",
            [contact_id],
        )
        return [StageTransition(*row) for row in rows]

    def failures(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT event_id, contact_id, type, reducer, error, attempts, failed_at "
            "FROM ingest_failures ORDER BY failed_at DESC LIMIT %s",
            [limit],
        )
        keys = ("event_id", "contact_id", "type", "reducer", "error", "attempts", "failed_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def summary(self) -> dict[str, Any]:
        """What the engine knows, in numbers: the body of ``clm report``."""
        contacts, with_email, consenting = self._one(
            "SELECT count(*), count(email), "
            "count(*) FILTER (WHERE data->'consent'->'email' IN ('true', '1')) FROM contacts"
        )
        orders_count, total_spent = _metric("orders_count"), _metric("total_spent")
        customers, orders, revenue = self._one(
            f"SELECT count(*), coalesce(sum({orders_count}), 0), coalesce(sum({total_spent}), 0) "
            f"FROM contacts WHERE {orders_count} > 0"
        )
        orders, revenue = _number(orders), float(revenue)
        events, first, last = self._one(
            "SELECT count(*), min(occurred_at), max(occurred_at) FROM events"
        )
        by_type = self._all(
            "SELECT type, count(*) FROM events GROUP BY type ORDER BY count(*) DESC, type"
        )
        by_stage = self._all(
            "SELECT coalesce(stage, '(none)'), count(*) FROM contacts GROUP BY stage "
            "ORDER BY count(*) DESC"
        )
        failures = self._one("SELECT count(*) FROM ingest_failures")[0]
        return {
            "contacts": contacts,
            "contacts_with_email": with_email,
            "contacts_with_email_consent": consenting,
            "contacts_by_stage": dict(by_stage),
            "customers": customers,
            "orders": orders,
            "revenue": round(revenue, 2),
            "average_order_value": round(revenue / orders, 2) if orders else 0.0,
            "events": events,
            "events_by_type": dict(by_type),
            "first_event_at": first,
            "last_event_at": last,
            "ingest_failures": failures,
        }

    def traces(self, contact_id: str, *, rule: str | None = None, limit: int = 50) -> list[Trace]:
        """A contact's most recent decisions: up to ``limit`` per rule, newest first."""
        where, params = "contact_id = %s", [contact_id]
        if rule is not None:
            where, params = where + " AND rule = %s", [*params, rule]
        rows = self._all(
            f"SELECT {_TRACE_COLUMNS} FROM (SELECT *, row_number() OVER (PARTITION BY ruleset, "
            f"rule ORDER BY at DESC, id DESC) AS nth FROM traces WHERE {where}) AS recent "
            "WHERE nth <= %s ORDER BY at DESC, id DESC",
            [*params, limit],
        )
        return [_trace_row(row) for row in rows]

    def prune_traces(
        self, before: str, *, at: str, batch_size: int = 1000, dry_run: bool = False
    ) -> int:
        """Delete the traces of decisions before ``before``, in batches (see ``Store``)."""
        if dry_run:
            return int(self._one("SELECT count(*) FROM traces WHERE at < %s", [before])[0])
        removed, last, prune = 0, 0, None
        while True:
            with self.write() as tx:
                ids = [
                    row[0]
                    for row in tx._all(
                        "SELECT id FROM traces WHERE id > %s AND at < %s ORDER BY id LIMIT %s",
                        [last, before, batch_size],
                    )
                ]
                if not ids:
                    return removed
                if prune is None:  # remembered with the first batch, so never lost
                    prune = tx._one(
                        "INSERT INTO trace_prunes (before, removed, pruned_at) "
                        "VALUES (%s, 0, %s) RETURNING id",
                        [before, at],
                    )[0]
                tx._run("DELETE FROM traces WHERE id = ANY(%s)", [ids])
                removed += len(ids)
                last = ids[-1]
                tx._run("UPDATE trace_prunes SET removed = %s WHERE id = %s", [removed, prune])

    def traces_pruned_before(self) -> str | None:
        """The latest cutoff a prune removed traces before, or None."""
        before: str | None = self._one("SELECT max(before) FROM trace_prunes")[0]
        return before

    def actions_for(self, contact_id: str, *, rule: str | None = None) -> list[OutboxRow]:
        where, params = "contact_id = %s", [contact_id]
        if rule is not None:
            where, params = where + " AND rule = %s", [*params, rule]
        rows = self._all(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE {where} ORDER BY due_at, seq", params
        )
        return [_outbox_row(row) for row in rows]

    def action_history(self, seqs: Sequence[int]) -> dict[int, list[ActionStep]]:
        found: dict[int, list[ActionStep]] = {}
        rows = self._all(
            "SELECT seq, contact_id, kind, at, due_at, attempts, note, until FROM action_history "
            "WHERE seq = ANY(%s) ORDER BY id",
            [list(seqs)],
        )
        for row in rows:
            found.setdefault(row[0], []).append(ActionStep(*row))
        return found

    def prune_action_history(
        self, before: str, *, batch_size: int = 1000, dry_run: bool = False
    ) -> int:
        if dry_run:
            query = "SELECT count(*) FROM action_history WHERE at < %s"
            return int(self._one(query, [before])[0])
        removed, last = 0, 0
        while True:
            with self.write() as tx:
                ids = [
                    row[0]
                    for row in tx._all(
                        "SELECT id FROM action_history WHERE id > %s AND at < %s ORDER BY id "
                        "LIMIT %s",
                        [last, before, batch_size],
                    )
                ]
                if not ids:
                    return removed
                tx._run("DELETE FROM action_history WHERE id = ANY(%s)", [ids])
                removed += len(ids)
                last = ids[-1]

    def outcome_counts(self, action: str) -> list[tuple[str, str | None, int]]:
        rows = self._all(
            "SELECT status, note, count(*) FROM outbox WHERE action = %s "
            "GROUP BY status, note ORDER BY count(*) DESC, status, note",
            [action],
        )
        return [(status, note, int(count)) for status, note, count in rows]

    def actions_by_key(self, keys: Sequence[str]) -> dict[str, OutboxRow]:
        rows = self._all(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE key = ANY(%s)", [list(keys)])
        return {r.key: r for r in map(_outbox_row, rows)}

    def anchors_of(
        self, contact_id: str, ruleset: str, rule: str
    ) -> list[tuple[str, str, str, str, str | None]]:
        """(entity, anchor_at, fire_at, status, note) of one rule's anchors for a contact."""
        return self._all(
            "SELECT entity, anchor_at, fire_at, status, note FROM anchors WHERE contact_id = %s "
            "AND ruleset = %s AND rule = %s ORDER BY fire_at",
            [contact_id, ruleset, rule],
        )

    def last_event(self, contact_id: str, type_: str) -> Event | None:
        row = self._one(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE contact_id = %s AND type = %s "
            "ORDER BY occurred_at DESC, seq DESC LIMIT 1",
            [contact_id, type_],
        )
        return _event_from_row(row) if row else None

    def ruleset_versions(self) -> list[dict[str, Any]]:
        rows = self._all(
            "SELECT name, version, content_hash, path, loaded_at FROM rulesets "
            "ORDER BY name, loaded_at, seq"
        )
        keys = ("name", "version", "content_hash", "path", "loaded_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def rules_summary(self) -> list[dict[str, Any]]:
        """Per rule: decisions recorded and actions by status (the body of ``clm report``)."""
        decisions = self._all(
            "SELECT ruleset, rule, decision, count(*), count(DISTINCT contact_id) FROM traces "
            "GROUP BY ruleset, rule, decision"
        )
        actions = self._all(
            "SELECT ruleset, rule, status, count(*) FROM outbox GROUP BY ruleset, rule, status"
        )
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for ruleset, rule, decision, count, contacts in decisions:
            entry = found.setdefault((ruleset, rule), {"ruleset": ruleset, "rule": rule})
            entry[decision] = count
            if decision == "fired":
                entry["contacts"] = contacts
        for ruleset, rule, status, count in actions:
            entry = found.setdefault((ruleset, rule), {"ruleset": ruleset, "rule": rule})
            entry.setdefault("actions", {})[status] = count
        return sorted(found.values(), key=lambda e: (e["ruleset"], e["rule"]))

    def score_summary(self) -> dict[str, list[float]]:
        """Every contact's value of every named score, by score name."""
        rows = self._all(
            "SELECT s.key, s.value FROM contacts, jsonb_each(CASE WHEN "
            "jsonb_typeof(contacts.data->'scores') = 'object' THEN contacts.data->'scores' END) "
            "AS s"
        )
        scores: dict[str, list[float]] = {}
        for name, value in rows:
            scores.setdefault(name, []).append(value)
        return scores

    # -- erasure -----------------------------------------------------------------------------

    def forget(
        self,
        contact_id: str,
        *,
        also: Callable[[Tables, Erasure], dict[str, int]],
        erased_at: str,
        requested_by: str,
        files: Sequence[str | os.PathLike[str]] = (),
    ) -> tuple[Erasure, ErasureReport]:
        """Erase a contact in one transaction, as the SQLite store does: delete the core's rows
        that are theirs, let the plugins (``also``) erase theirs, rewrite other contacts'
        references to the pseudonym, check that no table still mentions the contact, and
        record the request. Files are planned here and changed by the caller after the commit.

        ``also`` gets the declared tables of the write."""
        with self.write() as tx:
            erasure = self._erasure_of(tx, contact_id)
            removed: dict[str, int] = {}
            for table in _ERASED_BY_CONTACT:
                column = "id" if table == "contacts" else "contact_id"
                removed[table] = tx._run(f"DELETE FROM {table} WHERE {column} = %s", [contact_id])
            removed.update(erase_declared_core_tables(tx.tables, contact_id))
            removed.update(also(tx.tables, erasure))
            for table in _REWRITTEN:
                _rewrite_table(tx, erasure, table)
            paths = [row[0] for row in tx._all("SELECT path FROM rejects_files")]
            for path in dict.fromkeys([*paths, *map(str, files)]):
                erasure.scrub_lines(path)
            _check_erased(tx, erasure)
            report = ErasureReport(
                erasure_id=erasure.pseudonym,
                erased_at=erased_at,
                requested_by=requested_by,
                removed={table: count for table, count in removed.items() if count},
                pseudonymised=dict(erasure.rewritten),
            )
            planned = {
                "remove": len(erasure.files_to_remove),
                "rewrite": len(erasure.files_to_replace),
            }
            tx._run(
                "INSERT INTO erasures (erasure_id, erased_at, requested_by, removed, "
                "pseudonymised, files) VALUES (%s, %s, %s, %s::json, %s::json, %s::json)",
                [
                    erasure.pseudonym,
                    erased_at,
                    requested_by,
                    _dumps(report.removed),
                    _dumps(report.pseudonymised),
                    _dumps(planned),
                ],
            )
        return erasure, report

    def _erasure_of(self, tx: PostgresTransaction, contact_id: str) -> Erasure:
        """What the contact is known by (as ``SQLiteStore._erasure_of``)."""
        emails: set[str] = set()
        names: set[str] = set()

        def collect(values: Any, *, with_names: bool) -> None:
            if not isinstance(values, dict):
                return
            if isinstance(values.get("email"), str):
                emails.add(values["email"])
            if with_names:  # a purchase's "name" is the product's
                names.update(names_in(values))
                attributes = values.get("attributes")
                if isinstance(attributes, dict):
                    names.update(names_in(attributes))

        for (data,) in tx._all("SELECT data FROM contacts WHERE id = %s", [contact_id]):
            collect(data, with_names=True)
        for type_, properties in tx._all(
            "SELECT type, properties FROM events WHERE contact_id = %s", [contact_id]
        ):
            collect(properties, with_names=type_ in PROFILE_EVENTS)
        for (event,) in tx._all(
            "SELECT event FROM ingest_failures WHERE contact_id = %s", [contact_id]
        ):
            stored = json.loads(event)
            collect(stored.get("properties"), with_names=stored.get("type") in PROFILE_EVENTS)
        row = tx._one("SELECT key FROM erasure_key WHERE id = 1")
        if row is None:
            raise StoreError(f"{self.path}: no erasure key (run clm migrate)")
        return Erasure(contact_id, emails=emails, names=names, key=bytes.fromhex(row[0]))

    def record_rejects_file(self, path: str, written_at: str) -> None:
        """Remember a rejects file ``clm ingest`` wrote, so an erasure can scrub it."""
        with self.write() as tx:
            tx._run(
                "INSERT INTO rejects_files (path, written_at) VALUES (%s, %s) "
                "ON CONFLICT (path) DO UPDATE SET written_at = excluded.written_at",
                [path, written_at],
            )

    # -- clm serve's API keys -----------------------------------------------------------------

    def create_api_key(
        self, key_id: str, *, name: str, scope: str, token_hash: str, created_at: str
    ) -> None:
        """Record a new API key of ``clm serve`` (only the hash of its token)."""
        with self.write() as tx:
            tx._run(
                "INSERT INTO api_keys (id, name, scope, token_hash, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                [key_id, name, scope, token_hash, created_at],
            )

    def api_key(self, key_id: str) -> dict[str, Any] | None:
        """One API key by id: id, name, scope, token_hash, created_at, revoked_at; or None."""
        row = self._one(
            "SELECT id, name, scope, token_hash, created_at, revoked_at FROM api_keys "
            "WHERE id = %s",
            [key_id],
        )
        keys = ("id", "name", "scope", "token_hash", "created_at", "revoked_at")
        return dict(zip(keys, row, strict=True)) if row else None

    def api_keys(self) -> list[dict[str, Any]]:
        """Every API key, revoked ones too, oldest first (without their hashes)."""
        rows = self._all(
            "SELECT id, name, scope, created_at, revoked_at FROM api_keys ORDER BY created_at, id"
        )
        keys = ("id", "name", "scope", "created_at", "revoked_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def revoke_api_key(self, key_id: str, *, at: str) -> bool:
        """Revoke a key; False if there is no such key or it was revoked already."""
        with self.write() as tx:
            return (
                tx._run(
                    "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                    [at, key_id],
                )
                == 1
            )

    def close(self) -> None:
        self.pool.close()


class PostgresTransaction(_Queries):
    """The writes and the reads-for-writing of one write transaction (or, without ``conn``,
    the same reads, each on a connection of the pool)."""

    def __init__(
        self,
        conn: Connection | None,
        connection: Callable[[], AbstractContextManager[Connection]] | None = None,
        *,
        declared: Mapping[str, Table] | None = None,
        holds_all: bool = False,
    ) -> None:
        self.conn = conn
        self._borrow = connection
        #: An exclusive write holds every contact; a concurrent one those it locked.
        self._holds_all = holds_all
        self._savepoints = 0
        self._locked: set[str] = set()
        self._db = _NoSQLiteDatabase("this store")
        self._history: list[ActionStep] = []  # written as the transaction commits
        self._tables = PostgresTables(
            self._connection, declared if declared is not None else {}, writable=conn is not None
        )

    @property
    def db(self) -> Any:
        """No ``sqlite_utils.Database`` here (see ``_NoSQLiteDatabase``)."""
        return self._db

    @property
    def tables(self) -> PostgresTables:
        """The plugins' declared tables in this transaction (read only outside a write)."""
        return self._tables

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self.conn is not None:
            yield self.conn
        else:
            assert self._borrow is not None
            with self._borrow() as conn:
                yield conn

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested step that rolls back alone if it raises (one action of a dispatch batch).

        One round trip, not two: a step that succeeds is not released (``RELEASE SAVEPOINT``
        would cost a second trip to the server, and dispatch takes two steps per action);
        the transaction's commit ends them all."""
        if self.conn is None:
            raise StoreError("a savepoint needs a write transaction")
        self._savepoints += 1
        name = f"clm_step_{self._savepoints}"  # a fixed name and a number: safe in SQL text
        history = len(self._history)
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            del self._history[history:]
            raise

    def lock_contacts(self, ids: Iterable[str], *, wait: bool = True) -> set[str]:
        """Hold contacts for this transaction (see the module's docstring); those held.

        Two levels, so that a transaction never needs more than about a thousand slots of
        the server's lock table: a contact's bucket (``hashtext(id) & 1023``) and the contact.
        A few contacts (up to ``FEW_CONTACTS`` in one call) take their buckets *shared* and
        themselves exclusively: two such transactions exclude each other only on a contact
        they share. More (an ingest batch of 10,000 contacts) take their buckets exclusively
        instead (at most 1,024 locks), which excludes everyone on those buckets. Every lock
        is taken in (bucket, contact) key order, so two first calls never wait in a ring."""
        wanted = set(ids)
        if self._holds_all or self.conn is None:
            return wanted  # an exclusive write holds them all; a read view locks nothing
        new = sorted(wanted - self._locked)
        if not new:
            return wanted & self._locked
        few = len(new) <= FEW_CONTACTS
        keys = (
            "SELECT DISTINCT hashtext(c) & %s AS b, hashtext(c) AS k, c "
            "FROM unnest(%s::text[]) AS c ORDER BY b, k"
        )
        params: list[Any] = [BUCKETS - 1, new]
        if wait and few:
            self._run(
                "SELECT pg_advisory_xact_lock_shared(%s, b), pg_advisory_xact_lock(%s, k) "
                f"FROM ({keys}) AS keys",
                [BUCKET_LOCKS, CONTACT_LOCKS, *params],
            )
            self._locked.update(new)
        elif wait:
            self._run(
                "SELECT pg_advisory_xact_lock(%s, b) FROM "
                f"(SELECT DISTINCT b FROM ({keys}) AS keys ORDER BY b) AS buckets",
                [BUCKET_LOCKS, *params],
            )
            self._locked.update(new)
        elif few:
            free = self._all(
                f"SELECT c FROM ({keys}) AS keys WHERE pg_try_advisory_xact_lock_shared(%s, b) "
                "AND pg_try_advisory_xact_lock(%s, k)",
                [*params, BUCKET_LOCKS, CONTACT_LOCKS],
            )
            self._locked.update(row[0] for row in free)
        else:
            free = self._all(
                f"SELECT c FROM ({keys}) AS keys WHERE b IN (SELECT b FROM (SELECT DISTINCT b "
                f"FROM ({keys}) AS keys2 ORDER BY b) AS buckets "
                "WHERE pg_try_advisory_xact_lock(%s, b))",
                [*params, *params, BUCKET_LOCKS],
            )
            self._locked.update(row[0] for row in free)
        return wanted & self._locked

    def existing_event_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = self._all("SELECT id FROM events WHERE id = ANY(%s)", [list(ids)])
        return {row[0] for row in rows}

    def load_contacts(self, ids: Iterable[str]) -> dict[str, str]:
        ids = list(ids)
        if not ids:
            return {}
        return dict(self._all("SELECT id, data::text FROM contacts WHERE id = ANY(%s)", [ids]))

    def contact_events(self, contact_id: str) -> list[Event]:
        """A contact's stored events, oldest first (ties in arrival order)."""
        return self.contact_history(contact_id)[0]

    def event_of(self, contact_id: str, event_id: str) -> Event | None:
        """One stored event of a contact, by id (the trigger of a decision), or None."""
        row = self._one(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = %s AND contact_id = %s",
            [event_id, contact_id],
        )
        return _event_from_row(row) if row else None

    def contact_history(self, contact_id: str) -> tuple[list[Event], dict[str, str]]:
        """A contact's stored events, oldest first (ties in arrival order), and the ``origin``
        of those that are the effect of a decision run inline: event id -> outbox key."""
        events: list[Event] = []
        origins: dict[str, str] = {}
        rows = self._all(
            f"SELECT {_EVENT_COLUMNS}, origin FROM events WHERE contact_id = %s "
            "ORDER BY occurred_at, seq",
            [contact_id],
        )
        for row in rows:
            events.append(_event_from_row(row[:5]))
            if row[5] is not None:
                origins[row[0]] = row[5]
        return events, origins

    def insert_events(
        self,
        events: Sequence[Event],
        *,
        received_at: str,
        origins: Mapping[str, str] | None = None,
    ) -> None:
        """Store new events; ``origins`` names the decision (outbox key) an effect came from."""
        origin = (origins or {}).get
        self._many(
            "INSERT INTO events (id, contact_id, type, occurred_at, properties, received_at, "
            "origin) VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s)",
            [
                (
                    e.id,
                    e.contact_id,
                    e.type,
                    e.occurred_at_text,
                    _dumps(e.properties),
                    received_at,
                    origin(e.id or ""),
                )
                for e in events
            ],
        )

    def delete_events(self, ids: Sequence[str]) -> None:
        """Remove events: only the effects of decisions a re-judgement recomputes."""
        if ids:
            self._run("DELETE FROM events WHERE id = ANY(%s)", [list(ids)])

    def upsert_contacts(self, contacts: Sequence[Contact], *, updated_at: str) -> None:
        """Insert or replace contacts; ``updated_at`` is the text of the batch's one clock time."""
        self._many(
            "INSERT INTO contacts (id, email, stage, timezone, created_at, updated_at, "
            "last_event_at, data) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb) "
            "ON CONFLICT (id) DO UPDATE SET email = excluded.email, stage = excluded.stage, "
            "timezone = excluded.timezone, created_at = excluded.created_at, "
            "updated_at = excluded.updated_at, last_event_at = excluded.last_event_at, "
            "data = excluded.data",
            [
                (
                    c.id,
                    c.email,
                    c.stage,
                    c.timezone,
                    c.created_at and utc_text(c.created_at),
                    updated_at,
                    c.last_event_at and utc_text(c.last_event_at),
                    c.model_dump_json(),
                )
                for c in contacts
            ],
        )

    def add_transitions(self, transitions: Sequence[StageTransition]) -> None:
        self._many(
            "INSERT INTO stage_transitions (contact_id, from_stage, to_stage, at, cause, event_id) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (t.contact_id, t.from_stage, t.to_stage, t.at, t.cause, t.event_id)
                for t in transitions
            ],
        )

    def replace_transitions(self, contact_id: str, transitions: Sequence[StageTransition]) -> None:
        self._run("DELETE FROM stage_transitions WHERE contact_id = %s", [contact_id])
        self.add_transitions(transitions)

    def record_failures(self, failures: Sequence[IngestFailure], *, failed_at: str) -> None:
        self._many(
            "INSERT INTO ingest_failures (event_id, contact_id, type, event, reducer, error, "
            "failed_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO UPDATE "
            "SET reducer = excluded.reducer, error = excluded.error, "
            "attempts = ingest_failures.attempts + 1, failed_at = excluded.failed_at",
            [
                (
                    f.event.id,
                    f.event.contact_id,
                    f.event.type,
                    f.event.to_json(),
                    f.reducer,
                    f.error,
                    failed_at,
                )
                for f in failures
            ],
        )

    def clear_failures(self, event_ids: Sequence[str]) -> None:
        """Forget earlier failures of events that have now been applied."""
        if event_ids and self._one("SELECT 1 FROM ingest_failures LIMIT 1"):
            self._run("DELETE FROM ingest_failures WHERE event_id = ANY(%s)", [list(event_ids)])

    # -- rules: limits, outbox, traces, versions ----------------------------------------------

    def count_events(self, contact_id: str, type: str, since: str | None) -> int:
        if since is None:
            sql, params = "contact_id = %s AND type = %s", [contact_id, type]
        else:
            sql, params = (
                "contact_id = %s AND type = %s AND occurred_at >= %s",
                [contact_id, type, since],
            )
        return int(self._one(f"SELECT count(*) FROM events WHERE {sql}", params)[0])

    def fires_of(self, contact_ids: Iterable[str]) -> list[tuple[str, str, str, str, str, str]]:
        """Every recorded fire of a limited rule for these contacts:
        (contact_id, ruleset, rule, entity, occurrence, at)."""
        return self._all(
            "SELECT contact_id, ruleset, rule, entity, occurrence, at FROM rule_fires "
            "WHERE contact_id = ANY(%s)",
            [list(contact_ids)],
        )

    def record_fires(self, fires: Sequence[tuple[str, str, str, str, str, str]]) -> None:
        """Record fires (contact_id, ruleset, rule, entity, occurrence, at) of limited rules."""
        self._many(
            "INSERT INTO rule_fires (contact_id, ruleset, rule, entity, occurrence, at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            fires,
        )

    def delete_fires(self, contact_id: str, rules: Sequence[tuple[str, str]], since: str) -> None:
        """Forget a contact's fires of ``rules`` (ruleset, rule) from ``since`` on: the fires a
        re-judgement recomputes."""
        self._many(
            "DELETE FROM rule_fires WHERE contact_id = %s AND ruleset = %s AND rule = %s "
            "AND at >= %s",
            [(contact_id, ruleset, rule, since) for ruleset, rule in rules],
        )

    def enqueue(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert outbox rows; a row whose key exists is ignored. Returns how many were new.

        A row run inline (``inline``: 1) arrives finished, with its ``status``, ``note``,
        ``result``, ``attempts`` and ``finished_at``; any other row is pending."""
        return self._many(
            "INSERT INTO outbox (key, ruleset, version, content_hash, rule, contact_id, action, "
            "params, priority, depth, due_at, created_at, entity, status, note, result, "
            "attempts, finished_at, inline, late) VALUES (%(key)s, %(ruleset)s, %(version)s, "
            "%(content_hash)s, %(rule)s, %(contact_id)s, %(action)s, %(params)s::json, "
            "%(priority)s, %(depth)s, %(due_at)s, %(created_at)s, %(entity)s, %(status)s, "
            "%(note)s, %(result)s::json, %(attempts)s, %(finished_at)s, %(inline)s, %(late)s) "
            "ON CONFLICT (key) DO NOTHING",
            [
                {
                    **_OUTBOX_DEFAULTS,
                    **row,
                    "params": _dumps(row["params"]),
                    "result": _json(row.get("result")),
                    "inline": int(row.get("inline", 0)),
                    "late": int(row.get("late", 0)),
                }
                for row in rows
            ],
        )

    def decisions_of(self, contact_id: str) -> dict[str, tuple[str, str, str, str, int]]:
        """A contact's outbox rows: key -> (ruleset, rule, status, due_at, inline)."""
        rows = self._all(
            "SELECT key, ruleset, rule, status, due_at, inline FROM outbox WHERE contact_id = %s",
            [contact_id],
        )
        return {row[0]: tuple(row[1:]) for row in rows}

    def redo_actions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Overwrite the outcome of inline rows a re-judgement ran again (by ``key``)."""
        self._many(
            "UPDATE outbox SET status = %(status)s, note = %(note)s, result = %(result)s::json, "
            "finished_at = %(finished_at)s, due_at = %(due_at)s WHERE key = %(key)s",
            [
                {
                    "key": row["key"],
                    "status": row["status"],
                    "note": row.get("note"),
                    "result": _json(row.get("result")),
                    "finished_at": row.get("finished_at"),
                    "due_at": row["due_at"],
                }
                for row in rows
            ],
        )

    def retract_actions(self, keys: Sequence[str], *, note: str, at: str) -> None:
        """Mark inline rows that a corrected history no longer implies as ``retracted``."""
        if keys:
            self._run(
                "UPDATE outbox SET status = 'retracted', note = %s, finished_at = %s "
                "WHERE key = ANY(%s)",
                [note, at, list(keys)],
            )

    def delete_traces(self, contact_id: str, rules: Sequence[tuple[str, str]], since: str) -> None:
        """Forget a contact's traces of ``rules`` from ``since`` on (a re-judgement redoes them),
        but for those of retractions: what was retracted, and why, stays on record."""
        self._many(
            "DELETE FROM traces WHERE contact_id = %s AND ruleset = %s AND rule = %s "
            "AND at >= %s AND decision != 'retracted'",
            [(contact_id, ruleset, rule, since) for ruleset, rule in rules],
        )

    def add_traces(self, traces: Sequence[Trace], *, recorded_at: str) -> None:
        self._many(
            f"INSERT INTO traces ({_TRACE_COLUMNS}, recorded_at) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s::json, %s, %s::json, %s)",
            [
                (
                    t.contact_id,
                    t.ruleset,
                    t.version,
                    t.content_hash,
                    t.rule,
                    t.occurrence,
                    t.trigger,
                    t.decision,
                    t.detail,
                    _json(t.tree),
                    _dumps(t.actions),
                    t.at,
                    _json(t.seen),
                    recorded_at,
                )
                for t in traces
            ],
        )

    def due_actions(self, now: str, limit: int) -> list[OutboxRow]:
        rows = self._all(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND due_at <= %s "
            "AND (lease_until IS NULL OR lease_until <= %s) "
            "ORDER BY due_at, priority DESC, seq LIMIT %s",
            [now, now, limit],
        )
        return [_outbox_row(row) for row in rows]

    def claim_due_actions(
        self, now: str, limit: int, *, lease_until: str, worker: str
    ) -> list[OutboxRow]:
        """Claim due rows for ``worker``: ``FOR UPDATE SKIP LOCKED`` passes over the rows
        another worker is claiming this instant, so claims never wait on each other."""
        rows = self._all(
            "WITH due AS (SELECT seq FROM outbox WHERE status = 'pending' AND due_at <= %s "
            "AND (lease_until IS NULL OR lease_until <= %s) "
            "ORDER BY due_at, priority DESC, seq LIMIT %s FOR UPDATE SKIP LOCKED) "
            "UPDATE outbox SET lease_until = %s, worker = %s FROM due WHERE outbox.seq = due.seq "
            f"RETURNING {_qualified('outbox', _OUTBOX_COLUMNS)}",
            [now, now, limit, lease_until, worker],
        )
        return _in_dispatch_order(_outbox_row(row) for row in rows)

    def held_actions(
        self, seqs: Sequence[int], *, worker: str, lease_until: str
    ) -> list[OutboxRow]:
        """The rows ``worker`` still holds under this lease, row-locked here, lease released.

        ``FOR UPDATE``, not ``SKIP LOCKED``: the rows are this worker's by their lease, so a
        moment's row lock elsewhere is waited for; skipping would leave a claimed row unrun
        and out of every other worker's reach until its lease ran out."""
        rows = self._all(
            "WITH held AS (SELECT seq FROM outbox WHERE seq = ANY(%s) AND status = 'pending' "
            "AND worker = %s AND lease_until = %s ORDER BY seq FOR UPDATE) "
            "UPDATE outbox SET lease_until = NULL FROM held WHERE outbox.seq = held.seq "
            f"RETURNING {_qualified('outbox', _OUTBOX_COLUMNS)}",
            [list(seqs), worker, lease_until],
        )
        return _in_dispatch_order(_outbox_row(row) for row in rows)

    def action(self, seq: int) -> OutboxRow | None:
        # In a concurrent write, the row is held from this read to the commit: what a worker
        # checks before recording an outcome (still its claim?) stays true until it is written.
        lock = " FOR UPDATE" if self.conn is not None and not self._holds_all else ""
        row = self._one(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq = %s{lock}", [seq])
        return _outbox_row(row) if row else None

    def finish_action(
        self, seq: int, *, status: str, note: str | None, result: Any, at: str, attempts: int
    ) -> None:
        self._run(
            "UPDATE outbox SET status = %s, note = %s, result = %s::json, finished_at = %s, "
            "attempts = %s, lease_until = NULL WHERE seq = %s",
            [status, note, _json(result), at, attempts, seq],
        )

    def reschedule_action(self, seq: int, *, due_at: str, note: str, attempts: int) -> None:
        self._run(
            "UPDATE outbox SET due_at = %s, note = %s, attempts = %s, lease_until = NULL "
            "WHERE seq = %s",
            [due_at, note, attempts, seq],
        )

    def claim_action(self, seq: int, *, lease_until: str, note: str, attempts: int) -> None:
        """Hold a row for a worker until ``lease_until``: it is due again then, if unrecorded."""
        self._run(
            "UPDATE outbox SET due_at = %s, lease_until = %s, note = %s, attempts = %s "
            "WHERE seq = %s",
            [lease_until, lease_until, note, attempts, seq],
        )

    def add_action_history(self, steps: Sequence[ActionStep]) -> None:
        self._history.extend(steps)

    def write_action_history(self) -> None:
        """Write the steps ``add_action_history`` held, in one batch (at commit)."""
        if self._history:
            self._many(
                "INSERT INTO action_history (seq, contact_id, kind, at, due_at, attempts, "
                "note, until) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (s.seq, s.contact_id, s.kind, s.at, s.due_at, s.attempts, s.note, s.until)
                    for s in self._history
                ],
            )
            self._history.clear()

    def claimed_actions(self, contact_id: str, now: str) -> list[OutboxRow]:
        """A contact's rows held by a worker right now (external actions on their way)."""
        rows = self._all(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE contact_id = %s AND status = 'pending' "
            "AND lease_until > %s ORDER BY seq",
            [contact_id, now],
        )
        return [_outbox_row(row) for row in rows]

    def record_ruleset(
        self, name: str, version: int, content_hash: str, path: str, content: str, at: str
    ) -> bool:
        return (
            self._run(
                "INSERT INTO rulesets (name, version, content_hash, path, content, loaded_at) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name, content_hash) DO NOTHING",
                [name, version, content_hash, path, content, at],
            )
            == 1
        )

    def ruleset_source(self, name: str, content_hash: str) -> str | None:
        """The text of one stored ruleset version, or None if unknown."""
        row = self._one(
            "SELECT content FROM rulesets WHERE name = %s AND content_hash = %s",
            [name, content_hash],
        )
        return row[0] if row else None

    def record_ruleset_set(
        self, content_hash: str, files: Sequence[dict[str, str]], summary: Sequence[Any], at: str
    ) -> None:
        """Keep a loaded set of rulesets and documents whole; a set loaded again is touched."""
        self._run(
            "INSERT INTO ruleset_sets (content_hash, files, summary, first_loaded_at, "
            "last_loaded_at) VALUES (%s, %s::json, %s::json, %s, %s) ON CONFLICT (content_hash) "
            "DO UPDATE SET last_loaded_at = excluded.last_loaded_at",
            [content_hash, _dumps(list(files)), _dumps(list(summary)), at, at],
        )

    def ruleset_sets(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """The sets loaded, the latest first: id, hash, summary, when, and their files."""
        rows = self._all(
            "SELECT id, content_hash, summary, first_loaded_at, last_loaded_at, files "
            "FROM ruleset_sets ORDER BY last_loaded_at DESC, id DESC LIMIT %s",
            [limit],
        )
        keys = ("id", "content_hash", "summary", "first_loaded_at", "last_loaded_at", "files")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def high_water(self) -> tuple[int, int]:
        """The newest trace id and outbox seq: what a store held before a run (a backtest
        counts what came after)."""
        trace = self._one("SELECT coalesce(max(id), 0) FROM traces")[0]
        outbox = self._one("SELECT coalesce(max(seq), 0) FROM outbox")[0]
        return int(trace), int(outbox)

    def decisions_since(self, trace_id: int) -> Iterator[tuple[str, str, str, str, str]]:
        """``(ruleset, rule, decision, contact_id, day)`` of every trace after ``trace_id`` that
        is not a plain ``no_match``, streamed (``day`` is the occurrence's ``YYYY-MM-DD``)."""
        yield from self._stream(
            "SELECT ruleset, rule, decision, contact_id, substr(at, 1, 10) FROM traces "
            "WHERE id > %s AND decision != 'no_match'",
            [trace_id],
        )

    def actions_since(self, seq: int) -> Iterator[tuple[str, str, str, str, int]]:
        """``(ruleset, rule, status, due day, count)`` of the outbox rows after ``seq``."""
        yield from self._stream(
            "SELECT ruleset, rule, status, substr(due_at, 1, 10), count(*) FROM outbox "
            "WHERE seq > %s GROUP BY 1, 2, 3, 4",
            [seq],
        )

    def set_status(self, key: str, value: Any, at: str) -> None:
        """What a running engine says about itself (``clm status``), by key."""
        self._run(
            "INSERT INTO runtime_status (key, value, updated_at) VALUES (%s, %s::json, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            [key, _dumps(value), at],
        )

    def status(self) -> dict[str, tuple[Any, str]]:
        """Everything running engines said about themselves: key -> (value, when)."""
        rows = self._all("SELECT key, value, updated_at FROM runtime_status ORDER BY key")
        return {key: (value, at) for key, value, at in rows}

    # -- time: anchors of relative-time rules, schedule slots ------------------------------------

    def anchors_for(
        self, contact_ids: Sequence[str]
    ) -> dict[tuple[str, str, str, str], tuple[str, str, str]]:
        """Current anchors of these contacts: key -> (anchor_at, fire_at, status)."""
        rows = self._all(
            "SELECT ruleset, rule, contact_id, entity, anchor_at, fire_at, status FROM anchors "
            "WHERE contact_id = ANY(%s)",
            [list(contact_ids)],
        )
        return {tuple(row[:4]): tuple(row[4:]) for row in rows}

    def put_anchors(self, rows: Sequence[tuple[str, str, str, str, str, str]]) -> None:
        """Set anchors (ruleset, rule, contact, entity, anchor_at, fire_at), pending again."""
        self._many(
            "INSERT INTO anchors (ruleset, rule, contact_id, entity, anchor_at, fire_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (ruleset, rule, contact_id, entity) "
            "DO UPDATE SET anchor_at = excluded.anchor_at, fire_at = excluded.fire_at, "
            "status = 'pending', note = NULL",
            rows,
        )

    def drop_anchors(self, keys: Sequence[tuple[str, str, str, str]]) -> None:
        """Cancel pending anchors whose date is gone (fired ones stay, as history)."""
        self._many(
            "DELETE FROM anchors WHERE ruleset = %s AND rule = %s AND contact_id = %s "
            "AND entity = %s AND status = 'pending'",
            keys,
        )

    def due_anchors(self, now: str, limit: int) -> list[tuple[str, str, str, str, str, str]]:
        """Pending anchors whose fire time has come, oldest first (an index range scan); in a
        concurrent write, held for it, passing over those another worker is firing."""
        skip = " FOR UPDATE SKIP LOCKED" if self.conn is not None and not self._holds_all else ""
        return self._all(
            "SELECT ruleset, rule, contact_id, entity, anchor_at, fire_at FROM anchors "
            f"WHERE status = 'pending' AND fire_at <= %s ORDER BY fire_at LIMIT %s{skip}",
            [now, limit],
        )

    def close_anchor(
        self, key: tuple[str, str, str, str], *, status: str, note: str | None
    ) -> None:
        self._run(
            "UPDATE anchors SET status = %s, note = %s WHERE ruleset = %s AND rule = %s "
            "AND contact_id = %s AND entity = %s",
            [status, note, *key],
        )

    def anchor_definitions(self) -> dict[tuple[str, str], str]:
        rows = self._all("SELECT ruleset, rule, definition FROM anchor_rules")
        return {(r, n): d for r, n, d in rows}

    def reset_anchor_rule(self, ruleset: str, rule: str, definition: str) -> None:
        """Forget a rule's pending anchors (its definition changed) and record the new one."""
        self._run(
            "DELETE FROM anchors WHERE ruleset = %s AND rule = %s AND status = 'pending'",
            [ruleset, rule],
        )
        self._run(
            "INSERT INTO anchor_rules (ruleset, rule, definition) VALUES (%s, %s, %s) "
            "ON CONFLICT (ruleset, rule) DO UPDATE SET definition = excluded.definition",
            [ruleset, rule, definition],
        )

    def contacts_after(
        self, last_id: str, limit: int, timezone: str | None = None
    ) -> list[tuple[str, str]]:
        """(id, data) of contacts after ``last_id`` in id order: chunks for sweeps."""
        if timezone is None:
            sql, params = "id > %s", [last_id]
        else:
            sql, params = "id > %s AND timezone = %s", [last_id, timezone]
        return self._all(
            f"SELECT id, data::text FROM contacts WHERE {sql} ORDER BY id LIMIT %s",
            [*params, limit],
        )

    def contact_timezones(self) -> list[str]:
        """The timezones contacts are in: a skip scan of ``contacts_by_timezone``, one index
        seek per zone (see the SQLite store)."""
        return [
            row[0]
            for row in self._all(
                "WITH RECURSIVE zones(zone) AS (SELECT min(timezone) FROM contacts UNION ALL "
                "SELECT (SELECT min(timezone) FROM contacts WHERE timezone > zones.zone) "
                "FROM zones WHERE zones.zone IS NOT NULL) "
                "SELECT zone FROM zones WHERE zone IS NOT NULL"
            )
        ]

    def schedule_slot(self, ruleset: str, rule: str, timezone: str) -> str | None:
        row = self._one(
            "SELECT last_slot FROM schedules WHERE ruleset = %s AND rule = %s AND timezone = %s",
            [ruleset, rule, timezone],
        )
        return row[0] if row else None

    def set_schedule_slot(self, ruleset: str, rule: str, timezone: str, slot: str) -> None:
        self._run(
            "INSERT INTO schedules (ruleset, rule, timezone, last_slot) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (ruleset, rule, timezone) DO UPDATE SET last_slot = excluded.last_slot",
            [ruleset, rule, timezone, slot],
        )

    def take_schedule(
        self, ruleset: str, rule: str, timezone: str
    ) -> tuple[str | None, str | None] | None:
        """(last_slot, cursor); in a concurrent write the row is held for the transaction
        (``FOR UPDATE SKIP LOCKED``), and None says another worker holds it right now."""
        key = [ruleset, rule, timezone]
        sql = "SELECT last_slot, run_cursor FROM schedules WHERE ruleset = %s AND rule = %s "
        sql += "AND timezone = %s"
        if self.conn is None or self._holds_all:
            row = self._one(sql, key)
            return (row[0], row[1]) if row else (None, None)
        row = self._one(sql + " FOR UPDATE SKIP LOCKED", key)
        if row is not None:
            return row[0], row[1]
        if self._one(sql, key) is not None:
            return None  # there, but held by another worker's transaction
        return None, None

    def start_schedule_run(self, ruleset: str, rule: str, timezone: str, slot: str) -> None:
        self._run(
            "INSERT INTO schedules (ruleset, rule, timezone, last_slot, run_cursor) "
            "VALUES (%s, %s, %s, %s, '') ON CONFLICT (ruleset, rule, timezone) "
            "DO UPDATE SET last_slot = excluded.last_slot, run_cursor = ''",
            [ruleset, rule, timezone, slot],
        )

    def set_schedule_cursor(
        self, ruleset: str, rule: str, timezone: str, cursor: str | None
    ) -> None:
        self._run(
            "UPDATE schedules SET run_cursor = %s WHERE ruleset = %s AND rule = %s "
            "AND timezone = %s",
            [cursor, ruleset, rule, timezone],
        )
