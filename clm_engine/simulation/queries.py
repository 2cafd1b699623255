"""The questions a simulation asks its scratch store that the ``Store`` protocol does not answer.

A simulation counts what the engine decided from the store itself: the traces and outbox rows
written during the run, after those a copied store already held. These three queries are the
only SQL in this package; each is a candidate for a method of the ``Store`` protocol (they are
written against ``SQLiteStore``, which a scratch store always is: a SQLite file, whatever
store a live engine uses).
"""

from __future__ import annotations

from collections.abc import Iterator

from ..store import Store
from ..store.sqlite import SQLiteStore


def _sqlite(store: Store) -> SQLiteStore:
    if not isinstance(store, SQLiteStore):  # pragma: no cover - simulate() opens it by path
        raise TypeError(f"a simulation's scratch store is SQLite, not {type(store).__name__}")
    return store


def high_water(store: Store) -> tuple[int, int]:
    """The newest trace id and outbox seq: what a copied store held before the run."""
    conn = _sqlite(store).conn
    trace = conn.execute("SELECT coalesce(max(id), 0) FROM traces").fetchone()[0]
    outbox = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
    return trace, outbox


def decisions_since(store: Store, trace_id: int) -> Iterator[tuple[str, str, str, str, str]]:
    """``(ruleset, rule, decision, contact_id, day)`` of every trace after ``trace_id`` that is
    not a plain ``no_match``, streamed (``day`` is the occurrence's ``YYYY-MM-DD``)."""
    yield from _sqlite(store).conn.execute(
        "SELECT ruleset, rule, decision, contact_id, substr(at, 1, 10) FROM traces "
        "WHERE id > ? AND decision != 'no_match'",
        [trace_id],
    )


def actions_since(store: Store, seq: int) -> Iterator[tuple[str, str, str, str, int]]:
    """``(ruleset, rule, status, due day, count)`` of the outbox rows after ``seq``."""
    yield from _sqlite(store).conn.execute(
        "SELECT ruleset, rule, status, substr(due_at, 1, 10), count(*) FROM outbox "
        "WHERE seq > ? GROUP BY 1, 2, 3, 4",
        [seq],
    )
