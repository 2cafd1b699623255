"""GDPR erasure of a contact from the referral tables (the ``forget_contact`` hook).

A referral is about two people, and the ledger is the books of a programme that paid money:

- the contact's codes and fingerprints are theirs alone: deleted (a code also becomes the
  pseudonym wherever another contact's data quotes it);
- attributions (who referred whom) and rewards, with their ledger entries and lines, are
  **pseudonymised**, on both sides: the contact becomes the erasure's pseudonym. The friend
  they referred keeps a referrer, the referrer who referred them keeps a referral and a
  reward, every entry still sums to zero and every account still balances; nothing left
  names the contact.

The ledger's tables are append-only; ``pseudonymise`` is the one change they take (the store
deletes and inserts the row again, in the erasure's transaction). A reward's id is derived
from its referred contact (``ledger.reward_id``): a reward *for referring* the erased contact
gets the id its pseudonym derives, and the rename is handed to the core, which rewrites the
old id where other contacts' events quote it.
"""

from __future__ import annotations

from clm_engine import Erasure, Tables

from . import ledger

#: The ledger's tables.
LEDGER = ("referral_rewards", "referral_entries", "referral_lines")


def forget(tables: Tables, contact_id: str, erasure: Erasure) -> dict[str, int]:
    removed: dict[str, int] = {}
    codes = tables["referral_codes"]
    for row in codes.rows({"contact_id": contact_id}, columns=["code"]):
        erasure.rename(row["code"], erasure.pseudonym)
    removed["referral_codes"] = codes.delete({"contact_id": contact_id})
    tables["referral_attributions"].pseudonymise(erasure)
    # Rewards for the referral *of* the contact: their id is made from the contact's id.
    for reward in tables["referral_rewards"].rows(
        {"referred_contact_id": contact_id}, columns=["id", "kind", "role"]
    ):
        erasure.rename(
            reward["id"], ledger.reward_id(erasure.pseudonym, reward["kind"], reward["role"])
        )
    for table in LEDGER:  # append-only: rewritten by the store, the one change a ledger takes
        tables[table].pseudonymise(erasure)
    fingerprints = tables["referral_fingerprints"]
    removed["referral_fingerprints"] = fingerprints.delete({"contact_id": contact_id})
    fingerprints.pseudonymise(erasure)
    return removed
