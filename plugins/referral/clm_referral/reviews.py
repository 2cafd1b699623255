"""Review decisions and redemptions, as events: ``referral.reviewed`` and ``referral.redeem``.

Why events rather than direct writes: the decision then sits in the contact's history (who
approved what, when, and why), it is applied exactly once (the CLI gives it an id derived
from the reward and the decision), and rules can react to it, e.g. move a referrer whose
held reward was approved to advocacy. The handlers below write the ledger entry in the
transaction that stores the event; a decision the reward's state does not allow is refused,
and the event is not stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clm_engine import utc_text

from . import ledger

if TYPE_CHECKING:
    import sqlite_utils

    from clm_engine import Contact, Event

DECISIONS = {"approve": "approve", "reject": "reject"}


def on_reviewed(db: sqlite_utils.Database, contact: Contact, event: Event) -> None:
    """``referral.reviewed`` {reward_id, decision: approve|reject, reviewer, note} on the
    reward's beneficiary: a person's decision on a reward held for review."""
    reward_id = event.properties.get("reward_id")
    decision = event.properties.get("decision")
    reviewer = event.properties.get("reviewer") or "a reviewer"
    if decision not in DECISIONS:
        raise ValueError(f"'decision' is 'approve' or 'reject' (got {decision!r})")
    row = ledger.get_reward(db, reward_id) if isinstance(reward_id, str) else None
    if row is None or row["beneficiary_contact_id"] != contact.id:
        raise ValueError(f"contact {contact.id!r} has no reward {reward_id!r}")
    ledger.transition(
        db,
        row["id"],  # reward_id, known to be a str by now
        DECISIONS[decision],
        at=utc_text(event.occurred_at),
        actor=f"review by {reviewer}",
        reason=event.properties.get("note") or None,
        review=True,
    )


def on_redeem(db: sqlite_utils.Database, contact: Contact, event: Event) -> None:
    """``referral.redeem`` {reference} on a contact: pays out every approved reward."""
    approved = [
        row["id"]
        for row in db.query(
            "SELECT id FROM referral_rewards WHERE beneficiary_contact_id = ? ORDER BY id",
            [contact.id],
        )
        if ledger.get_reward(db, row["id"])["state"] == "approved"  # type: ignore[index]
    ]
    if not approved:
        raise ValueError(f"contact {contact.id!r} has no approved reward to redeem")
    for reward_id in approved:
        ledger.transition(
            db,
            reward_id,
            "redeem",
            at=utc_text(event.occurred_at),
            actor="redemption",
            reason=event.properties.get("reference") or None,
        )


def approved_rewards(db: sqlite_utils.Database, contact_id: str) -> list[dict[str, Any]]:
    return [
        row
        for row in ledger.rewards(db, state="approved")
        if row["beneficiary_contact_id"] == contact_id
    ]
