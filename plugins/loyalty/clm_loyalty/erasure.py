"""GDPR erasure of a contact from the loyalty tables (the ``forget_contact`` hook).

A points ledger is the books of a programme: points issued and still owed are a liability the
business must account for after a member leaves. So the contact's entries, tier history and
milestones are **pseudonymised**, not deleted: every row keeps its points and dates, and the
contact becomes the erasure's pseudonym (in ``contact_id`` and wherever a key quotes their id).
Programme totals (issued, redeemed, expired, outstanding) stay what they were; nothing left
names the contact.

The tables are append-only; ``pseudonymise`` is the one change they take (the store deletes
and inserts the row again, in the erasure's transaction), on either store.
"""

from __future__ import annotations

from clm_engine import Erasure, Tables

from .schema import TABLES


def forget(tables: Tables, contact_id: str, erasure: Erasure) -> dict[str, int]:
    for table in TABLES:
        tables[table.name].pseudonymise(erasure)
    return {}
