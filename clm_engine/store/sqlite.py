"""The embedded default store: one SQLite file, through sqlite-utils.

Why it is built this way:

* WAL mode and ``synchronous=NORMAL``: readers never block the writer, and a commit costs no
  fsync of the main file.
* Every write transaction begins with ``BEGIN IMMEDIATE`` under a busy timeout. Python's
  sqlite3 and sqlite-utils' ``atomic()`` begin *deferred* transactions, and with two processes
  writing, a deferred transaction that turns into a write fails at once with "database is
  locked" whatever the timeout. ``BEGIN IMMEDIATE`` waits its turn instead.
* Schema and migrations come from sqlite-utils; the hot paths (batch ingestion) use its
  connection with ``executemany``, which is several times faster than ``insert_all``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils
from pydantic_core import to_json

from ..erasure import PROFILE_EVENTS, Erasure, ErasureReport, names_in
from ..errors import StoreError
from ..models import Contact, Event, utc_text
from . import ActionStep, IngestFailure, OutboxRow, StageTransition, Trace
from .sqlite_schema import migrations as core_migrations
from .sqlite_tables import SQLiteTables, ensure_tables, plan_tables
from .tables import Table, Tables, check_tables, erase_declared_core_tables, quote, read_erasure_key


def _dumps(value: Any) -> str:
    # pydantic-core's serializer: compact JSON, and several times faster than json.dumps.
    return to_json(value, fallback=str).decode()


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
#: Configuration and bookkeeping, not about people: an erasure neither rewrites nor checks them
#: (a ruleset naming a contact is configuration: edit the file).
_NOT_PERSONAL = {"_sqlite_migrations", "rulesets", "ruleset_sets", "erasure_key"}


def _rows_mentioning(
    conn: sqlite3.Connection, erasure: Erasure, table: str
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``table``'s columns, and ``(rowid, *values)`` of its rows in which some column may
    mention the contact (found with ``instr`` in SQL; ``Erasure.mentions`` decides). The
    table's name comes from the catalogue, never from input."""
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({quote(table)})").fetchall()]
    tests, args = [], []
    for column in columns:
        text = f"CAST({quote(column)} AS TEXT)"
        for term, folded in erasure.search_terms():
            tests.append(f"instr(lower({text}), ?)" if folded else f"instr({text}, ?)")
            args.append(term)
    if not tests:
        return columns, []
    selected = ", ".join(map(quote, columns))
    rows = conn.execute(
        f"SELECT rowid, {selected} FROM {quote(table)} WHERE {' OR '.join(tests)}", args
    ).fetchall()
    return columns, [tuple(row) for row in rows]


def _rewrite_table(conn: sqlite3.Connection, erasure: Erasure, table: str) -> int:
    """Every text value of one of the core's tables that mentions the contact rewritten (JSON
    value by value, text mention by mention), the rows reported as pseudonymised; the
    contact's own rows are deleted before."""
    columns, rows = _rows_mentioning(conn, erasure, table)
    changed = 0
    for rowid, *values in rows:
        updates = {
            column: erasure.rewrite_text(value)
            for column, value in zip(columns, values, strict=True)
            if isinstance(value, str) and erasure.mentions(value)
        }
        if updates:
            assignments = ", ".join(f"{quote(column)} = ?" for column in updates)
            conn.execute(
                f"UPDATE {quote(table)} SET {assignments} WHERE rowid = ?",
                [*updates.values(), rowid],
            )
            changed += 1
    erasure.pseudonymised(table, changed)
    return changed


def _event_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Event:
    event_id, contact_id, type_, occurred_at, properties = row
    return Event.stored(event_id, contact_id, type_, occurred_at, json.loads(properties))


_EVENT_COLUMNS = "id, contact_id, type, occurred_at, properties"
_OUTBOX_COLUMNS = (
    "seq, key, ruleset, version, rule, contact_id, action, params, priority, depth, status, "
    "due_at, attempts, note, result, entity, content_hash, created_at, late, finished_at"
)


_HISTORY_COLUMNS = "seq, contact_id, kind, at, due_at, attempts, note, until"


def _history_values(step: ActionStep) -> tuple[Any, ...]:
    return (
        step.seq,
        step.contact_id,
        step.kind,
        step.at,
        step.due_at,
        step.attempts,
        step.note,
        step.until,
    )


def _outbox_row(row: tuple[Any, ...]) -> OutboxRow:
    values = list(row)
    values[7] = json.loads(values[7])
    values[14] = json.loads(values[14]) if values[14] is not None else None
    values[18] = bool(values[18])
    return OutboxRow(*values)


#: What an outbox row is unless it says otherwise: pending, not yet run.
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

_TRACE_COLUMNS = (
    "contact_id, ruleset, version, content_hash, rule, occurrence, trigger, decision, detail, "
    "tree, actions, at, seen"
)


def _trace_row(row: tuple[Any, ...]) -> Trace:
    values = list(row)
    values[9] = json.loads(values[9]) if values[9] else None
    values[10] = json.loads(values[10]) if values[10] else []
    values[12] = json.loads(values[12]) if values[12] else None
    return Trace(*values)


