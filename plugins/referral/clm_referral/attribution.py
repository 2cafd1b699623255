"""Codes and attribution: who shares which code, and who referred whom.

Attribution runs as an event handler (inside the transaction that stores the event), so the
attribution table is always in step with the events. The first valid attribution *by event
time* wins, whatever order events arrive in; but once a reward was granted for a referred
contact, a late event naming another referrer changes nothing (the money already went).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clm_engine import utc_text

from .codes import new_code, normalise_code

if TYPE_CHECKING:
    import sqlite_utils

    from clm_engine import Contact, Event

#: Event properties that carry fingerprints, and the kind each one is.
FINGERPRINTS = {"device_fingerprint": "device", "payment_fingerprint": "payment"}
#: Properties of a ``signup`` event that carry the code the new contact came with.
SIGNUP_CODE_KEYS = ("referral_code", "referred_by_code")


def code_of(db: sqlite_utils.Database, contact_id: str) -> str | None:
    """The contact's active code, if they have one."""
    row = db.execute(
        "SELECT code FROM referral_codes WHERE contact_id = ? AND retired_at IS NULL",
        [contact_id],
    ).fetchone()
    return row[0] if row else None


def ensure_code(
    db: sqlite_utils.Database, contact_id: str, *, at: str, rotate: bool = False
) -> tuple[str, bool]:
    """The contact's active code, created if they have none (or retired first with
    ``rotate``): ``(code, created)``. One active code per contact, so asking twice gives the
    same code: the action and the CLI are idempotent."""
    current = code_of(db, contact_id)
    if current is not None and not rotate:
        return current, False
    if current is not None:
        db.execute("UPDATE referral_codes SET retired_at = ? WHERE code = ?", [at, current])
    for _ in range(10):  # 45 random bits: a collision is a curiosity, not a loop
        code = new_code()
        cursor = db.execute(
            "INSERT INTO referral_codes (code, contact_id, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (code) DO NOTHING",
            [code, contact_id, at],
        )
        if cursor.rowcount:
            return code, True
    raise RuntimeError("could not draw an unused referral code in 10 tries")


def lookup_code(db: sqlite_utils.Database, text: str) -> dict[str, Any] | None:
    """Whose code this is (typed in any case, with or without dashes), active or retired."""
    rows = list(
        db.query(
            "SELECT code, contact_id, retired_at FROM referral_codes WHERE code = ?",
            [normalise_code(text)],
        )
    )
    return rows[0] if rows else None


def attribute(
    db: sqlite_utils.Database,
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
    cursor = db.execute(
        """
        INSERT INTO referral_attributions
            (referred_contact_id, referrer_contact_id, code, attributed_at, event_id)
        VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (referred_contact_id) DO UPDATE SET
            referrer_contact_id = excluded.referrer_contact_id,
            code = excluded.code,
            attributed_at = excluded.attributed_at,
            event_id = excluded.event_id
        WHERE excluded.attributed_at < referral_attributions.attributed_at
          AND NOT EXISTS (
              SELECT 1 FROM referral_rewards r WHERE r.referred_contact_id = ?
          )
        """,
        [referred, referrer, code, at, event_id, referred],
    )
    return cursor.rowcount > 0


def attribution_of(db: sqlite_utils.Database, referred: str) -> dict[str, Any] | None:
    rows = list(
        db.query("SELECT * FROM referral_attributions WHERE referred_contact_id = ?", [referred])
    )
    return rows[0] if rows else None


def on_referral_signup(db: sqlite_utils.Database, contact: Contact, event: Event) -> None:
    """``referral.signup`` on the referred contact: ``referrer_id``, or a ``code`` to look up.

    A code that is not known and no ``referrer_id`` is refused (the event is recorded as a
    failure for ops to look at); a code that belongs to someone other than ``referrer_id`` is
    refused too, since one of the two is wrong.
    """
    referrer = event.properties.get("referrer_id")
    code = event.properties.get("code")
    owner = lookup_code(db, code) if isinstance(code, str) and code.strip() else None
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
        db,
        referred=contact.id,
        referrer=referrer,
        code=code,
        at=utc_text(event.occurred_at),
        event_id=event.id,
    )


def on_signup(db: sqlite_utils.Database, contact: Contact, event: Event) -> None:
    """A ``signup`` carrying ``referral_code``: attributed to the code's owner. An unknown
    code never stops a signup: it is simply not an attribution."""
    for key in SIGNUP_CODE_KEYS:
        code = event.properties.get(key)
        if isinstance(code, str) and code.strip():
            owner = lookup_code(db, code)
            if owner is not None and owner["contact_id"] != contact.id:
                attribute(
                    db,
                    referred=contact.id,
                    referrer=owner["contact_id"],
                    code=owner["code"],
                    at=utc_text(event.occurred_at),
                    event_id=event.id,
                )
            return


def on_any_event(db: sqlite_utils.Database, contact: Contact, event: Event) -> None:
    """Remember the device and payment fingerprints an event carries, for the fraud checks."""
    for key, kind in FINGERPRINTS.items():
        value = event.properties.get(key)
        if isinstance(value, str) and value:
            db.execute(
                "INSERT INTO referral_fingerprints "
                "(contact_id, kind, value, first_seen_at, event_id) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET first_seen_at = excluded.first_seen_at, "
                "event_id = excluded.event_id "
                "WHERE excluded.first_seen_at < referral_fingerprints.first_seen_at",
                [contact.id, kind, value, utc_text(event.occurred_at), event.id],
            )
