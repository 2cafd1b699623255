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
    from clm_engine import Contact, Event, Tables

DECISIONS = {"approve": "approve", "reject": "reject"}


def on_reviewed(tables: Tables, contact: Contact, event: Event) -> None:
    """``referral.reviewed`` {reward_id, decision: approve|reject, reviewer, note} on the
    reward's beneficiary: a person's decision on a reward held for review."""
    reward_id = event.properties.get("reward_id")
    decision = event.properties.get("decision")
    reviewer = event.properties.get("reviewer") or "a reviewer"
    if decision not in DECISIONS:
        raise ValueError(f"'decision' is 'approve' or 'reject' (got {decision!r})")
    row = ledger.get_reward(tables, reward_id) if isinstance(reward_id, str) else None
    if row is None or row["beneficiary_contact_id"] != contact.id:
        raise ValueError(f"contact {contact.id!r} has no reward {reward_id!r}")
    ledger.transition(
        tables,
        row["id"],  # reward_id, known to be a str by now
        DECISIONS[decision],
        at=utc_text(event.occurred_at),
        actor=f"review by {reviewer}",
        reason=event.properties.get("note") or None,
        review=True,
    )


def on_redeem(tables: Tables, contact: Contact, event: Event) -> None:
    """``referral.redeem`` {reference} on a contact: pays out every approved reward."""
    approved = sorted(row["id"] for row in approved_rewards(tables, contact.id))
    if not approved:
        raise ValueError(f"contact {contact.id!r} has no approved reward to redeem")
    for reward_id in approved:
        ledger.transition(
            tables,
            reward_id,
            "redeem",
            at=utc_text(event.occurred_at),
            actor="redemption",
            reason=event.properties.get("reference") or None,
        )


def approved_rewards(tables: Tables, contact_id: str) -> list[dict[str, Any]]:
    return ledger.rewards(tables, state="approved", where={"beneficiary_contact_id": contact_id})