#: The orders ``list_contacts`` offers, by name: fixed SQL, never built from input.
CONTACT_ORDERS = {
    "id": "id",
    "spent": "coalesce(json_extract(data, '$.metrics.total_spent'), 0) DESC, id",
    "orders": "coalesce(json_extract(data, '$.metrics.orders_count'), 0) DESC, id",
    "recent": "last_event_at DESC, id",
    "created": "created_at, id",
}


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL mode (once per file: it persists), waiting out other openers.

    Changing the journal mode needs the file to itself, and SQLite answers "database is
    locked" at once, without its busy handler, while another connection is creating or
    migrating it (32 threads opening a new file together, a web server's first requests): so
    retry, within the busy timeout. A file already in WAL mode needs no change.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SQLiteStore:
    """A clm-engine store in one SQLite file (created if missing)."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = str(path)
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=busy_timeout, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            _use_wal(conn, busy_timeout)
            conn.execute("PRAGMA synchronous = NORMAL")
            # Checkpoint the WAL every ~40 MB rather than every 4 MB: batches rewrite the same
            # contact pages, and a larger window copies each page to the main file once.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA cache_size = -65536")
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot open {self.path} as a clm-engine database: {error}") from None
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        # One connection may be shared by the host's threads (a BackgroundScheduler, say).
        self._lock = threading.RLock()
        #: The plugins' declared tables (``migrate(tables=...)``): what ``tables`` reaches.
        self.declared: dict[str, Table] = {}
        self._declare({})

    # -- writing -----------------------------------------------------------------------------

    @property
    def concurrent_writers(self) -> bool:
        """False: one writer at a time (``BEGIN IMMEDIATE``); dispatch claims inside it."""
        return False

    @contextmanager
    def write(self, *, concurrent: bool = False) -> Iterator[SQLiteTransaction]:
        """A ``BEGIN IMMEDIATE`` transaction; ``concurrent`` changes nothing: every write here
        excludes the others (the Store protocol's contract for a one-writer store)."""
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                raise StoreError(f"{self.path}: cannot begin a write ({error})") from None
            try:
                tx = SQLiteTransaction(self.conn, self.db, tables=self._writable)
                yield tx
                tx.write_action_history()
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    def read(self) -> SQLiteTransaction:
        """The transaction's read methods, without taking the write lock (dry runs, reports)."""
        return SQLiteTransaction(self.conn, self.db, tables=self._readable)

    def migrate(self, tables: Sequence[Table] = ()) -> list[str]:
        """Bring the core's schema up to date (``sqlite_schema``), then create or complete the
        plugins' declared ``tables``, all in one write; what ran, as set:name and
        table:change."""
        declared = check_tables(tables)
        try:
            pending = [m.name for m in core_migrations.pending(self.db)]
            if not pending and not plan_tables(self.conn, declared.values()):
                self._declare(declared)
                return []
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path} is not a clm-engine database: {error}") from None
        with self.write():
            core_migrations.apply(self.db)
            applied = [f"{core_migrations.name}:{name}" for name in pending]
            applied.extend(ensure_tables(self.conn, declared.values()))
        self._declare(declared)
        return applied

    def applied_migrations(self) -> dict[str, list[str]]:
        """Which migrations ran here, per set, in order (the core's; a store made by a
        plugin's former ``sqlite_utils`` migrations lists theirs too)."""
        if not self.db[core_migrations.migrations_table].exists():
            return {}
        found: dict[str, list[str]] = {}
        for migration_set, name in self.conn.execute(
            f"SELECT migration_set, name FROM {core_migrations.migrations_table} ORDER BY rowid"
        ):
            found.setdefault(migration_set, []).append(name)
        return found

    def _declare(self, declared: Mapping[str, Table]) -> None:
        self.declared.update(declared)
        # One view each for reads and writes, kept: they cache their statements by shape.
        self._readable = SQLiteTables(self.conn, self.declared, writable=False)
        self._writable = SQLiteTables(self.conn, self.declared, writable=True)

    @property
    def tables(self) -> SQLiteTables:
        """The plugins' declared tables, read only, outside any write (commands, reports)."""
        return self._readable

    def backup_to(self, path: str | os.PathLike[str]) -> None:
        """Copy the whole store, as committed now, into a new SQLite file at ``path``
        (SQLite's online backup: consistent while others write)."""
        with self._lock:
            target = sqlite3.connect(str(path))
            try:
                self.conn.backup(target)
            finally:
                target.close()

    # -- reading -----------------------------------------------------------------------------

    def get_contact(self, contact_id: str) -> Contact | None:
        row = self.conn.execute("SELECT data FROM contacts WHERE id = ?", [contact_id]).fetchone()
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
        where, params = ("WHERE stage = ?", [stage]) if stage is not None else ("", [])
        rows = self.conn.execute(
            f"SELECT data FROM contacts {where} ORDER BY {CONTACT_ORDERS[order_by]} "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [Contact.model_validate_json(data) for (data,) in rows]

    def iter_contacts(self, *, chunk_size: int = 1000) -> Iterator[Contact]:
        last = ""
        while True:
            rows = self.conn.execute(
                "SELECT id, data FROM contacts WHERE id > ? ORDER BY id LIMIT ?",
                [last, chunk_size],
            ).fetchall()
            if not rows:
                return
            for _, data in rows:
                yield Contact.model_validate_json(data)
            last = rows[-1][0]

    def count_contacts(self, *, stage: str | None = None) -> int:
        if stage is None:
            total: int = self.conn.execute("SELECT count(*) FROM contacts").fetchone()[0]
            return total
        count: int = self.conn.execute(
            "SELECT count(*) FROM contacts WHERE stage = ?", [stage]
        ).fetchone()[0]
        return count

    def recent_events(self, contact_id: str, *, limit: int = 20) -> list[Event]:
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE contact_id = ? "
            "ORDER BY occurred_at DESC, seq DESC LIMIT ?",
            [contact_id, limit],
        )
        return [_event_from_row(row) for row in rows]

    def stage_history(self, contact_id: str) -> list[StageTransition]:
        rows = self.conn.execute(
            "SELECT contact_id, from_stage, to_stage, at, cause, event_id FROM stage_transitions "
            "WHERE contact_id = ? ORDER BY at, id",
            [contact_id],
        )
        return [StageTransition(*row) for row in rows]

    def failures(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT event_id, contact_id, type, reducer, error, attempts, failed_at "
            "FROM ingest_failures ORDER BY failed_at DESC LIMIT ?",
            [limit],
        )
        keys = ("event_id", "contact_id", "type", "reducer", "error", "attempts", "failed_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def summary(self) -> dict[str, Any]:
        """What the engine knows, in numbers: the body of ``clm report``."""
        one: Callable[[str], Any] = lambda sql: self.conn.execute(sql).fetchone()  # noqa: E731
        contacts, with_email, consenting = one(
            "SELECT count(*), count(email), "
            "coalesce(sum(json_extract(data, '$.consent.email') = 1), 0) FROM contacts"
        )
        customers, orders, revenue = one(
            "SELECT count(*), coalesce(sum(json_extract(data, '$.metrics.orders_count')), 0), "
            "coalesce(sum(json_extract(data, '$.metrics.total_spent')), 0) FROM contacts "
            "WHERE json_extract(data, '$.metrics.orders_count') > 0"
        )
        events, first, last = one("SELECT count(*), min(occurred_at), max(occurred_at) FROM events")
        by_type = self.conn.execute(
            "SELECT type, count(*) FROM events GROUP BY type ORDER BY count(*) DESC, type"
        ).fetchall()
        by_stage = self.conn.execute(
            "SELECT coalesce(stage, '(none)'), count(*) FROM contacts GROUP BY stage "
            "ORDER BY count(*) DESC"
        ).fetchall()
        failures = one("SELECT count(*) FROM ingest_failures")[0]
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
        where, params = "contact_id = ?", [contact_id]
        if rule is not None:
            where, params = where + " AND rule = ?", [*params, rule]
        rows = self.conn.execute(
            f"SELECT {_TRACE_COLUMNS} FROM (SELECT *, row_number() OVER (PARTITION BY ruleset, "
            f"rule ORDER BY at DESC, id DESC) AS nth FROM traces WHERE {where}) WHERE nth <= ? "
            "ORDER BY at DESC, id DESC",
            [*params, limit],
        )
        return [_trace_row(row) for row in rows]

    def prune_traces(
        self, before: str, *, at: str, batch_size: int = 1000, dry_run: bool = False
    ) -> int:
        """Delete the traces of decisions before ``before``, in batches (see ``Store``)."""
        if dry_run:
            query = "SELECT count(*) FROM traces WHERE at < ?"
            return int(self.conn.execute(query, [before]).fetchone()[0])
        removed, last, prune = 0, 0, None
        while True:
            # One walk of the table in id order (no index on ``at`` to keep up): each batch
            # starts where the previous one stopped.
            with self.write() as tx:
                ids = [
                    row[0]
                    for row in tx.conn.execute(
                        "SELECT id FROM traces WHERE id > ? AND at < ? ORDER BY id LIMIT ?",
                        [last, before, batch_size],
                    )
                ]
                if not ids:
                    return removed
                if prune is None:  # remembered with the first batch, so never lost
                    prune = tx.conn.execute(
                        "INSERT INTO trace_prunes (before, removed, pruned_at) VALUES (?, 0, ?)",
                        [before, at],
                    ).lastrowid
                tx.conn.execute(
                    "DELETE FROM traces WHERE id IN (SELECT value FROM json_each(?))",
                    [_dumps(ids)],
                )
                removed += len(ids)
                last = ids[-1]
                tx.conn.execute(
                    "UPDATE trace_prunes SET removed = ? WHERE id = ?", [removed, prune]
                )

    def traces_pruned_before(self) -> str | None:
        """The latest cutoff a prune removed traces before, or None."""
        before: str | None = self.conn.execute("SELECT max(before) FROM trace_prunes").fetchone()[0]
        return before

    def actions_for(self, contact_id: str, *, rule: str | None = None) -> list[OutboxRow]:
        where, params = "contact_id = ?", [contact_id]
        if rule is not None:
            where, params = where + " AND rule = ?", [*params, rule]
        rows = self.conn.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE {where} ORDER BY due_at, seq", params
        )
        return [_outbox_row(row) for row in rows]

    def action_history(self, seqs: Sequence[int]) -> dict[int, list[ActionStep]]:
        found: dict[int, list[ActionStep]] = {}
        rows = self.conn.execute(
            f"SELECT {_HISTORY_COLUMNS} FROM action_history WHERE seq IN "
            "(SELECT value FROM json_each(?)) ORDER BY id",
            [_dumps(list(seqs))],
        )
        for row in rows:
            found.setdefault(row[0], []).append(ActionStep(*row))
        return found

    def prune_action_history(
        self, before: str, *, batch_size: int = 1000, dry_run: bool = False
    ) -> int:
        if dry_run:
            query = "SELECT count(*) FROM action_history WHERE at < ?"
            return int(self.conn.execute(query, [before]).fetchone()[0])
        removed, last = 0, 0
        while True:
            with self.write() as tx:
                ids = [
                    row[0]
                    for row in tx.conn.execute(
                        "SELECT id FROM action_history WHERE id > ? AND at < ? ORDER BY id LIMIT ?",
                        [last, before, batch_size],
                    )
                ]
                if not ids:
                    return removed
                tx.conn.execute(
                    "DELETE FROM action_history WHERE id IN (SELECT value FROM json_each(?))",
                    [_dumps(ids)],
                )
                removed += len(ids)
                last = ids[-1]

    def outcome_counts(self, action: str) -> list[tuple[str, str | None, int]]:
        rows = self.conn.execute(
            "SELECT status, note, count(*) FROM outbox WHERE action = ? "
            "GROUP BY status, note ORDER BY count(*) DESC, status, note",
            [action],
        )
        return [(status, note, int(count)) for status, note, count in rows]

    def actions_by_key(self, keys: Sequence[str]) -> dict[str, OutboxRow]:
        rows = self.conn.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE key IN (SELECT value FROM json_each(?))",
            [_dumps(list(keys))],
        )
        return {r.key: r for r in map(_outbox_row, rows)}

    def anchors_of(
        self, contact_id: str, ruleset: str, rule: str
    ) -> list[tuple[str, str, str, str, str | None]]:
        """(entity, anchor_at, fire_at, status, note) of one rule's anchors for a contact."""
        return self.conn.execute(
            "SELECT entity, anchor_at, fire_at, status, note FROM anchors WHERE contact_id = ? "
            "AND ruleset = ? AND rule = ? ORDER BY fire_at",
            [contact_id, ruleset, rule],
        ).fetchall()

    def last_event(self, contact_id: str, type_: str) -> Event | None:
        row = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE contact_id = ? AND type = ? "
            "ORDER BY occurred_at DESC, seq DESC LIMIT 1",
            [contact_id, type_],
        ).fetchone()
        return _event_from_row(row) if row else None

    def ruleset_versions(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT name, version, content_hash, path, loaded_at FROM rulesets "
            "ORDER BY name, loaded_at, rowid"
        )
        keys = ("name", "version", "content_hash", "path", "loaded_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def rules_summary(self) -> list[dict[str, Any]]:
        """Per rule: decisions recorded and actions by status (the body of ``clm report``)."""
        decisions = self.conn.execute(
            "SELECT ruleset, rule, decision, count(*), count(DISTINCT contact_id) FROM traces "
            "GROUP BY ruleset, rule, decision"
        ).fetchall()
        actions = self.conn.execute(
            "SELECT ruleset, rule, status, count(*) FROM outbox GROUP BY ruleset, rule, status"
        ).fetchall()
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
        rows = self.conn.execute(
            "SELECT s.key, s.value FROM contacts, json_each(contacts.data, '$.scores') AS s"
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
        """Erase a contact in one transaction: delete the core's rows that are theirs, let the
        plugins (``also``) erase theirs, rewrite other contacts' references to the pseudonym,
        check that no table still mentions the contact, and record the request. The files to
        scrub (recorded rejects files and ``files``) are planned here and changed by the
        caller after the commit (:meth:`Erasure.apply_files`)."""
        with self.write() as tx:
            erasure = self._erasure_of(contact_id)
            removed: dict[str, int] = {}
            for table in _ERASED_BY_CONTACT:
                column = "id" if table == "contacts" else "contact_id"
                removed[table] = self.conn.execute(
                    f"DELETE FROM {table} WHERE {column} = ?", [contact_id]
                ).rowcount
            removed.update(erase_declared_core_tables(tx.tables, contact_id))
            removed.update(also(tx.tables, erasure))
            for table in _REWRITTEN:
                _rewrite_table(self.conn, erasure, table)
            paths = [row[0] for row in self.conn.execute("SELECT path FROM rejects_files")]
            for path in dict.fromkeys([*paths, *map(str, files)]):
                erasure.scrub_lines(path)
            self._check_erased(erasure)
            report = ErasureReport(
                erasure_id=erasure.pseudonym,
                erased_at=erased_at,
                requested_by=requested_by,
                removed={table: count for table, count in removed.items() if count},
                pseudonymised=dict(erasure.rewritten),
            )
            files_planned = {
                "remove": len(erasure.files_to_remove),
                "rewrite": len(erasure.files_to_replace),
            }
            self.conn.execute(
                "INSERT INTO erasures (erasure_id, erased_at, requested_by, removed, "
                "pseudonymised, files) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    erasure.pseudonym,
                    erased_at,
                    requested_by,
                    _dumps(report.removed),
                    _dumps(report.pseudonymised),
                    _dumps(files_planned),
                ],
            )
        return erasure, report

    def _erasure_of(self, contact_id: str) -> Erasure:
        """What the contact is known by: their id, every email address their contact row,
        events and failed events hold, and the full names of their attributes and profile
        events."""
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

        for (data,) in self.conn.execute("SELECT data FROM contacts WHERE id = ?", [contact_id]):
            collect(json.loads(data), with_names=True)
        for type_, properties in self.conn.execute(
            "SELECT type, properties FROM events WHERE contact_id = ?", [contact_id]
        ):
            collect(json.loads(properties), with_names=type_ in PROFILE_EVENTS)
        for (event,) in self.conn.execute(
            "SELECT event FROM ingest_failures WHERE contact_id = ?", [contact_id]
        ):
            stored = json.loads(event)
            collect(stored.get("properties"), with_names=stored.get("type") in PROFILE_EVENTS)
        key = read_erasure_key(self.conn)
        if key is None:
            raise StoreError(f"{self.path}: no erasure key (run clm migrate)")
        return Erasure(contact_id, emails=emails, names=names, key=key)

    def _check_erased(self, erasure: Erasure) -> None:
        """Every table but configuration: no column of any row may mention the contact. A
        plugin that left something makes the whole erasure roll back, naming the table."""
        tables = [
            row[0]
            for row in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
            if row[0] not in _NOT_PERSONAL
        ]
        for table in tables:
            columns, rows = _rows_mentioning(self.conn, erasure, table)
            for _, *values in rows:
                for column, value in zip(columns, values, strict=True):
                    if value is not None and erasure.mentions(str(value)):
                        raise StoreError(
                            f"erasure incomplete: {table}.{column} still mentions the contact "
                            "(the plugin that owns the table must erase or pseudonymise it in "
                            "its forget_contact hook); nothing was erased"
                        )

    def record_rejects_file(self, path: str, written_at: str) -> None:
        """Remember a rejects file ``clm ingest`` wrote, so an erasure can scrub it."""
        with self.write():
            self.conn.execute(
                "INSERT INTO rejects_files (path, written_at) VALUES (?, ?) "
                "ON CONFLICT (path) DO UPDATE SET written_at = excluded.written_at",
                [path, written_at],
            )

    # -- API keys of ``clm serve`` -----------------------------------------------------------

    def create_api_key(
        self, key_id: str, *, name: str, scope: str, token_hash: str, created_at: str
    ) -> None:
        with self.write():
            self.conn.execute(
                "INSERT INTO api_keys (id, name, scope, token_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [key_id, name, scope, token_hash, created_at],
            )

    def api_key(self, key_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT id, name, scope, token_hash, created_at, revoked_at FROM api_keys WHERE id = ?",
            [key_id],
        ).fetchone()
        if row is None:
            return None
        return dict(
            zip(("id", "name", "scope", "token_hash", "created_at", "revoked_at"), row, strict=True)
        )

    def api_keys(self) -> list[dict[str, Any]]:
        columns = ("id", "name", "scope", "created_at", "revoked_at")
        rows = self.conn.execute(
            "SELECT id, name, scope, created_at, revoked_at FROM api_keys ORDER BY created_at, id"
        )
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def revoke_api_key(self, key_id: str, *, at: str) -> bool:
        with self.write():
            cursor = self.conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [at, key_id],
            )
        return cursor.rowcount > 0

    def close(self) -> None:
        self.conn.close()


