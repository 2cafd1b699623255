"""The cross-channel message log: every channel's delivered messages, for ``clm_engine.channels``.

A ``<channel>.sent`` event (``email.sent``, ``sms.sent``, ``webhook.sent``) is recorded once,
keyed by the event's id, in the transaction that stores the event: the log is exactly as
durable as the events, and a replayed event is not counted twice. ``clm_engine.channels.decide``
counts these rows for cross-channel frequency caps. A contact's rows are erased with the
core's own tables, on every store (``store.tables.CORE_TABLES_BY_CONTACT``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ..channels import MESSAGE_CHANNELS, TABLE_NAME, category_of
from ..hooks import hookimpl
from ..models import Contact, Event, utc_text
from ..store import Column, Index, Table, Tables

MESSAGES = Table(
    TABLE_NAME,
    columns=(
        Column("event_id", "text"),  # the <channel>.sent event: one row per delivered message
        Column("contact_id", "text", nullable=False),
        Column("channel", "text", nullable=False),
        Column("category", "text", nullable=False),
        Column("sent_at", "timestamp", nullable=False),
    ),
    primary_key=("event_id",),
    indexes=(Index(("contact_id", "sent_at"), name="channel_messages_by_sent"),),
    description="Messages delivered on any channel, for cross-channel frequency caps",
)

_SUFFIX = ".sent"


def record_sent(tables: Tables, contact: Contact, event: Event) -> None:
    """``<channel>.sent``: the message goes in the log."""
    channel = event.type[: -len(_SUFFIX)]
    sent_at = event.properties.get("sent_at")
    when = event.occurred_at
    if isinstance(sent_at, str) and sent_at:
        try:
            when = datetime.fromisoformat(sent_at.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"a {event.type} event's 'sent_at' must be an ISO 8601 time (got {sent_at!r})"
            ) from None
        if when.tzinfo is None:
            raise ValueError(f"a {event.type} event's 'sent_at' needs a UTC offset ({sent_at!r})")
    tables[TABLE_NAME].insert(
        {
            "event_id": event.id,
            "contact_id": contact.id,
            "channel": channel,
            "category": category_of(channel, event.properties),
            "sent_at": utc_text(when),
        },
        on_conflict="ignore",
    )


@hookimpl
def register_tables(register: Callable[..., None]) -> None:
    register(MESSAGES)


@hookimpl
def register_event_handlers(register: Callable[..., None]) -> None:
    # By exact type, not "*": an event no handler takes folds without a savepoint (a round
    # trip to the server per contact on PostgreSQL).
    for channel in MESSAGE_CHANNELS:
        register(f"{channel}{_SUFFIX}", record_sent, name=f"channels.log_{channel}_sent")
