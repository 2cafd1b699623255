"""The plugin's tables, declared for any store, and the event handlers that keep them.

Tables are written only from events (``email.sent``, ``email.failed``, ``email.bounced``,
``unsubscribed`` ...) in the transaction that stores the event, and from the sequence actions
in the dispatch transaction: so the log, the suppressions and the enrollments are exactly as
durable as the events and actions they come from. Stores made by the plugin's former
``sqlite_utils`` migrations (``clm_email`` m001, m002) have these columns and indexes already.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from clm_engine import Column, Contact, Erasure, Event, Index, Table, Tables, utc_text
from clm_engine.consent import subscribed_channel, unsubscribed_channels

from .settings import resolve_settings

MESSAGES = Table(
    "email_messages",
    columns=(
        Column("id", "integer", auto_increment=True),
        Column("contact_id", "text", nullable=False),
        Column("idempotency_key", "text"),  # one message per (rule, contact, occasion)
        Column("template", "text"),
        Column("category", "text"),  # transactional / marketing: decides consent checks
        Column("to_address", "text"),
        Column("subject", "text"),
        Column("status", "text"),  # sent / failed / bounced
        Column("error", "text"),
        Column("created_at", "timestamp"),
        Column("sent_at", "timestamp"),
        Column("message_id", "text"),
        Column("sequence", "text"),
        Column("step", "text"),
        Column("location", "text"),  # where the transport put it (an .eml file)
    ),
    primary_key=("id",),
    unique=(("idempotency_key",),),
    indexes=(
        Index(("contact_id",), name="email_messages_by_contact"),
        Index(("contact_id", "sent_at"), name="email_messages_by_sent"),  # frequency caps
    ),
    description="Every message sent, failed or bounced",
)

SUPPRESSIONS = Table(
    "email_suppressions",
    columns=(
        Column("address", "text"),  # never email this address again (a keyed hash once erased)
        Column("contact_id", "text"),
        Column("reason", "text"),  # hard_bounce / complaint / unsubscribed / manual
        Column("at", "timestamp"),
    ),
    primary_key=("address",),
    indexes=(Index(("contact_id",), name="email_suppressions_by_contact"),),
    description="Addresses that get no email (or no marketing email)",
)

ENROLLMENTS = Table(
    "email_enrollments",
    columns=(
        Column("id", "text"),  # derived from the start action's outbox key
        Column("contact_id", "text", nullable=False),
        Column("sequence", "text", nullable=False),
        Column("status", "text", nullable=False),  # active / completed / exited / stopped
        Column("step", "text"),  # the last step taken
        Column("enrolled_at", "timestamp", nullable=False),
        Column("last_step_at", "timestamp"),
        Column("ended_at", "timestamp"),
        Column("exit_reason", "text"),
        Column("exit_events", "json", nullable=False),  # these event types end it
        Column("exit_stages", "json", nullable=False),  # reaching one of these stages ends it
    ),
    primary_key=("id",),
    indexes=(Index(("contact_id", "status"), name="email_enrollments_by_contact"),),
    description="Contacts in drip sequences, and how each enrollment ended",
)

TABLES = (MESSAGES, SUPPRESSIONS, ENROLLMENTS)

#: The tables this plugin owns, and the column that names the contact in each (erasure).
CONTACT_COLUMNS = (
    ("email_messages", "contact_id"),
    ("email_suppressions", "contact_id"),
    ("email_enrollments", "contact_id"),
)


def _log(
    tables: Tables, contact: Contact, event: Event, status: str, error: str | None = None
) -> None:
    """Log the message of ``event`` (one row per idempotency key): a second event about it
    updates its status, keeps the first error, send time and location it had."""
    props = event.properties
    at = event.occurred_at_text
    messages = tables["email_messages"]
    key = props.get("key") or event.id
    sent_at = (props.get("sent_at") or at) if status == "sent" else None
    current = messages.one(
        {"idempotency_key": key}, columns=["error", "sent_at", "location"], for_update=True
    )
    if current is not None:
        messages.update(
            {"idempotency_key": key},
            {
                "status": status,
                "error": error if error is not None else current["error"],
                "sent_at": current["sent_at"] if current["sent_at"] is not None else sent_at,
                "location": props.get("location") or current["location"],
            },
        )
        return
    messages.insert(
        {
            "contact_id": contact.id,
            "idempotency_key": key,
            "template": props.get("template"),
            "category": props.get("category"),
            "to_address": props.get("to") or props.get("address") or contact.email,
            "subject": props.get("subject"),
            "status": status,
            "error": error,
            "created_at": at,
            "sent_at": sent_at,
            "message_id": props.get("message_id"),
            "sequence": props.get("sequence"),
            "step": props.get("step"),
            "location": props.get("location"),
        }
    )


def on_sent(tables: Tables, contact: Contact, event: Event) -> None:
    """``email.sent`` (emitted by ``email.send``): the message is logged as sent."""
    if not event.properties.get("message_id"):
        raise ValueError("an email.sent event needs a 'message_id' property")
    _log(tables, contact, event, "sent")


def on_failed(tables: Tables, contact: Contact, event: Event) -> None:
    """``email.failed``: a message that could not be built (a template that did not render)."""
    _log(tables, contact, event, "failed", str(event.properties.get("reason") or "unknown"))


def suppress(tables: Tables, address: str, contact_id: str, reason: str, at: str) -> None:
    """Never email ``address`` again (for ``reason``); a hard reason replaces a soft one."""
    suppressions = tables["email_suppressions"]
    where = {"address": address.lower()}
    current = suppressions.one(where, columns=["reason"], for_update=True)
    if current is None:
        suppressions.insert({**where, "contact_id": contact_id, "reason": reason, "at": at})
    elif current["reason"] == "unsubscribed" and reason != "unsubscribed":
        suppressions.update(where, {"reason": reason, "at": at})


def on_bounced(tables: Tables, contact: Contact, event: Event) -> None:
    """``email.bounced``: the message (if we sent it) is logged bounced; a hard bounce
    suppresses the address at once, so messages already queued for it are vetoed."""
    props = event.properties
    if props.get("key") or props.get("message_id"):
        reason = props.get("reason") or f"{props.get('type')} bounce"
        if props.get("key"):
            _log(tables, contact, event, "bounced", reason)
        else:
            tables["email_messages"].update(
                {"message_id": props["message_id"]}, {"status": "bounced", "error": reason}
            )
    address = props.get("address") or contact.email
    if props.get("type") == "hard" and address:
        suppress(tables, address, contact.id, "hard_bounce", event.occurred_at_text)


def on_unsubscribed(tables: Tables, contact: Contact, event: Event) -> None:
    """``unsubscribed`` from email: the address is suppressed for everything not exempt, and
    the contact leaves every drip sequence.

    The channel is read as the core's reducer reads it (``clm_engine.consent``): ``"EMAIL"``
    is email, and an unsubscribe that names no channel withdraws every one, email included.
    """
    if "email" not in unsubscribed_channels(event.properties):
        return
    at = event.occurred_at_text
    if contact.email:
        suppress(tables, contact.email, contact.id, "unsubscribed", at)
    tables["email_enrollments"].update(
        {"contact_id": contact.id, "status": "active", "enrolled_at": ("<=", at)},
        {"status": "exited", "ended_at": at, "exit_reason": "unsubscribed"},
    )


def on_subscribed(tables: Tables, contact: Contact, event: Event) -> None:
    """``subscribed`` to email: an unsubscription is lifted (a hard bounce is not)."""
    if contact.email and subscribed_channel(event.properties) == "email":
        tables["email_suppressions"].delete(
            {"address": ("in", suppression_keys(tables, contact.email)), "reason": "unsubscribed"}
        )


def on_any_event(tables: Tables, contact: Contact, event: Event) -> None:
    """Every event: a contact whose event or stage is an exit of a sequence leaves it now.

    One indexed read of the contact's active enrollments (none for most contacts)."""
    at = event.occurred_at_text
    enrollments = tables["email_enrollments"]
    active = enrollments.rows(
        {"contact_id": contact.id, "status": "active", "enrolled_at": ("<=", at)},
        columns=["id", "exit_events", "exit_stages"],
    )
    stage = contact.stage or ""
    for row in active:
        if event.type in row["exit_events"]:
            reason = f"event {event.type}"
        elif stage in row["exit_stages"]:
            reason = f"reached stage {stage}"
        else:
            continue
        enrollments.update(
            {"id": row["id"], "status": "active"},
            {"status": "exited", "ended_at": at, "exit_reason": reason},
        )


