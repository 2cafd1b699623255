"""clm-referral: who referred whom, for clm-engine.

What it does now:

* ``referral.signup`` (on the referred contact) records the referrer in
  ``attributes["referred_by"]``; the first referrer wins.
* ``referral.sent`` (on the referrer) counts ``metrics["referrals_sent"]``.
* Its own tables, ``referral_codes`` and ``referral_attributions``, created by its migrations.
* GDPR erasure of a contact's rows in those tables.

Issuing codes, filling the attribution table from events and rewarding referrers come in the
plugin's own issue.
"""

from __future__ import annotations

from sqlite_utils.migrations import Migrations

from clm_engine import Contact, Event, hookimpl

migrations = Migrations("clm_referral")


@migrations()
def m001_initial(db) -> None:
    # One statement at a time: sqlite3's executescript() would COMMIT the caller's transaction.
    db.execute(
        """
        CREATE TABLE referral_codes (
            code TEXT PRIMARY KEY,
            contact_id TEXT NOT NULL,         -- the referrer who shares the code
            created_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX referral_codes_by_contact ON referral_codes (contact_id)")
    db.execute(
        """
        CREATE TABLE referral_attributions (
            referred_contact_id TEXT PRIMARY KEY,   -- a contact is referred at most once
            referrer_contact_id TEXT,
            code TEXT,
            attributed_at TEXT
        )
        """
    )
    db.execute(
        "CREATE INDEX referral_attributions_by_referrer ON referral_attributions "
        "(referrer_contact_id)"
    )


def _text(event: Event, key: str, *, required: bool) -> str | None:
    value = event.properties.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"a {event.type} event needs a non-empty string {key!r} (got {value!r})")
    return value


def apply_signup(contact: Contact, event: Event) -> None:
    """``referral.signup``, on the referred contact: remembers who referred them.

    Properties: ``referrer_id`` (required, the referrer's contact id) and ``code`` (optional).
    Sets ``attributes["referred_by"]``; the first referral wins, later ones change nothing.
    """
    referrer_id = _text(event, "referrer_id", required=True)
    _text(event, "code", required=False)
    if referrer_id == contact.id:
        raise ValueError(f"contact {contact.id!r} cannot refer themselves")
    contact.attributes.setdefault("referred_by", referrer_id)


def apply_sent(contact: Contact, event: Event) -> None:
    """``referral.sent``, on the referrer: counts ``metrics["referrals_sent"]``."""
    contact.metrics["referrals_sent"] = contact.metrics.get("referrals_sent", 0) + 1


@hookimpl
def register_reducers(register):
    register("referral.signup", apply_signup, name="referral.signup")
    register("referral.sent", apply_sent, name="referral.sent")


@hookimpl
def register_migrations(register):
    register(migrations)


@hookimpl
def forget_contact(db, contact_id):
    removed = {}
    if db["referral_codes"].exists():
        removed["referral_codes"] = db.execute(
            "DELETE FROM referral_codes WHERE contact_id = ?", [contact_id]
        ).rowcount
    if db["referral_attributions"].exists():
        # Both sides: the contact's own attribution, and the rows naming them as referrer (a
        # row that names a forgotten person is their personal data, whoever it is about).
        removed["referral_attributions"] = db.execute(
            "DELETE FROM referral_attributions "
            "WHERE referred_contact_id = ? OR referrer_contact_id = ?",
            [contact_id, contact_id],
        ).rowcount
    return removed
