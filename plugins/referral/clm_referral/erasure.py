"""GDPR erasure of a contact from the referral tables (the ``forget_contact`` hook).

A referral is about two people, and the ledger is the books of a programme that paid money:

- the contact's codes and fingerprints are theirs alone: deleted (a code also becomes the
  pseudonym wherever another contact's data quotes it);
- attributions (who referred whom) and rewards, with their ledger entries and lines, are
  **pseudonymised**, on both sides: the contact becomes the erasure's pseudonym. The friend
  they referred keeps a referrer, the referrer who referred them keeps a referral and a
  reward, every entry still sums to zero and every account still balances; nothing left
  names the contact.

The ledger's rows refuse updates (triggers), so a row is rewritten by deleting it and
inserting it again, in the same transaction. A reward's id is derived from its referred
contact (``ledger.reward_id``): a reward *for referring* the erased contact gets the id its
pseudonym derives, and the rename is handed to the core, which rewrites the old id where
other contacts' events quote it.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

from clm_engine import Erasure

from . import ledger

#: The ledger's tables, parents first (inserted in this order, deleted in the reverse).
LEDGER = ("referral_rewards", "referral_entries", "referral_lines")


def forget(db: Database, contact_id: str, erasure: Erasure) -> dict[str, int]:
    removed: dict[str, int] = {}
    if db["referral_codes"].exists():
        for (code,) in db.execute(
            "SELECT code FROM referral_codes WHERE contact_id = ?", [contact_id]
        ).fetchall():
            erasure.rename(code, erasure.pseudonym)
        removed["referral_codes"] = db.execute(
            "DELETE FROM referral_codes WHERE contact_id = ?", [contact_id]
        ).rowcount
    if db["referral_attributions"].exists():
        erasure.rewrite_table(db, "referral_attributions")
    if db["referral_rewards"].exists():
        _rename_rewards(db, contact_id, erasure)
        _rewrite_ledger(db, erasure)
        removed["referral_fingerprints"] = db.execute(
            "DELETE FROM referral_fingerprints WHERE contact_id = ?", [contact_id]
        ).rowcount
        erasure.rewrite_table(db, "referral_fingerprints")
    return removed


def _rename_rewards(db: Database, contact_id: str, erasure: Erasure) -> None:
    """Rewards for the referral *of* the contact: their id is made from the contact's id."""
    for reward, kind, role in db.execute(
        "SELECT id, kind, role FROM referral_rewards WHERE referred_contact_id = ?", [contact_id]
    ).fetchall():
        erasure.rename(reward, ledger.reward_id(erasure.pseudonym, kind, role))


def _rewrite_ledger(db: Database, erasure: Erasure) -> None:
    """Every ledger row that mentions the contact (or a renamed reward), deleted and inserted
    again rewritten: children deleted first, parents inserted first."""
    found: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {
        table: erasure.rows_mentioning(db, table) for table in LEDGER
    }
    for table in reversed(LEDGER):
        columns, rows = found[table]
        for rowid, *_ in rows:
            db.execute(f"DELETE FROM {table} WHERE rowid = ?", [rowid])
    for table in LEDGER:
        columns, rows = found[table]
        marks = ", ".join("?" * len(columns))
        for _, *values in rows:
            db.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                [erasure.rewrite_text(v) if isinstance(v, str) else v for v in values],
            )
        erasure.pseudonymised(table, len(rows))
