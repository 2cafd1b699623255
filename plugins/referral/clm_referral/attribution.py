"""Codes and attribution: who shares which code, and who referred whom.

Attribution runs as an event handler (inside the transaction that stores the event), so the
attribution table is always in step with the events. The first valid attribution *by event
time* wins, whatever order events arrive in; but once a reward was granted for a referred
contact, a late event naming another referrer changes nothing (the money already went).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from clm_engine import utc_text

from .codes import new_code, normalise_code

if TYPE_CHECKING:
    from clm_engine import Contact, Event, Tables

#: Event properties that carry fingerprints, and the kind each one is.
FINGERPRINTS = {"device_fingerprint": "device", "payment_fingerprint": "payment"}
#: Properties of a ``signup`` event that carry the code the new contact came with.
SIGNUP_CODE_KEYS = ("referral_code", "referred_by_code")


def code_of(tables: Tables, contact_id: str) -> str | None:
    """The contact's active code, if they have one."""
    row = tables["referral_codes"].one(
        {"contact_id": contact_id, "retired_at": None}, columns=["code"]
    )
    return row["code"] if row else None


def ensure_code(
    tables: Tables, contact_id: str, *, at: str, rotate: bool = False
) -> tuple[str, bool]:
    """The contact's active code, created if they have none (or retired first with
    ``rotate``): ``(code, created)``. One active code per contact (a partial unique index),
    so asking twice gives the same code: the action and the CLI are idempotent."""
    codes = tables["referral_codes"]
    current = code_of(tables, contact_id)
    if current is not None and not rotate:
        return current, False
    if current is not None:
        codes.update({"code": current}, {"retired_at": at})
    for _ in range(10):  # 45 random bits: a collision is a curiosity, not a loop
        code = new_code()
        if codes.insert(
            {"code": code, "contact_id": contact_id, "created_at": at}, on_conflict="ignore"
        ):
            return code, True
    raise RuntimeError("could not draw an unused referral code in 10 tries")


def lookup_code(tables: Tables, text: str) -> dict[str, Any] | None:
    """Whose code this is (typed in any case, with or without dashes), active or retired."""
    return tables["referral_codes"].one(
        {"code": normalise_code(text)}, columns=["code", "contact_id", "retired_at"]
    )


def attribute(
    tables: Tables,
    *,
    referred: str,
    referrer: str,
    code: str | None,
    at: str,
    event_id: str | None,
) -> bool:
    """Record that ``referrer`` referred ``referred``; True if this attribution now holds.

    First by event time wins; an earlier attribution arriving late replaces a later one,
    unless a reward was already granted for the referred contact.
    """
    attributions = tables["referral_attributions"]
    row = {
        "referred_contact_id": referred,
        "referrer_contact_id": referrer,
        "code": code,
        "attributed_at": at,
        "event_id": event_id,
    }
    current = attributions.one(
        {"referred_contact_id": referred}, columns=["attributed_at"], for_update=True
    )
    if current is None:
        return bool(attributions.insert(row))
    earlier = current["attributed_at"] is not None and utc_text_of(at) < current["attributed_at"]
    if not earlier or tables["referral_rewards"].count({"referred_contact_id": referred}):
        return False
    del row["referred_contact_id"]
    attributions.update({"referred_contact_id": referred}, row)
    return True


def utc_text_of(at: str) -> str:
    """``at`` as the fixed-width UTC text the store gives back (for comparing with it)."""
    return utc_text(datetime.fromisoformat(at.replace("Z", "+00:00")))


def attribution_of(tables: Tables, referred: str) -> dict[str, Any] | None:
    return tables["referral_attributions"].one({"referred_contact_id": referred})


def on_referral_signup(tables: Tables, contact: Contact, event: Event) -> None:
    """``referral.signup`` on the referred contact: ``referrer_id``, or a ``code`` to look up.

    A code that is not known and no ``referrer_id`` is refused (the event is recorded as a
    failure for ops to look at); a code that belongs to someone other than ``referrer_id`` is
    refused too, since one of the two is wrong.
    """
    referrer = event.properties.get("referrer_id")
    code = event.properties.get("code")
    owner = lookup_code(tables, code) if isinstance(code, str) and code.strip() else None
    if owner is not None:
        if referrer and referrer != owner["contact_id"]:
            raise ValueError(
                f"code {code!r} belongs to {owner['contact_id']!r}, not to the referrer_id "
                f"{referrer!r} of this referral.signup"
            )
        referrer, code = owner["contact_id"], owner["code"]
    if not referrer:
        raise ValueError(
            f"referral code {code!r} is not known and the event has no 'referrer_id': "
            "nobody to attribute this signup to"
        )
    if referrer == contact.id:
        raise ValueError(f"contact {contact.id!r} cannot refer themselves")
    attribute(
        tables,
        referred=contact.id,
        referrer=referrer,
        code=code,
        at=utc_text(event.occurred_at),
        event_id=event.id,
    )


def on_signup(tables: Tables, contact: Contact, event: Event) -> None:
    """A ``signup`` carrying ``referral_code``: attributed to the code's owner. An unknown
    code never stops a signup: it is simply not an attribution."""
    for key in SIGNUP_CODE_KEYS:
        code = event.properties.get(key)
        if isinstance(code, str) and code.strip():
            owner = lookup_code(tables, code)
            if owner is not None and owner["contact_id"] != contact.id:
                attribute(
                    tables,
                    referred=contact.id,
                    referrer=owner["contact_id"],
                    code=owner["code"],
                    at=utc_text(event.occurred_at),
                    event_id=event.id,
                )
            return


def on_any_event(tables: Tables, contact: Contact, event: Event) -> None:
    """Remember the device and payment fingerprints an event carries, for the fraud checks:
    when each was first seen (the earliest event time wins, whatever the arrival order)."""
    fingerprints = tables["referral_fingerprints"]
    for key, kind in FINGERPRINTS.items():
        value = event.properties.get(key)
        if isinstance(value, str) and value:
            at = utc_text(event.occurred_at)
            where = {"contact_id": contact.id, "kind": kind, "value": value}
            seen = fingerprints.one(where, columns=["first_seen_at"], for_update=True)
            if seen is None:
                fingerprints.insert({**where, "first_seen_at": at, "event_id": event.id})
            elif at < seen["first_seen_at"]:
                fingerprints.update(where, {"first_seen_at": at, "event_id": event.id})