def enroll(
    tables: Tables,
    *,
    enrollment: str,
    contact_id: str,
    sequence: str,
    at: str,
    exit_events: list[str],
    exit_stages: list[str],
) -> bool:
    """Record an enrollment; False if it was already there (a re-run of the same action)."""
    return bool(
        tables["email_enrollments"].insert(
            {
                "id": enrollment,
                "contact_id": contact_id,
                "sequence": sequence,
                "status": "active",
                "enrolled_at": at,
                "exit_events": list(exit_events),
                "exit_stages": list(exit_stages),
            },
            on_conflict="ignore",
        )
    )


def end_enrollment(tables: Tables, enrollment: str, status: str, reason: str, at: datetime) -> None:
    tables["email_enrollments"].update(
        {"id": enrollment, "status": "active"},
        {"status": status, "exit_reason": reason, "ended_at": utc_text(at)},
    )


def enrollment(tables: Tables, enrollment_id: str) -> dict[str, Any] | None:
    """An enrollment's ``status``, ``sequence`` and ``exit_reason``, or ``None``."""
    return tables["email_enrollments"].one(
        {"id": enrollment_id}, columns=["status", "sequence", "exit_reason"]
    )


def hashed(address: str) -> str:
    """The unkeyed hash older versions kept of an erased contact's suppressed address (still
    honoured when found; an erasure now keeps a keyed hash, ``tables.erasure_hash``)."""
    return "sha256:" + hashlib.sha256(address.strip().lower().encode()).hexdigest()