class SQLiteTransaction:
    """The writes and the reads-for-writing of one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        db: sqlite_utils.Database | None = None,
        *,
        tables: SQLiteTables | None = None,
    ) -> None:
        self.conn = conn
        self._db = db
        self._savepoints = 0
        self._tables = tables or SQLiteTables(conn, {}, writable=False)
        self._history: list[ActionStep] = []  # written as the transaction commits

    @property
    def tables(self) -> SQLiteTables:
        """The plugins' declared tables in this transaction (read only outside a write)."""
        return self._tables

    @property
    def db(self) -> sqlite_utils.Database:
        """The transaction's connection as sqlite-utils sees it: for the plugins' own tables."""
        if self._db is None:
            self._db = sqlite_utils.Database(self.conn)
        return self._db

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested step that rolls back alone if it raises (one action of a dispatch batch)."""
        self._savepoints += 1
        name = f"clm_step_{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        history = len(self._history)
        try:
            yield
        except BaseException:
            del self._history[history:]
            self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.conn.execute(f"RELEASE SAVEPOINT {name}")
            raise
        else:
            self.conn.execute(f"RELEASE SAVEPOINT {name}")

    def lock_contacts(self, ids: Iterable[str], *, wait: bool = True) -> set[str]:
        """Every contact is held already: a write here excludes every other."""
        return set(ids)

    def existing_event_ids(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = self.conn.execute(
            "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(?))", [_dumps(ids)]
        )
        return {row[0] for row in rows}

    def load_contacts(self, ids: Iterable[str]) -> dict[str, str]:
        ids = list(ids)
        if not ids:
            return {}
        rows = self.conn.execute(
            "SELECT id, data FROM contacts WHERE id IN (SELECT value FROM json_each(?))",
            [_dumps(ids)],
        )
        return dict(rows.fetchall())

    def contact_events(self, contact_id: str) -> list[Event]:
        """A contact's stored events, oldest first (ties in arrival order)."""
        return self.contact_history(contact_id)[0]

    def event_of(self, contact_id: str, event_id: str) -> Event | None:
        """One stored event of a contact, by id (the trigger of a decision), or None."""
        row = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ? AND contact_id = ?",
            [event_id, contact_id],
        ).fetchone()
        return _event_from_row(row) if row else None

    def contact_history(self, contact_id: str) -> tuple[list[Event], dict[str, str]]:
        """A contact's stored events, oldest first (ties in arrival order), and the ``origin``
        of those that are the effect of a decision run inline: event id -> outbox key."""
        events: list[Event] = []
        origins: dict[str, str] = {}
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS}, origin FROM events WHERE contact_id = ? "
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
        self.conn.executemany(
            "INSERT INTO events (id, contact_id, type, occurred_at, properties, received_at, "
            "origin) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            self.conn.execute(
                "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))",
                [_dumps(list(ids))],
            )

    def upsert_contacts(self, contacts: Sequence[Contact], *, updated_at: str) -> None:
        """Insert or replace contacts; ``updated_at`` is the text of the batch's one clock time."""
        self.conn.executemany(
            "INSERT INTO contacts (id, email, stage, timezone, created_at, updated_at, "
            "last_event_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
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
        self.conn.executemany(
            "INSERT INTO stage_transitions (contact_id, from_stage, to_stage, at, cause, event_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (t.contact_id, t.from_stage, t.to_stage, t.at, t.cause, t.event_id)
                for t in transitions
            ],
        )

    def replace_transitions(self, contact_id: str, transitions: Sequence[StageTransition]) -> None:
        self.conn.execute("DELETE FROM stage_transitions WHERE contact_id = ?", [contact_id])
        self.add_transitions(transitions)

    def record_failures(self, failures: Sequence[IngestFailure], *, failed_at: str) -> None:
        self.conn.executemany(
            "INSERT INTO ingest_failures (event_id, contact_id, type, event, reducer, error, "
            "failed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET "
            "reducer = excluded.reducer, error = excluded.error, "
            "attempts = attempts + 1, failed_at = excluded.failed_at",
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
        if event_ids and self.conn.execute("SELECT 1 FROM ingest_failures LIMIT 1").fetchone():
            self.conn.execute(
                "DELETE FROM ingest_failures WHERE event_id IN (SELECT value FROM json_each(?))",
                [_dumps(list(event_ids))],
            )

    # -- rules: limits, outbox, traces, versions ----------------------------------------------

    def count_events(self, contact_id: str, type: str, since: str | None) -> int:
        if since is None:
            sql, params = "contact_id = ? AND type = ?", [contact_id, type]
        else:
            sql, params = (
                "contact_id = ? AND type = ? AND occurred_at >= ?",
                [contact_id, type, since],
            )
        count: int = self.conn.execute(
            f"SELECT count(*) FROM events WHERE {sql}", params
        ).fetchone()[0]
        return count

    def fires_of(self, contact_ids: Iterable[str]) -> list[tuple[str, str, str, str, str, str]]:
        """Every recorded fire of a limited rule for these contacts:
        (contact_id, ruleset, rule, entity, occurrence, at)."""
        return self.conn.execute(
            "SELECT contact_id, ruleset, rule, entity, occurrence, at FROM rule_fires "
            "WHERE contact_id IN (SELECT value FROM json_each(?))",
            [_dumps(list(contact_ids))],
        ).fetchall()

    def record_fires(self, fires: Sequence[tuple[str, str, str, str, str, str]]) -> None:
        """Record fires (contact_id, ruleset, rule, entity, occurrence, at) of limited rules."""
        self.conn.executemany(
            "INSERT INTO rule_fires (contact_id, ruleset, rule, entity, occurrence, at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            fires,
        )

    def delete_fires(self, contact_id: str, rules: Sequence[tuple[str, str]], since: str) -> None:
        """Forget a contact's fires of ``rules`` (ruleset, rule) from ``since`` on: the fires a
        re-judgement recomputes."""
        self.conn.executemany(
            "DELETE FROM rule_fires WHERE contact_id = ? AND ruleset = ? AND rule = ? AND at >= ?",
            [(contact_id, ruleset, rule, since) for ruleset, rule in rules],
        )

    def enqueue(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert outbox rows; a row whose key exists is ignored. Returns how many were new.

        A row run inline (``inline``: 1) arrives finished, with its ``status``, ``note``,
        ``result``, ``attempts`` and ``finished_at``; any other row is pending."""
        before = self.conn.total_changes
        self.conn.executemany(
            "INSERT INTO outbox (key, ruleset, version, content_hash, rule, contact_id, action, "
            "params, priority, depth, due_at, created_at, entity, status, note, result, "
            "attempts, finished_at, inline, late) VALUES (:key, :ruleset, :version, "
            ":content_hash, :rule, :contact_id, :action, :params, :priority, :depth, :due_at, "
            ":created_at, :entity, :status, :note, :result, :attempts, :finished_at, :inline, "
            ":late) ON CONFLICT (key) DO NOTHING",
            [
                {
                    **_OUTBOX_DEFAULTS,
                    **row,
                    "params": _dumps(row["params"]),
                    "result": _dumps(row["result"]) if row.get("result") is not None else None,
                }
                for row in rows
            ],
        )
        return self.conn.total_changes - before

    def decisions_of(self, contact_id: str) -> dict[str, tuple[str, str, str, str, int]]:
        """A contact's outbox rows: key -> (ruleset, rule, status, due_at, inline)."""
        rows = self.conn.execute(
            "SELECT key, ruleset, rule, status, due_at, inline FROM outbox WHERE contact_id = ?",
            [contact_id],
        )
        return {row[0]: tuple(row[1:]) for row in rows}

    def redo_actions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Overwrite the outcome of inline rows a re-judgement ran again (by ``key``)."""
        self.conn.executemany(
            "UPDATE outbox SET status = :status, note = :note, result = :result, "
            "finished_at = :finished_at, due_at = :due_at WHERE key = :key",
            [
                {
                    "key": row["key"],
                    "status": row["status"],
                    "note": row.get("note"),
                    "result": _dumps(row["result"]) if row.get("result") is not None else None,
                    "finished_at": row.get("finished_at"),
                    "due_at": row["due_at"],
                }
                for row in rows
            ],
        )

    def retract_actions(self, keys: Sequence[str], *, note: str, at: str) -> None:
        """Mark inline rows that a corrected history no longer implies as ``retracted``."""
        self.conn.executemany(
            "UPDATE outbox SET status = 'retracted', note = ?, finished_at = ? WHERE key = ?",
            [(note, at, key) for key in keys],
        )

    def delete_traces(self, contact_id: str, rules: Sequence[tuple[str, str]], since: str) -> None:
        """Forget a contact's traces of ``rules`` from ``since`` on (a re-judgement redoes them),
        but for those of retractions: what was retracted, and why, stays on record."""
        self.conn.executemany(
            "DELETE FROM traces WHERE contact_id = ? AND ruleset = ? AND rule = ? AND at >= ? "
            "AND decision != 'retracted'",
            [(contact_id, ruleset, rule, since) for ruleset, rule in rules],
        )

    def add_traces(self, traces: Sequence[Trace], *, recorded_at: str) -> None:
        self.conn.executemany(
            f"INSERT INTO traces ({_TRACE_COLUMNS}, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    _dumps(t.tree) if t.tree is not None else None,
                    _dumps(t.actions),
                    t.at,
                    _dumps(t.seen) if t.seen is not None else None,
                    recorded_at,
                )
                for t in traces
            ],
        )

    def due_actions(self, now: str, limit: int) -> list[OutboxRow]:
        rows = self.conn.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND due_at <= ? "
            "AND (lease_until IS NULL OR lease_until <= ?) "
            "ORDER BY due_at, priority DESC, seq LIMIT ?",
            [now, now, limit],
        )
        return [_outbox_row(row) for row in rows]

    def claim_due_actions(
        self, now: str, limit: int, *, lease_until: str, worker: str
    ) -> list[OutboxRow]:
        """Claim due rows for ``worker`` until ``lease_until`` (the write lock keeps any other
        worker out while this runs)."""
        rows = self.due_actions(now, limit)
        self.conn.executemany(
            "UPDATE outbox SET lease_until = ?, worker = ? WHERE seq = ?",
            [(lease_until, worker, row.seq) for row in rows],
        )
        return rows

    def held_actions(
        self, seqs: Sequence[int], *, worker: str, lease_until: str
    ) -> list[OutboxRow]:
        """The rows ``worker`` still holds under this lease, their lease released."""
        marks = ", ".join("?" * len(seqs))
        rows = [
            _outbox_row(row)
            for row in self.conn.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq IN ({marks}) "
                "AND status = 'pending' AND worker = ? AND lease_until = ? "
                "ORDER BY due_at, priority DESC, seq",
                [*seqs, worker, lease_until],
            )
        ]
        self.conn.executemany(
            "UPDATE outbox SET lease_until = NULL WHERE seq = ?", [(row.seq,) for row in rows]
        )
        return rows

    def action(self, seq: int) -> OutboxRow | None:
        row = self.conn.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq = ?", [seq]
        ).fetchone()
        return _outbox_row(row) if row else None

    def finish_action(
        self, seq: int, *, status: str, note: str | None, result: Any, at: str, attempts: int
    ) -> None:
        self.conn.execute(
            "UPDATE outbox SET status = ?, note = ?, result = ?, finished_at = ?, attempts = ?, "
            "lease_until = NULL WHERE seq = ?",
            [status, note, _dumps(result) if result is not None else None, at, attempts, seq],
        )

    def reschedule_action(self, seq: int, *, due_at: str, note: str, attempts: int) -> None:
        self.conn.execute(
            "UPDATE outbox SET due_at = ?, note = ?, attempts = ?, lease_until = NULL "
            "WHERE seq = ?",
            [due_at, note, attempts, seq],
        )

    def claim_action(self, seq: int, *, lease_until: str, note: str, attempts: int) -> None:
        """Hold a row for a worker until ``lease_until``: it is due again then, if unrecorded."""
        self.conn.execute(
            "UPDATE outbox SET due_at = ?, lease_until = ?, note = ?, attempts = ? WHERE seq = ?",
            [lease_until, lease_until, note, attempts, seq],
        )

    def add_action_history(self, steps: Sequence[ActionStep]) -> None:
        self._history.extend(steps)

    def write_action_history(self) -> None:
        """Write the steps ``add_action_history`` held, in one statement (at commit)."""
        if self._history:
            self.conn.executemany(
                "INSERT INTO action_history (seq, contact_id, kind, at, due_at, attempts, note, "
                "until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [_history_values(step) for step in self._history],
            )
            self._history.clear()

    def claimed_actions(self, contact_id: str, now: str) -> list[OutboxRow]:
        """A contact's rows held by a worker right now (external actions on their way)."""
        rows = self.conn.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE contact_id = ? AND status = 'pending' "
            "AND lease_until > ? ORDER BY seq",
            [contact_id, now],
        )
        return [_outbox_row(row) for row in rows]

    def record_ruleset(
        self, name: str, version: int, content_hash: str, path: str, content: str, at: str
    ) -> bool:
        cursor = self.conn.execute(
            "INSERT INTO rulesets (name, version, content_hash, path, content, loaded_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, content_hash) DO NOTHING",
            [name, version, content_hash, path, content, at],
        )
        return cursor.rowcount == 1

    def ruleset_source(self, name: str, content_hash: str) -> str | None:
        """The text of one stored ruleset version, or None if unknown."""
        row = self.conn.execute(
            "SELECT content FROM rulesets WHERE name = ? AND content_hash = ?",
            [name, content_hash],
        ).fetchone()
        return row[0] if row else None

    def record_ruleset_set(
        self, content_hash: str, files: Sequence[dict[str, str]], summary: Sequence[Any], at: str
    ) -> None:
        """Keep a loaded set of rulesets and documents whole; a set loaded again is touched."""
        self.conn.execute(
            "INSERT INTO ruleset_sets (content_hash, files, summary, first_loaded_at, "
            "last_loaded_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (content_hash) DO UPDATE SET "
            "last_loaded_at = excluded.last_loaded_at",
            [content_hash, _dumps(list(files)), _dumps(list(summary)), at, at],
        )

    def ruleset_sets(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """The sets loaded, the latest first: id, hash, summary, when, and their files."""
        rows = self.conn.execute(
            "SELECT id, content_hash, summary, first_loaded_at, last_loaded_at, files "
            "FROM ruleset_sets ORDER BY last_loaded_at DESC, id DESC LIMIT ?",
            [limit],
        )
        keys = ("id", "content_hash", "summary", "first_loaded_at", "last_loaded_at", "files")
        found = []
        for row in rows:
            entry = dict(zip(keys, row, strict=True))
            entry["summary"] = json.loads(entry["summary"])
            entry["files"] = json.loads(entry["files"])
            found.append(entry)
        return found

    def high_water(self) -> tuple[int, int]:
        """The newest trace id and outbox seq: what a store held before a run (a backtest
        counts what came after)."""
        trace = self.conn.execute("SELECT coalesce(max(id), 0) FROM traces").fetchone()[0]
        outbox = self.conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
        return trace, outbox

    def decisions_since(self, trace_id: int) -> Iterator[tuple[str, str, str, str, str]]:
        """``(ruleset, rule, decision, contact_id, day)`` of every trace after ``trace_id`` that
        is not a plain ``no_match``, streamed (``day`` is the occurrence's ``YYYY-MM-DD``)."""
        yield from self.conn.execute(
            "SELECT ruleset, rule, decision, contact_id, substr(at, 1, 10) FROM traces "
            "WHERE id > ? AND decision != 'no_match'",
            [trace_id],
        )

    def actions_since(self, seq: int) -> Iterator[tuple[str, str, str, str, int]]:
        """``(ruleset, rule, status, due day, count)`` of the outbox rows after ``seq``."""
        yield from self.conn.execute(
            "SELECT ruleset, rule, status, substr(due_at, 1, 10), count(*) FROM outbox "
            "WHERE seq > ? GROUP BY 1, 2, 3, 4",
            [seq],
        )

    def set_status(self, key: str, value: Any, at: str) -> None:
        """What a running engine says about itself (``clm status``), by key."""
        self.conn.execute(
            "INSERT INTO runtime_status (key, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            [key, _dumps(value), at],
        )

    def status(self) -> dict[str, tuple[Any, str]]:
        """Everything running engines said about themselves: key -> (value, when)."""
        rows = self.conn.execute("SELECT key, value, updated_at FROM runtime_status ORDER BY key")
        return {key: (json.loads(value), at) for key, value, at in rows}

    # -- time: anchors of relative-time rules, schedule slots ------------------------------------

    def anchors_for(
        self, contact_ids: Sequence[str]
    ) -> dict[tuple[str, str, str, str], tuple[str, str, str]]:
        """Current anchors of these contacts: key -> (anchor_at, fire_at, status)."""
        rows = self.conn.execute(
            "SELECT ruleset, rule, contact_id, entity, anchor_at, fire_at, status FROM anchors "
            "WHERE contact_id IN (SELECT value FROM json_each(?))",
            [_dumps(list(contact_ids))],
        )
        return {tuple(row[:4]): tuple(row[4:]) for row in rows}

    def put_anchors(self, rows: Sequence[tuple[str, str, str, str, str, str]]) -> None:
        """Set anchors (ruleset, rule, contact, entity, anchor_at, fire_at), pending again."""
        self.conn.executemany(
            "INSERT INTO anchors (ruleset, rule, contact_id, entity, anchor_at, fire_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ruleset, rule, contact_id, entity) DO UPDATE "
            "SET anchor_at = excluded.anchor_at, fire_at = excluded.fire_at, "
            "status = 'pending', note = NULL",
            rows,
        )

    def drop_anchors(self, keys: Sequence[tuple[str, str, str, str]]) -> None:
        """Cancel pending anchors whose date is gone (fired ones stay, as history)."""
        self.conn.executemany(
            "DELETE FROM anchors WHERE ruleset = ? AND rule = ? AND contact_id = ? AND entity = ? "
            "AND status = 'pending'",
            keys,
        )

    def due_anchors(self, now: str, limit: int) -> list[tuple[str, str, str, str, str, str]]:
        """Pending anchors whose fire time has come, oldest first (an index range scan)."""
        return self.conn.execute(
            "SELECT ruleset, rule, contact_id, entity, anchor_at, fire_at FROM anchors "
            "WHERE status = 'pending' AND fire_at <= ? ORDER BY fire_at LIMIT ?",
            [now, limit],
        ).fetchall()

    def close_anchor(
        self, key: tuple[str, str, str, str], *, status: str, note: str | None
    ) -> None:
        self.conn.execute(
            "UPDATE anchors SET status = ?, note = ? WHERE ruleset = ? AND rule = ? "
            "AND contact_id = ? AND entity = ?",
            [status, note, *key],
        )

    def anchor_definitions(self) -> dict[tuple[str, str], str]:
        rows = self.conn.execute("SELECT ruleset, rule, definition FROM anchor_rules")
        return {(r, n): d for r, n, d in rows}

    def reset_anchor_rule(self, ruleset: str, rule: str, definition: str) -> None:
        """Forget a rule's pending anchors (its definition changed) and record the new one."""
        self.conn.execute(
            "DELETE FROM anchors WHERE ruleset = ? AND rule = ? AND status = 'pending'",
            [ruleset, rule],
        )
        self.conn.execute(
            "INSERT INTO anchor_rules (ruleset, rule, definition) VALUES (?, ?, ?) "
            "ON CONFLICT (ruleset, rule) DO UPDATE SET definition = excluded.definition",
            [ruleset, rule, definition],
        )

    def contacts_after(
        self, last_id: str, limit: int, timezone: str | None = None
    ) -> list[tuple[str, str]]:
        """(id, data) of contacts after ``last_id`` in id order: chunks for sweeps."""
        if timezone is None:
            sql, params = "id > ?", [last_id]
        else:
            sql, params = "id > ? AND timezone = ?", [last_id, timezone]
        return self.conn.execute(
            f"SELECT id, data FROM contacts WHERE {sql} ORDER BY id LIMIT ?", [*params, limit]
        ).fetchall()

    def contact_timezones(self) -> list[str]:
        """The timezones contacts are in. A skip scan of the ``contacts_by_timezone`` index: one
        index seek per zone, so a pump costs the same at 10k and 1M contacts (``SELECT
        DISTINCT`` read every contact on every pump of a schedule in contacts' timezones)."""
        return [
            row[0]
            for row in self.conn.execute(
                "WITH RECURSIVE zones(zone) AS (SELECT min(timezone) FROM contacts UNION ALL "
                "SELECT (SELECT min(timezone) FROM contacts WHERE timezone > zones.zone) "
                "FROM zones WHERE zones.zone IS NOT NULL) "
                "SELECT zone FROM zones WHERE zone IS NOT NULL"
            )
        ]

    def schedule_slot(self, ruleset: str, rule: str, timezone: str) -> str | None:
        row = self.conn.execute(
            "SELECT last_slot FROM schedules WHERE ruleset = ? AND rule = ? AND timezone = ?",
            [ruleset, rule, timezone],
        ).fetchone()
        return row[0] if row else None

    def set_schedule_slot(self, ruleset: str, rule: str, timezone: str, slot: str) -> None:
        self.conn.execute(
            "INSERT INTO schedules (ruleset, rule, timezone, last_slot) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (ruleset, rule, timezone) DO UPDATE SET last_slot = excluded.last_slot",
            [ruleset, rule, timezone, slot],
        )

    def take_schedule(
        self, ruleset: str, rule: str, timezone: str
    ) -> tuple[str | None, str | None] | None:
        """(last_slot, cursor); never held by another here: one writer at a time."""
        row = self.conn.execute(
            "SELECT last_slot, run_cursor FROM schedules WHERE ruleset = ? AND rule = ? "
            "AND timezone = ?",
            [ruleset, rule, timezone],
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def start_schedule_run(self, ruleset: str, rule: str, timezone: str, slot: str) -> None:
        self.conn.execute(
            "INSERT INTO schedules (ruleset, rule, timezone, last_slot, run_cursor) "
            "VALUES (?, ?, ?, ?, '') ON CONFLICT (ruleset, rule, timezone) "
            "DO UPDATE SET last_slot = excluded.last_slot, run_cursor = ''",
            [ruleset, rule, timezone, slot],
        )

    def set_schedule_cursor(
        self, ruleset: str, rule: str, timezone: str, cursor: str | None
    ) -> None:
        self.conn.execute(
            "UPDATE schedules SET run_cursor = ? WHERE ruleset = ? AND rule = ? AND timezone = ?",
            [cursor, ruleset, rule, timezone],
        )
