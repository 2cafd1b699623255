"""Where state lives. ``Store`` is the protocol; ``SQLiteStore`` the embedded default.

All SQL of the core lives in this package (the condition-to-SQL compiler will be the one other
place). The engine talks to a store through the methods below and, for writes, through a
``StoreTransaction`` that holds the write lock from first read to commit, so that a batch of
events is checked for duplicates, folded and written as one atomic step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..models import Contact, Event


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


@dataclass(frozen=True)
class Trace:
    """Why a rule did or did not fire for a contact, on one occurrence."""

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


class StoreTransaction(Protocol):
    #: The transaction's connection as a ``sqlite_utils.Database``: what plugins' event
    #: handlers, facts and actions use for their own tables.
    db: Any

    def savepoint(self) -> AbstractContextManager[None]: ...
    def existing_event_ids(self, ids: Sequence[str]) -> set[str]: ...
    def load_contacts(self, ids: Iterable[str]) -> dict[str, str]:
        """Stored contacts as their JSON text, by id (the engine parses what it needs)."""
        ...

    def contact_events(self, contact_id: str) -> list[Event]:
        """A contact's stored events, oldest first (ties in arrival order)."""
        ...

    def insert_events(self, events: Sequence[Event]) -> None: ...
    def upsert_contacts(self, contacts: Sequence[Contact], *, updated_at: str) -> None: ...
    def add_transitions(self, transitions: Sequence[StageTransition]) -> None: ...
    def replace_transitions(
        self, contact_id: str, transitions: Sequence[StageTransition]
    ) -> None: ...
    def record_failures(self, failures: Sequence[IngestFailure]) -> None: ...
    def clear_failures(self, event_ids: Sequence[str]) -> None: ...
    def count_events(self, contact_id: str, type: str, since: str | None) -> int: ...
    def limit_state(self, keys: Sequence[tuple[str, str, str, str]]) -> dict[tuple, str]:
        """Last fire time (text) by (ruleset, rule, contact, entity) for the keys that fired."""
        ...

    def record_fires(self, fires: Sequence[tuple[str, str, str, str, str]]) -> None: ...
    def enqueue(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert outbox rows; a row whose key exists is ignored. Returns how many were new."""
        ...

    def add_traces(self, traces: Sequence[Trace], *, recorded_at: str) -> None: ...
    def due_actions(self, now: str, limit: int) -> list[OutboxRow]: ...
    def action(self, seq: int) -> OutboxRow | None: ...
    def finish_action(
        self, seq: int, *, status: str, note: str | None, result: Any, at: str, attempts: int
    ) -> None: ...
    def reschedule_action(self, seq: int, *, due_at: str, note: str, attempts: int) -> None: ...
    def claim_action(self, seq: int, *, lease_until: str, note: str, attempts: int) -> None: ...
    def claimed_actions(self, contact_id: str, now: str) -> list[OutboxRow]: ...
    def record_ruleset(
        self, name: str, version: int, content_hash: str, path: str, content: str, at: str
    ) -> bool: ...


class Store(Protocol):
    def write(self) -> AbstractContextManager[StoreTransaction]:
        """A write transaction, begun at once with the write lock; commits or rolls back whole."""
        ...

    def read(self) -> StoreTransaction:
        """The read methods of a transaction, without the write lock."""
        ...

    def migrate(self, migration_sets: Sequence[Any]) -> list[str]: ...
    def get_contact(self, contact_id: str) -> Contact | None: ...
    def list_contacts(
        self, *, stage: str | None = None, limit: int = 50, offset: int = 0, order_by: str = "id"
    ) -> list[Contact]:
        """Contacts in a stage (or all), sorted by ``id``, ``spent``, ``orders``, ``recent``
        or ``created``."""
        ...

    def iter_contacts(self, *, chunk_size: int = 1000) -> Iterator[Contact]: ...
    def recent_events(self, contact_id: str, *, limit: int = 20) -> list[Event]: ...
    def stage_history(self, contact_id: str) -> list[StageTransition]: ...
    def failures(self, *, limit: int = 100) -> list[dict[str, Any]]: ...
    def summary(self) -> dict[str, Any]: ...
    def forget(
        self, contact_id: str, *, also: Callable[[Any, str], dict[str, int]], erased_at: str
    ) -> dict[str, int]: ...
    def close(self) -> None: ...


def open_store(path: str, **options: Any) -> Store:
    """Open the store at ``path`` (a SQLite file; created if missing)."""
    from .sqlite import SQLiteStore

    return SQLiteStore(path, **options)


__all__ = [
    "IngestFailure",
    "OutboxRow",
    "StageTransition",
    "Store",
    "StoreTransaction",
    "Trace",
    "open_store",
]