def suppression_keys(tables: Tables, address: str) -> list[str]:
    """What a suppression of ``address`` may be kept under: the address (lower case), the
    keyed hash an erasure keeps (``tables.erasure_hash``) and the unkeyed one of older
    versions."""
    keys = [address.lower(), hashed(address), tables.erasure_hash(address)]
    return list(dict.fromkeys(key for key in keys if key))


def is_suppressed(tables: Tables, address: str) -> tuple[str, str] | None:
    """``(reason, since)`` if ``address`` (or its hash, kept after an erasure) is suppressed;
    a hard reason before an unsubscription."""
    rows = tables["email_suppressions"].rows(
        {"address": ("in", suppression_keys(tables, address))}, columns=["reason", "at"]
    )
    rows.sort(key=lambda row: row["reason"] == "unsubscribed")
    return (rows[0]["reason"], rows[0]["at"]) if rows else None


def forget(tables: Tables, contact_id: str, erasure: Erasure) -> dict[str, int]:
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
    for row in tables["email_messages"].rows(
        {"contact_id": contact_id, "location": ("!=", None)}, columns=["location"]
    ):
        if row["location"].endswith(".eml"):
            erasure.remove_file(row["location"])
    for path in _eml_files(tables):
        if erasure.mentions(_readable(path)):
            erasure.remove_file(path)
    for table, column in CONTACT_COLUMNS:
        if table == "email_suppressions":
            removed[table] = _forget_suppressions(tables, contact_id, erasure)
        else:
            removed[table] = tables[table].delete({column: contact_id})
        tables[table].pseudonymise(erasure)  # other contacts' rows that mention the contact
    return removed


def _forget_suppressions(tables: Tables, contact_id: str, erasure: Erasure) -> int:
    suppressions = tables["email_suppressions"]
    addresses = [address.lower() for address in erasure.emails]
    legacy = [hashed(address) for address in addresses]
    columns = ["address", "reason", "at"]
    found = {
        row["address"]: row
        for row in suppressions.rows({"contact_id": contact_id}, columns=columns)
    }
    if addresses:
        for row in suppressions.rows({"address": ("in", [*addresses, *legacy])}, columns=columns):
            found[row["address"]] = row
    for address, row in found.items():
        suppressions.delete({"address": address})
        if address.startswith(("hmac:", "sha256:")) and address not in legacy:
            key = address  # already a hash: only unlinked
        else:
            plain = next((a for a in addresses if hashed(a) == address), address)
            key = erasure.keyed_hash(plain)
        suppressions.insert(
            {"address": key, "contact_id": None, "reason": row["reason"], "at": row["at"]},
            on_conflict="ignore",
        )
    return len(found)


def _eml_files(tables: Tables) -> list[Path]:
    """Every ``.eml`` in the folders the file transport writes to: the configured one and
    those the message log names."""
    folders = {Path(resolve_settings().outbox_dir)}
    for row in tables["email_messages"].aggregate(
        {"location": ("!=", None)}, group_by=["location"]
    ):
        if row["location"].endswith(".eml"):
            folders.add(Path(row["location"]).parent)
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
