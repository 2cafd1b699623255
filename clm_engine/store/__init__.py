"""Where state lives. ``Store`` is the protocol; ``SQLiteStore`` the embedded default,
``PostgresStore`` the one many processes share.

All SQL of the core lives in this package (the condition-to-SQL compiler will be the one other
place). The engine talks to a store through the methods below and, for writes, through a
``StoreTransaction`` that holds the write lock from first read to commit, so that a batch of
events is checked for duplicates, folded and written as one atomic step.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import StoreError
from ..models import Contact, Event
from .tables import Column, Index, Table, TableAccess, Tables

if TYPE_CHECKING:
    import os

    import sqlite_utils

    from ..erasure import Erasure, ErasureReport

T = TypeVar("T")


class WriteConflict(StoreError):
    """A concurrent write transaction was rolled back because it met another in a way that
    cannot be serialised (a deadlock between two workers' contact locks): nothing of it was
    written, and running it again is correct (``retry_conflicts``). Only a store with
    ``concurrent_writers`` raises it."""


#: How often a write that met a ``WriteConflict`` is tried, in all.
CONFLICT_ATTEMPTS = 8


def retry_conflicts(work: Callable[[], T]) -> T:
    """Run ``work`` (a whole write transaction and what it decides) again when it met a
    ``WriteConflict``; it must start afresh each time (its results are rebuilt, not added)."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return work()
        except WriteConflict:
            if attempt == CONFLICT_ATTEMPTS:
                raise
            time.sleep(random.uniform(0, 0.01 * attempt))  # let the other one through first
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class StageTransition:
    contact_id: str
    from_stage: str | None
    to_stage: str
    at: str
    cause: str
    event_id: str | None = None


@dataclass(frozen=True)
class IngestFailure:
    event: Event
    reducer: str
    error: str


@dataclass(frozen=True)
class OutboxRow:
    """One action waiting in (or gone through) the outbox."""

    seq: int
    key: str
    ruleset: str
    version: int
    rule: str
    contact_id: str
    action: str
    params: dict[str, Any]
    priority: int
    depth: int
    status: str
    due_at: str
    attempts: int
    note: str | None = None
    result: Any = None
    entity: str | None = None  # what the action is about (a product id), if not the contact
    content_hash: str = ""  # of the ruleset version that enqueued it
    created_at: str = ""  # when the decision was taken (the clock's time, not the event's)
    #: Decided when a late event re-judged the contact's history: its external action is
    #: skipped if its occurrence is older than the engine's ``late_action_limit``.
    late: bool = False
    finished_at: str | None = None  # when it reached its final status (None while pending)


@dataclass  # not frozen: one is made per dispatched action, and a frozen one costs more
class ActionStep:
    """One thing the dispatcher did with an outbox row, kept after the row finished (the
    ``action_history`` table): the row itself only holds its latest status and note.

    ``kind`` is ``deferred`` (a policy said later: ``until``), ``retried`` (it failed and
    runs again at ``until``), or the final status it reached (``done``, ``vetoed``,
    ``skipped``, ``failed``, ``dead``, ``simulated``, ``lost_lease``). ``due_at`` is when the
    row was due as the dispatcher took it up (a deferral moves the row's own due time)."""

    seq: int
    contact_id: str
    kind: str
    at: str
    due_at: str
    attempts: int
    note: str | None = None
    until: str | None = None


@dataclass  # not frozen: one is made per decision, and a frozen one costs 4x to build
class Trace:
    """Why a rule did or did not fire for a contact, on one occurrence.

    ``seen`` is what its condition read (``clm_engine.conditions.record``): ``clm explain``
    rebuilds the condition tree from it and the ruleset version the trace names. ``tree`` is
    that tree as traces recorded it before ``seen`` existed (None in a newer trace).
    """

    contact_id: str
    ruleset: str
    version: int
    content_hash: str
    rule: str
    occurrence: str
    trigger: str
    decision: str
    detail: str | None
    tree: Any
    actions: list[str]
    at: str
    seen: dict[str, Any] | None = None


class StoreTransaction(Protocol):
    """The writes, and the reads made for writing, of one write transaction (``Store.write``):
    the engine's whole contract with a store's transaction. ``Store.read()`` offers the same
    methods outside a transaction, for reads."""

    @property
    def db(self) -> sqlite_utils.Database:
        """The transaction's connection as a ``sqlite_utils.Database``: what plugins' event
        handlers, facts and actions used for their own tables before ``tables`` (SQLite only)."""
        ...

    @property
    def tables(self) -> Tables:
        """The plugins' declared tables in this transaction: ``tables["name"].rows(...)``.
        Writable in a ``Store.write()``; read only in ``Store.read()``."""
        ...

    def savepoint(self) -> AbstractContextManager[None]:
        """A nested step that rolls back alone if it raises (one action of a dispatch batch)."""
        ...

    def lock_contacts(self, ids: Iterable[str], *, wait: bool = True) -> set[str]:
        """Hold these contacts for the rest of the transaction, against other concurrent
        writes (``Store.write(concurrent=True)``) that fold, dispatch for or sweep the same
        contacts; which ones are held. ``wait=False`` takes only those free right now.

        What serialises one contact's work when many workers write at once: a contact's
        events are folded, and its actions run, one transaction after another. A store with
        one writer (SQLite) holds every contact already and returns them all."""
        ...

    def existing_event_ids(self, ids: Sequence[str]) -> set[str]: ...

    def load_contacts(self, ids: Iterable[str]) -> dict[str, str]: ...

    def contact_events(self, contact_id: str) -> list[Event]: ...

    def event_of(self, contact_id: str, event_id: str) -> Event | None: ...

    def contact_history(self, contact_id: str) -> tuple[list[Event], dict[str, str]]:
        """A contact's stored events, oldest first (ties in arrival order), and the ``origin``
        of those that are the effect of a decision run inline: event id -> outbox key.
        """
        ...

    def insert_events(
        self, events: Sequence[Event], *, received_at: str, origins: Mapping[str, str] | None = None
    ) -> None:
        """Store new events; ``origins`` names the decision (outbox key) an effect came from."""
        ...

    def delete_events(self, ids: Sequence[str]) -> None:
        """Remove events: only the effects of decisions a re-judgement recomputes."""
        ...

    def upsert_contacts(self, contacts: Sequence[Contact], *, updated_at: str) -> None:
        """Insert or replace contacts; ``updated_at`` is the text of the batch's one clock time."""
        ...

    def add_transitions(self, transitions: Sequence[StageTransition]) -> None: ...

    def replace_transitions(
        self, contact_id: str, transitions: Sequence[StageTransition]
    ) -> None: ...

    def record_failures(self, failures: Sequence[IngestFailure], *, failed_at: str) -> None: ...

    def clear_failures(self, event_ids: Sequence[str]) -> None:
        """Forget earlier failures of events that have now been applied."""
        ...

    def count_events(self, contact_id: str, type: str, since: str | None) -> int: ...

    def fires_of(self, contact_ids: Iterable[str]) -> list[tuple[str, str, str, str, str, str]]:
        """Every recorded fire of a limited rule for these contacts:
        (contact_id, ruleset, rule, entity, occurrence, at).
        """
        ...

    def record_fires(self, fires: Sequence[tuple[str, str, str, str, str, str]]) -> None:
        """Record fires (contact_id, ruleset, rule, entity, occurrence, at) of limited rules."""
        ...

    def delete_fires(self, contact_id: str, rules: Sequence[tuple[str, str]], since: str) -> None:
        """Forget a contact's fires of ``rules`` (ruleset, rule) from ``since`` on: the fires a
        re-judgement recomputes.
        """
        ...

    def enqueue(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert outbox rows; a row whose key exists is ignored. Returns how many were new.

        A row run inline (``inline``: 1) arrives finished, with its ``status``, ``note``,
        ``result``, ``attempts`` and ``finished_at``; any other row is pending.
        """
        ...

    def decisions_of(self, contact_id: str) -> dict[str, tuple[str, str, str, str, int]]:
        """A contact's outbox rows: key -> (ruleset, rule, status, due_at, inline)."""
        ...

    def redo_actions(self, rows: Sequence[dict[str, Any]]) -> None:
        """Overwrite the outcome of inline rows a re-judgement ran again (by ``key``)."""
        ...

    def retract_actions(self, keys: Sequence[str], *, note: str, at: str) -> None:
        """Mark inline rows that a corrected history no longer implies as ``retracted``."""
        ...

    def delete_traces(self, contact_id: str, rules: Sequence[tuple[str, str]], since: str) -> None:
        """Forget a contact's traces of ``rules`` from ``since`` on (a re-judgement redoes them),
        but for those of retractions: what was retracted, and why, stays on record."""
        ...

    def add_traces(self, traces: Sequence[Trace], *, recorded_at: str) -> None: ...

    def due_actions(self, now: str, limit: int) -> list[OutboxRow]:
        """Pending rows due by ``now`` and held by no worker's claim, in dispatch order."""
        ...

    def claim_due_actions(
        self, now: str, limit: int, *, lease_until: str, worker: str
    ) -> list[OutboxRow]:
        """Claim up to ``limit`` due rows for ``worker`` until ``lease_until``, in dispatch
        order: other workers pass over them (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so no
        claim waits on another) until the lease ends. The first step of a worker's batch;
        ``held_actions`` is the second."""
        ...

    def held_actions(
        self, seqs: Sequence[int], *, worker: str, lease_until: str
    ) -> list[OutboxRow]:
        """Of the rows ``worker`` claimed until ``lease_until``, those still its own (the
        lease did not run out and pass them to another worker), taken for this transaction
        and no longer leased (what runs them now decides what comes of them)."""
        ...

    def action(self, seq: int) -> OutboxRow | None: ...

    def finish_action(
        self, seq: int, *, status: str, note: str | None, result: Any, at: str, attempts: int
    ) -> None: ...

    def reschedule_action(self, seq: int, *, due_at: str, note: str, attempts: int) -> None: ...

    def claim_action(self, seq: int, *, lease_until: str, note: str, attempts: int) -> None:
        """Hold a row for a worker until ``lease_until``: it is due again then, if unrecorded."""
        ...

    def claimed_actions(self, contact_id: str, now: str) -> list[OutboxRow]:
        """A contact's rows held by a worker right now (external actions on their way)."""
        ...

    def add_action_history(self, steps: Sequence[ActionStep]) -> None:
        """Keep what the dispatcher did with outbox rows (``action_history``). The steps are
        held by the transaction and written in one batch when it commits (dropped with a
        savepoint that rolls back), so recording them costs no transaction of its own."""
        ...

    def record_ruleset(
        self, name: str, version: int, content_hash: str, path: str, content: str, at: str
    ) -> bool: ...

    def anchors_for(
        self, contact_ids: Sequence[str]
    ) -> dict[tuple[str, str, str, str], tuple[str, str, str]]:
        """Current anchors of these contacts: key -> (anchor_at, fire_at, status)."""
        ...

    def put_anchors(self, rows: Sequence[tuple[str, str, str, str, str, str]]) -> None:
        """Set anchors (ruleset, rule, contact, entity, anchor_at, fire_at), pending again."""
        ...

    def drop_anchors(self, keys: Sequence[tuple[str, str, str, str]]) -> None:
        """Cancel pending anchors whose date is gone (fired ones stay, as history)."""
        ...

    def due_anchors(self, now: str, limit: int) -> list[tuple[str, str, str, str, str, str]]:
        """Pending anchors whose fire time has come, oldest first (an index range scan)."""
        ...

    def close_anchor(
        self, key: tuple[str, str, str, str], *, status: str, note: str | None
    ) -> None: ...

    def anchor_definitions(self) -> dict[tuple[str, str], str]: ...

    def reset_anchor_rule(self, ruleset: str, rule: str, definition: str) -> None:
        """Forget a rule's pending anchors (its definition changed) and record the new one."""
        ...

    def contacts_after(
        self, last_id: str, limit: int, timezone: str | None = None
    ) -> list[tuple[str, str]]:
        """(id, data) of contacts after ``last_id`` in id order: chunks for sweeps."""
        ...

    def contact_timezones(self) -> list[str]: ...

    def schedule_slot(self, ruleset: str, rule: str, timezone: str) -> str | None: ...

    def take_schedule(
        self, ruleset: str, rule: str, timezone: str
    ) -> tuple[str | None, str | None] | None:
        """A cron rule's last slot and, while a run of that slot is under way, the id of the
        last contact it judged (``""`` before the first): ``(last_slot, cursor)``, with
        ``(None, None)`` for a rule never seen. In a concurrent write, the schedule is held
        for the transaction, and None means another worker holds it now (it is running a
        chunk of that slot). What makes each slot run once, chunk by chunk."""
        ...

    def start_schedule_run(self, ruleset: str, rule: str, timezone: str, slot: str) -> None:
        """Record ``slot`` as the rule's last and start its run at the first contact."""
        ...

    def set_schedule_cursor(
        self, ruleset: str, rule: str, timezone: str, cursor: str | None
    ) -> None:
        """The last contact a slot's run judged, committed with its chunk (None: done)."""
        ...

    def set_schedule_slot(self, ruleset: str, rule: str, timezone: str, slot: str) -> None: ...

    def ruleset_source(self, name: str, content_hash: str) -> str | None:
        """The text of one stored ruleset version (``record_ruleset``), or None if unknown:
        what ``clm explain`` rebuilds an earlier version's conditions from."""
        ...

    def record_ruleset_set(
        self, content_hash: str, files: Sequence[dict[str, str]], summary: Sequence[Any], at: str
    ) -> None:
        """Keep a loaded set of rulesets and documents whole; a set loaded again is touched."""
        ...

    def ruleset_sets(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """The sets loaded, the latest first: id, hash, summary, when, and their files."""
        ...

    def high_water(self) -> tuple[int, int]:
        """The newest trace id and outbox seq: what a store held before a run (a backtest
        counts what came after)."""
        ...

    def decisions_since(self, trace_id: int) -> Iterator[tuple[str, str, str, str, str]]:
        """``(ruleset, rule, decision, contact_id, day)`` of every trace after ``trace_id`` that
        is not a plain ``no_match``, streamed (``day`` is the occurrence's ``YYYY-MM-DD``)."""
        ...

    def actions_since(self, seq: int) -> Iterator[tuple[str, str, str, str, int]]:
        """``(ruleset, rule, status, due day, count)`` of the outbox rows after ``seq``."""
        ...

    def set_status(self, key: str, value: Any, at: str) -> None:
        """What a running engine says about itself (``clm status``), by key."""
        ...

    def status(self) -> dict[str, tuple[Any, str]]:
        """Everything running engines said about themselves: key -> (value, when)."""
        ...


class Store(Protocol):
    """Where state lives: the engine's whole contract with a store (``tests/test_store_protocol.py``
    holds each implementation to it)."""

    @property
    def db(self) -> sqlite_utils.Database:
        """The store's connection as a ``sqlite_utils.Database``, outside any write: what
        plugins' commands and reports read their own tables from before ``tables``."""
        ...

    @property
    def tables(self) -> Tables:
        """The plugins' declared tables, read only, outside any write (commands, reports)."""
        ...

    @property
    def concurrent_writers(self) -> bool:
        """Whether several processes write at once (PostgreSQL), so that dispatch claims rows
        under a lease first and runs them in transactions of their own; False for a store
        with one writer at a time (SQLite), which dispatches inside one write transaction."""
        ...

    def write(self, *, concurrent: bool = False) -> AbstractContextManager[StoreTransaction]:
        """A write transaction; commits or rolls back whole.

        By default it excludes every other write (a ruleset load, a migration, an erasure).
        ``concurrent=True``: it runs beside other concurrent writes, holding only the contacts
        it names (``lock_contacts``) and the rows it claims; it may then raise
        ``WriteConflict``, to be run again (``retry_conflicts``). On SQLite every write
        excludes the others (``BEGIN IMMEDIATE``)."""
        ...

    def read(self) -> StoreTransaction:
        """The transaction's read methods, without taking the write lock (dry runs, reports)."""
        ...

    def migrate(self, tables: Sequence[Table] = ()) -> list[str]:
        """Bring the core's schema up to date (each store keeps its own), then create or
        complete the plugins' declared ``tables`` by additive changes only (a table, a column,
        an index), all in one write; what ran, as ``set:name`` and ``table:change``. The
        declared tables are then what ``tables`` reaches."""
        ...

    def applied_migrations(self) -> dict[str, list[str]]:
        """Which migrations ran here, per set, in order (``clm migrate`` shows them)."""
        ...

    def backup_to(self, path: str | os.PathLike[str]) -> None:
        """Copy the whole store as committed now into a new store at ``path`` (a simulation's
        scratch copy), consistent while others write."""
        ...

    def get_contact(self, contact_id: str) -> Contact | None: ...

    def list_contacts(
        self, *, stage: str | None = None, limit: int = 50, offset: int = 0, order_by: str = "id"
    ) -> list[Contact]: ...

    def iter_contacts(self, *, chunk_size: int = 1000) -> Iterator[Contact]: ...

    def count_contacts(self, *, stage: str | None = None) -> int: ...

    def recent_events(self, contact_id: str, *, limit: int = 20) -> list[Event]: ...

    def stage_history(self, contact_id: str) -> list[StageTransition]: ...

    def failures(self, *, limit: int = 100) -> list[dict[str, Any]]: ...

    def summary(self) -> dict[str, Any]:
        """What the engine knows, in numbers: the body of ``clm report``."""
        ...

    def traces(self, contact_id: str, *, rule: str | None = None, limit: int = 50) -> list[Trace]:
        """A contact's most recent decisions: up to ``limit`` per rule, newest first."""
        ...

    def prune_traces(
        self, before: str, *, at: str, batch_size: int = 1000, dry_run: bool = False
    ) -> int:
        """Delete the traces of decisions before ``before`` (UTC text, compared with their
        ``at``), ``batch_size`` per write transaction so that ingestion is never held up long;
        returns how many went (would go, with ``dry_run``, which changes nothing). A prune that
        removed traces is remembered (``traces_pruned_before``). Nothing else is removed: the
        outbox rows and fires that make each decision happen once stay."""
        ...

    def traces_pruned_before(self) -> str | None:
        """The latest cutoff a prune removed traces before, or None if none was ever pruned."""
        ...

    def action_history(self, seqs: Sequence[int]) -> dict[int, list[ActionStep]]:
        """What the dispatcher did with each of these outbox rows, oldest first."""
        ...

    def prune_action_history(
        self, before: str, *, batch_size: int = 1000, dry_run: bool = False
    ) -> int:
        """Delete the action-history steps recorded before ``before`` (the rows' own status
        stays), ``batch_size`` per write transaction; how many went (would go)."""
        ...

    def actions_for(self, contact_id: str, *, rule: str | None = None) -> list[OutboxRow]: ...

    def outcome_counts(self, action: str) -> list[tuple[str, str | None, int]]:
        """``(status, note, count)`` of one action's outbox rows, grouped by status and note,
        most frequent first: why its sends waited, failed or were vetoed, for a report."""
        ...

    def actions_by_key(self, keys: Sequence[str]) -> dict[str, OutboxRow]: ...

    def anchors_of(
        self, contact_id: str, ruleset: str, rule: str
    ) -> list[tuple[str, str, str, str, str | None]]:
        """(entity, anchor_at, fire_at, status, note) of one rule's anchors for a contact."""
        ...

    def last_event(self, contact_id: str, type_: str) -> Event | None: ...

    def ruleset_versions(self) -> list[dict[str, Any]]: ...

    def rules_summary(self) -> list[dict[str, Any]]:
        """Per rule: decisions recorded and actions by status (the body of ``clm report``)."""
        ...

    def score_summary(self) -> dict[str, list[float]]:
        """Every contact's value of every named score, by score name."""
        ...

    def forget(
        self,
        contact_id: str,
        *,
        also: Callable[[Tables, Erasure], dict[str, int]],
        erased_at: str,
        requested_by: str,
        files: Sequence[str | os.PathLike[str]] = (),
    ) -> tuple[Erasure, ErasureReport]:
        """Erase a contact from the core's tables and, in the same transaction, through
        ``also(tables, erasure)`` (the plugins' hooks, with the write's declared tables);
        rewrite other contacts' references to the pseudonym; check and record it.
        Files are planned, not touched: the caller applies them after the commit."""
        ...

    def record_rejects_file(self, path: str, written_at: str) -> None:
        """Remember a rejects file ``clm ingest`` wrote, so an erasure can scrub it."""
        ...

    def create_api_key(
        self, key_id: str, *, name: str, scope: str, token_hash: str, created_at: str
    ) -> None:
        """Record a new API key of ``clm serve`` (only the hash of its token)."""
        ...

    def api_key(self, key_id: str) -> dict[str, Any] | None:
        """One API key by id: id, name, scope, token_hash, created_at, revoked_at; or None."""
        ...

    def api_keys(self) -> list[dict[str, Any]]:
        """Every API key, revoked ones too, oldest first (without their hashes)."""
        ...

    def revoke_api_key(self, key_id: str, *, at: str) -> bool:
        """Revoke a key; False if there is no such key or it was revoked already."""
        ...

    def close(self) -> None: ...


def is_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)
    rather than a SQLite file."""
    return target.startswith(("postgresql://", "postgres://"))


def open_store(path: str, **options: Any) -> Store:
    """Open the store at ``path``: a PostgreSQL URL (``postgresql://...``; the database must
    exist) or a SQLite file (created if missing)."""
    if is_url(path):
        from .postgres import PostgresStore

        return PostgresStore(path, **options)
    from .sqlite import SQLiteStore

    return SQLiteStore(path, **options)


__all__ = [
    "ActionStep",
    "Column",
    "Index",
    "IngestFailure",
    "OutboxRow",
    "StageTransition",
    "Store",
    "StoreTransaction",
    "Table",
    "TableAccess",
    "Tables",
    "Trace",
    "WriteConflict",
    "is_url",
    "open_store",
    "retry_conflicts",
]
