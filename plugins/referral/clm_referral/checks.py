"""The built-in fraud checks, registered through :func:`clm_referral.fraud.hookimpl` like any
other plugin's. Each reads the plugin's tables (and the core's contact emails) and says why a
reward should wait for a person, or nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from clm_engine import utc_text

from .emails import normalise_email
from .fraud import Claim, hookimpl

if TYPE_CHECKING:
    import sqlite_utils


def self_referral(claim: Claim, db: sqlite_utils.Database) -> str | None:
    """The same person on both sides: same contact, same email, or the same mailbox spelled
    another way (plus-addressing, dots at Gmail)."""
    if claim.referrer_id == claim.referred_id:
        return "the referrer and the referred contact are the same contact"
    mine, theirs = claim.referrer_email, claim.referred_email
    if not mine or not theirs:
        return None
    if mine.strip().lower() == theirs.strip().lower():
        return f"the referrer and the referred contact share the email {theirs}"
    if normalise_email(mine) == normalise_email(theirs):
        return f"the referrer's email {mine} and the referred contact's {theirs} are one mailbox"
    return None


def shared_fingerprint(claim: Claim, db: sqlite_utils.Database) -> list[str]:
    """The referrer and the referred contact used the same device or the same payment means,
    as the events' ``device_fingerprint`` / ``payment_fingerprint`` properties say."""
    rows = db.query(
        "SELECT DISTINCT a.kind, a.value FROM referral_fingerprints a "
        "JOIN referral_fingerprints b ON a.kind = b.kind AND a.value = b.value "
        "WHERE a.contact_id = ? AND b.contact_id = ? ORDER BY a.kind, a.value",
        [claim.referrer_id, claim.referred_id],
    )
    return [
        f"the referrer and the referred contact share a {row['kind']} fingerprint "
        f"({row['value'][:12]})"
        for row in rows
    ]


def monthly_cap(claim: Claim, db: sqlite_utils.Database) -> str | None:
    """More rewards for one referrer this calendar month than the cap allows."""
    cap = claim.settings.monthly_cap
    if cap is None or claim.role != "referrer":
        return None
    start = claim.at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    (count,) = db.execute(
        "SELECT COUNT(*) FROM referral_rewards WHERE referrer_contact_id = ? AND role = ? "
        "AND earned_at >= ? AND earned_at < ?",
        [claim.referrer_id, "referrer", utc_text(start), utc_text(end)],
    ).fetchone()
    if count >= cap:
        return f"the referrer already has {count} rewards in {start:%Y-%m} (cap {cap} a month)"
    return None


def burst(claim: Claim, db: sqlite_utils.Database) -> str | None:
    """Many referred signups of one referrer in a short time: a script, or a bought list."""
    count_limit, hours = claim.settings.burst_count, claim.settings.burst_hours
    if count_limit is None or claim.attributed_at is None:
        return None
    at = datetime.fromisoformat(claim.attributed_at)
    window = timedelta(hours=hours)
    (count,) = db.execute(
        "SELECT COUNT(*) FROM referral_attributions WHERE referrer_contact_id = ? "
        "AND attributed_at > ? AND attributed_at < ?",
        [claim.referrer_id, utc_text(at - window), utc_text(at + window)],
    ).fetchone()
    if count >= count_limit:
        return f"{count} referred signups by this referrer within {hours} h of this one"
    return None


@hookimpl
def register_fraud_checks(register: Callable[..., None]) -> None:
    register("self-referral", self_referral, description=self_referral.__doc__)
    register("shared-fingerprint", shared_fingerprint, description=shared_fingerprint.__doc__)
    register("monthly-cap", monthly_cap, description=monthly_cap.__doc__)
    register("burst", burst, description=burst.__doc__)
