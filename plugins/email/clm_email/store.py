"""The plugin's tables, their migrations, and the event handlers that keep them.

Tables are written only from events (``email.sent``, ``email.failed``, ``email.bounced``,
``unsubscribed`` ...) in the transaction that stores the event, and from the sequence actions
in the dispatch transaction: so the log, the suppressions and the enrollments are exactly as
durable as the events and actions they come from.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from clm_engine import Contact, Erasure, Event, erasure_hash, utc_text
from clm_engine.consent import subscribed_channel, unsubscribed_channels

from .settings import resolve_settings

migrations = Migrations("clm_email")


@migrations()
def m001_initial(db: Database) -> None:
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


@migrations()
def m002_delivery_and_sequences(db: Database) -> None:
    """What sending and drip sequences need: the Message-ID, sequence and step of each
    message and where it went; an index for frequency caps; enrollments in sequences."""
    for column in ("message_id", "sequence", "step", "location"):
        db.execute(f"ALTER TABLE email_messages ADD COLUMN {column} TEXT")
    db.execute("CREATE INDEX email_messages_by_sent ON email_messages (contact_id, sent_at)")
    db.execute(
        """
        CREATE TABLE email_enrollments (
            id TEXT PRIMARY KEY,              -- derived from the start action's outbox key
            contact_id TEXT NOT NULL,
            sequence TEXT NOT NULL,
            status TEXT NOT NULL,             -- active / completed / exited / stopped
            step TEXT,                        -- the last step taken
            enrolled_at TEXT NOT NULL,
            last_step_at TEXT,
            ended_at TEXT,
            exit_reason TEXT,
            exit_events TEXT NOT NULL,        -- JSON list: these event types end it
            exit_stages TEXT NOT NULL         -- JSON list: reaching one of these stages ends it
        )
        """
    )
    db.execute(
        "CREATE INDEX email_enrollments_by_contact ON email_enrollments (contact_id, status)"
    )


#: The tables this plugin owns, and the column that names the contact in each.
TABLES = (
    ("email_messages", "contact_id"),
    ("email_suppressions", "contact_id"),
    ("email_enrollments", "contact_id"),
)


def _log(
    db: Database, contact: Contact, event: Event, status: str, error: str | None = None
) -> None:
    props = event.properties
    at = event.occurred_at_text
    db.execute(
        """
        INSERT INTO email_messages (contact_id, idempotency_key, template, category, to_address,
            subject, status, error, created_at, sent_at, message_id, sequence, step, location)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (idempotency_key) DO UPDATE SET
            status = excluded.status, error = coalesce(excluded.error, error),
            sent_at = coalesce(sent_at, excluded.sent_at),
            location = coalesce(excluded.location, location)
        """,
        [
            contact.id,
            props.get("key") or event.id,
            props.get("template"),
            props.get("category"),
            props.get("to") or props.get("address") or contact.email,
            props.get("subject"),
            status,
            error,
            at,
            (props.get("sent_at") or at) if status == "sent" else None,
            props.get("message_id"),
            props.get("sequence"),
            props.get("step"),
            props.get("location"),
        ],
    )


def on_sent(db: Database, contact: Contact, event: Event) -> None:
    """``email.sent`` (emitted by ``email.send``): the message is logged as sent."""
    if not event.properties.get("message_id"):
        raise ValueError("an email.sent event needs a 'message_id' property")
    _log(db, contact, event, "sent")


def on_failed(db: Database, contact: Contact, event: Event) -> None:
    """``email.failed``: a message that could not be built (a template that did not render)."""
    _log(db, contact, event, "failed", str(event.properties.get("reason") or "unknown"))


def suppress(db: Database, address: str, contact_id: str, reason: str, at: str) -> None:
    """Never email ``address`` again (for ``reason``); a hard reason replaces a soft one."""
    db.execute(
        """
        INSERT INTO email_suppressions (address, contact_id, reason, at) VALUES (?, ?, ?, ?)
        ON CONFLICT (address) DO UPDATE SET reason = excluded.reason, at = excluded.at
        WHERE email_suppressions.reason = 'unsubscribed' AND excluded.reason != 'unsubscribed'
        """,
        [address.lower(), contact_id, reason, at],
    )


def on_bounced(db: Database, contact: Contact, event: Event) -> None:
    """``email.bounced``: the message (if we sent it) is logged bounced; a hard bounce
    suppresses the address at once, so messages already queued for it are vetoed."""
    props = event.properties
    if props.get("key") or props.get("message_id"):
        reason = props.get("reason") or f"{props.get('type')} bounce"
        if props.get("key"):
            _log(db, contact, event, "bounced", reason)
        else:
            db.execute(
                "UPDATE email_messages SET status = 'bounced', error = ? WHERE message_id = ?",
                [reason, props["message_id"]],
            )
    address = props.get("address") or contact.email
    if props.get("type") == "hard" and address:
        suppress(db, address, contact.id, "hard_bounce", event.occurred_at_text)


def on_unsubscribed(db: Database, contact: Contact, event: Event) -> None:
    """``unsubscribed`` from email: the address is suppressed for everything not exempt, and
    the contact leaves every drip sequence.

    The channel is read as the core's reducer reads it (``clm_engine.consent``): ``"EMAIL"``
    is email, and an unsubscribe that names no channel withdraws every one, email included.
    """
    if "email" not in unsubscribed_channels(event.properties):
        return
    if contact.email:
        suppress(db, contact.email, contact.id, "unsubscribed", event.occurred_at_text)
    db.execute(
        "UPDATE email_enrollments SET status = 'exited', ended_at = ?, exit_reason = ? "
        "WHERE contact_id = ? AND status = 'active' AND enrolled_at <= ?",
        [event.occurred_at_text, "unsubscribed", contact.id, event.occurred_at_text],
    )


def on_subscribed(db: Database, contact: Contact, event: Event) -> None:
    """``subscribed`` to email: an unsubscription is lifted (a hard bounce is not)."""
    if contact.email and subscribed_channel(event.properties) == "email":
        address = contact.email.lower()
        keys = [address, hashed(address), erasure_hash(db, address) or address]
        db.execute(
            "DELETE FROM email_suppressions WHERE address IN (?, ?, ?) AND reason = 'unsubscribed'",
            keys,
        )


def on_any_event(db: Database, contact: Contact, event: Event) -> None:
    """Every event: a contact whose event or stage is an exit of a sequence leaves it now.

    One indexed statement, which changes nothing for a contact in no sequence.
    """
    at = event.occurred_at_text
    db.execute(
        """
        UPDATE email_enrollments SET status = 'exited', ended_at = :at,
            exit_reason = CASE
                WHEN EXISTS (SELECT 1 FROM json_each(exit_events) WHERE value = :type)
                THEN 'event ' || :type ELSE 'reached stage ' || :stage END
        WHERE contact_id = :contact AND status = 'active' AND enrolled_at <= :at
          AND (EXISTS (SELECT 1 FROM json_each(exit_events) WHERE value = :type)
               OR EXISTS (SELECT 1 FROM json_each(exit_stages) WHERE value = :stage))
        """,
        {"at": at, "type": event.type, "stage": contact.stage or "", "contact": contact.id},
    )


def enroll(
    db: Database,
    *,
    enrollment: str,
    contact_id: str,
    sequence: str,
    at: str,
    exit_events: list[str],
    exit_stages: list[str],
) -> bool:
    """Record an enrollment; False if it was already there (a re-run of the same action)."""
    cursor = db.execute(
        """
        INSERT INTO email_enrollments (id, contact_id, sequence, status, enrolled_at,
            exit_events, exit_stages)
        VALUES (?, ?, ?, 'active', ?, ?, ?) ON CONFLICT (id) DO NOTHING
        """,
        [enrollment, contact_id, sequence, at, json.dumps(exit_events), json.dumps(exit_stages)],
    )
    return cursor.rowcount == 1


def end_enrollment(db: Database, enrollment: str, status: str, reason: str, at: datetime) -> None:
    db.execute(
        "UPDATE email_enrollments SET status = ?, exit_reason = ?, ended_at = ? "
        "WHERE id = ? AND status = 'active'",
        [status, reason, utc_text(at), enrollment],
    )


def hashed(address: str) -> str:
    """The unkeyed hash older versions kept of an erased contact's suppressed address (still
    honoured when found; an erasure now keeps a keyed hash, :func:`clm_engine.erasure_hash`)."""
    return "sha256:" + hashlib.sha256(address.strip().lower().encode()).hexdigest()


def is_suppressed(db: Database, address: str) -> tuple[str, str] | None:
    """``(reason, since)`` if ``address`` (or its hash, kept after an erasure) is suppressed."""
    keys = [address.lower(), hashed(address), erasure_hash(db, address) or hashed(address)]
    row = db.execute(
        "SELECT reason, at FROM email_suppressions WHERE address IN (?, ?, ?) "
        "ORDER BY reason = 'unsubscribed' LIMIT 1",
        keys,
    ).fetchone()
    return (row[0], row[1]) if row else None


def forget(db: Database, contact_id: str, erasure: Erasure) -> dict[str, int]:
    """Erase a contact's rows and sent copies; a suppression is kept as a keyed hash, unlinked.

    Why keep it: if the same address comes back (a new signup, a CRM import), an opt-out or a
    hard bounce must still be honoured, and keeping what is needed to respect an objection is
    allowed; the address itself and the link to the contact are gone.

    Files: the ``.eml`` copies the file transport wrote of the contact's messages (their
    ``location``), and any other ``.eml`` in the folders the transport writes to that
    mentions the contact, are removed after the commit. Other contacts' rows that mention the
    contact (an address or a name in a subject) are pseudonymised.
    """
    removed: dict[str, int] = {}
    for (location,) in db.execute(
        "SELECT location FROM email_messages WHERE contact_id = ? AND location IS NOT NULL",
        [contact_id],
    ).fetchall():
        if location.endswith(".eml"):
            erasure.remove_file(location)
    for path in _eml_files(db):
        if erasure.mentions(_readable(path)):
            erasure.remove_file(path)
    for table, column in TABLES:
        if table == "email_suppressions":
            removed[table] = _forget_suppressions(db, contact_id, erasure)
        else:
            removed[table] = db.execute(
                f"DELETE FROM {table} WHERE {column} = ?", [contact_id]
            ).rowcount
        erasure.rewrite_table(db, table)  # other contacts' rows that mention the contact
    return removed


def _forget_suppressions(db: Database, contact_id: str, erasure: Erasure) -> int:
    addresses = [address.lower() for address in erasure.emails]
    marks = ", ".join("?" * len(addresses)) or "NULL"
    legacy = [hashed(address) for address in addresses]
    rows = db.execute(
        "SELECT address, reason, at FROM email_suppressions WHERE contact_id = ? "
        f"OR lower(address) IN ({marks}) OR address IN ({marks})",
        [contact_id, *addresses, *legacy],
    ).fetchall()
    for address, reason, at in rows:
        db.execute("DELETE FROM email_suppressions WHERE address = ?", [address])
        if address.startswith(("hmac:", "sha256:")) and address not in legacy:
            key = address  # already a hash: only unlinked
        else:
            plain = next((a for a in addresses if hashed(a) == address), address)
            key = erasure.keyed_hash(plain)
        db.execute(
            "INSERT INTO email_suppressions (address, contact_id, reason, at) "
            "VALUES (?, NULL, ?, ?) ON CONFLICT (address) DO NOTHING",
            [key, reason, at],
        )
    return len(rows)


def _eml_files(db: Database) -> list[Path]:
    """Every ``.eml`` in the folders the file transport writes to: the configured one and
    those the message log names."""
    folders = {Path(resolve_settings().outbox_dir)}
    for (location,) in db.execute(
        "SELECT DISTINCT location FROM email_messages WHERE location LIKE '%.eml'"
    ).fetchall():
        folders.add(Path(location).parent)
    found: list[Path] = []
    for folder in sorted(folders):
        if folder.is_dir():
            found += sorted(folder.glob("*.eml"))
    return found


def _readable(path: Path) -> str:
    """A message file as its raw text and its decoded headers and text parts (an address or a
    name may be encoded in a header or a quoted-printable body)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return ""
    parts = [raw.decode("utf-8", "replace")]
    message = BytesParser(policy=email_policy.default).parsebytes(raw)
    parts += [str(value) for value in message.values()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            try:
                parts.append(str(part.get_content()))
            except (LookupError, ValueError):
                continue
    return "\n".join(parts)
