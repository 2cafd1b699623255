"""GDPR erasure of a contact from the loyalty tables (the ``forget_contact`` hook).

A points ledger is the books of a programme: points issued and still owed are a liability the
business must account for after a member leaves. So the contact's entries, tier history and
milestones are **pseudonymised**, not deleted: every row keeps its points and dates, and the
contact becomes the erasure's pseudonym (in ``contact_id`` and wherever a key quotes their id).
Programme totals (issued, redeemed, expired, outstanding) stay what they were; nothing left
names the contact.

The tables refuse updates (append-only), so a row is rewritten by deleting it and inserting
it again, in the erasure's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from clm_engine import Erasure

from .schema import TABLES


def forget(db: Database, contact_id: str, erasure: Erasure) -> dict[str, int]:
    for table in (t.name for t in TABLES):
        if not db[table].exists():
            continue
        columns, rows = erasure.rows_mentioning(db, table)
        for rowid, *_ in rows:
            db.execute(f"DELETE FROM {table} WHERE rowid = ?", [rowid])
        marks = ", ".join("?" * len(columns))
        for _, *values in rows:
            db.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                [_rewritten(erasure, value) for value in values],
            )
        erasure.pseudonymised(table, len(rows))
    return {}


def _rewritten(erasure: Erasure, value: Any) -> Any:
    return erasure.rewrite_text(value) if isinstance(value, str) else value
