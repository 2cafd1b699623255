"""The built-in fraud checks, registered through the plugin's ``register_fraud_checks`` hook
like any other plugin's. Each reads the plugin's tables (and the core's contact emails) and
says why a reward should wait for a person, or nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from clm_engine import utc_text

from .emails import normalise_email
from .fraud import Claim

if TYPE_CHECKING:
    from clm_engine import Tables


def self_referral(claim: Claim, tables: Tables) -> str | None:
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


def shared_fingerprint(claim: Claim, tables: Tables) -> list[str]:
    """The referrer and the referred contact used the same device or the same payment means,
    as the events' ``device_fingerprint`` / ``payment_fingerprint`` properties say."""
    fingerprints = tables["referral_fingerprints"]
    columns = ["kind", "value"]

    def of(contact_id: str) -> set[tuple[str, str]]:
        found = fingerprints.rows({"contact_id": contact_id}, columns=columns)
        return {(row["kind"], row["value"]) for row in found}

    return [
        f"the referrer and the referred contact share a {kind} fingerprint ({value[:12]})"
        for kind, value in sorted(of(claim.referrer_id) & of(claim.referred_id))
    ]


def monthly_cap(claim: Claim, tables: Tables) -> str | None:
    """More rewards for one referrer this calendar month than the cap allows."""
    cap = claim.settings.monthly_cap
    if cap is None or claim.role != "referrer":
        return None
    start = claim.at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    count = tables["referral_rewards"].count(
        {
            "referrer_contact_id": claim.referrer_id,
            "role": "referrer",
            "earned_at": ("between", (utc_text(start), utc_text(end - timedelta.resolution))),
        }
    )
    if count >= cap:
        return f"the referrer already has {count} rewards in {start:%Y-%m} (cap {cap} a month)"
    return None


def burst(claim: Claim, tables: Tables) -> str | None:
    """Many referred signups of one referrer in a short time: a script, or a bought list."""
    count_limit, hours = claim.settings.burst_count, claim.settings.burst_hours
    if count_limit is None or claim.attributed_at is None:
        return None
    at = datetime.fromisoformat(claim.attributed_at)
    window = timedelta(hours=hours)
    tick = timedelta.resolution  # strictly inside the window, as "between" includes its ends
    count = tables["referral_attributions"].count(
        {
            "referrer_contact_id": claim.referrer_id,
            "attributed_at": (
                "between",
                (utc_text(at - window + tick), utc_text(at + window - tick)),
            ),
        }
    )
    if count >= count_limit:
        return f"{count} referred signups by this referrer within {hours} h of this one"
    return None


def register_builtin_checks(register: Callable[..., None]) -> None:
    register("self-referral", self_referral, description=self_referral.__doc__)
    register("shared-fingerprint", shared_fingerprint, description=shared_fingerprint.__doc__)
    register("monthly-cap", monthly_cap, description=monthly_cap.__doc__)
    register("burst", burst, description=burst.__doc__)
