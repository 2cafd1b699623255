"""clm-email: the email channel of clm-engine.

What it does now:

* ``email.bounced`` events count bounces, and a hard bounce withdraws the contact's email
  consent, so no rule can email an address that does not exist.
* Its own tables, ``email_messages`` (every message the plugin will send, with its idempotency
  key) and ``email_suppressions`` (addresses never to email again), created by its migrations.
* GDPR erasure of a contact's rows in those tables.

Sending (an ``email.send`` action), templates and filling the tables from events come in the
plugin's own issue.
"""

from __future__ import annotations

from sqlite_utils.migrations import Migrations

from clm_engine import Contact, Event, hookimpl

BOUNCE_TYPES = ("hard", "soft")

migrations = Migrations("clm_email")


@migrations()
def m001_initial(db) -> None:
    # One statement at a time: sqlite3's executescript() would COMMIT the caller's transaction.
    db.execute(
        """
        CREATE TABLE email_messages (
            id INTEGER PRIMARY KEY,
            contact_id TEXT NOT NULL,
            idempotency_key TEXT UNIQUE,      -- one message per (rule, contact, occasion)
            template TEXT,
            category TEXT,                    -- transactional / marketing: decides consent checks
            to_address TEXT,
            subject TEXT,
            status TEXT,                      -- queued / sent / failed / suppressed
            error TEXT,
            created_at TEXT,
            sent_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX email_messages_by_contact ON email_messages (contact_id)")
    db.execute(
        """
        CREATE TABLE email_suppressions (
            address TEXT PRIMARY KEY,         -- never email this address again
            contact_id TEXT,
            reason TEXT,                      -- hard_bounce / complaint / unsubscribed / manual
            at TEXT
        )
        """
    )
    db.execute("CREATE INDEX email_suppressions_by_contact ON email_suppressions (contact_id)")


#: The tables this plugin owns, and the column that names the contact in each.
TABLES = (("email_messages", "contact_id"), ("email_suppressions", "contact_id"))


def _when(event: Event) -> str:
    return event.occurred_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def apply_bounce(contact: Contact, event: Event) -> None:
    """``email.bounced``: counts bounces; a hard bounce withdraws email consent.

    Properties: ``type`` (``"hard"`` or ``"soft"``, required) and ``address`` (optional, the
    address that bounced). Every bounce adds one to ``metrics["email_bounces"]``; a hard bounce
    sets ``consent["email"]`` to false and ``metrics["email_hard_bounced_at"]`` to its time. A
    later ``subscribed`` event can grant consent again.
    """
    kind = event.properties.get("type")
    if kind not in BOUNCE_TYPES:
        raise ValueError(
            f"an email bounce needs a 'type' property, 'hard' or 'soft' (got {kind!r})"
        )
    address = event.properties.get("address")
    if address is not None and not (isinstance(address, str) and "@" in address):
        raise ValueError(f"an email bounce's 'address' must be an email address (got {address!r})")
    contact.metrics["email_bounces"] = contact.metrics.get("email_bounces", 0) + 1
    if kind == "hard":
        contact.consent["email"] = False
        contact.metrics["email_hard_bounced_at"] = _when(event)


@hookimpl
def register_reducers(register):
    register("email.bounced", apply_bounce, name="email.bounced")


@hookimpl
def register_migrations(register):
    register(migrations)


@hookimpl
def forget_contact(db, contact_id):
    # GDPR note: erasure may keep a *hashed* address in email_suppressions, so that an opt-out
    # or a hard bounce is still honoured if the same address comes back under a new contact
    # (keeping what is needed to respect an objection is allowed). Until the plugin stores
    # hashed addresses, the simplest correct behaviour is to delete every row of the contact.
    removed = {}
    for table, column in TABLES:
        if db[table].exists():
            removed[table] = db.execute(
                f"DELETE FROM {table} WHERE {column} = ?", [contact_id]
            ).rowcount
    return removed
