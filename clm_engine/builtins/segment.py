"""The built-in mapping of Segment's HTTP tracking spec to clm-engine events (``clm serve``).

A plugin that implements ``map_segment_message`` runs first and may take any message; this
one (``trylast``) maps what is left. The mapping is documented in ``docs/http.md``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from ..hooks import hookimpl

#: Segment's semantic events (its e-commerce, lifecycle and email specs) that mean a built-in
#: event type of the engine, by lower-cased name.
SEMANTIC_EVENTS = {
    "order completed": "purchase",
    "signed up": "signup",
    "email opened": "email.opened",
    "email link clicked": "email.clicked",
}

#: Where Segment's e-commerce spec puts an order's value, in the order they are tried.
AMOUNT_FIELDS = ("revenue", "total", "value")

#: What each message type becomes when it is not a ``track``.
TYPES = {"identify": "contact.updated", "page": "page.viewed", "screen": "screen.viewed"}

ANONYMOUS_PREFIX = "anonymous:"


def event_type_for(name: str) -> str:
    """A track message's ``event`` as an engine event type: a semantic event's built-in type,
    else the name lower-cased, each run of other characters an ``_`` (``"Song Played"`` ->
    ``song_played``)."""
    known = SEMANTIC_EVENTS.get(name.strip().lower())
    if known is not None:
        return known
    slug = re.sub(r"[^a-z0-9_.:-]+", "_", name.strip().lower()).strip("_")
    if not slug:
        raise ValueError(f"the event name {name!r} has no letter or digit to make a type of")
    if not slug[0].isalpha() or not slug.isascii():
        slug = f"event_{slug}"
    return slug[:100]


def _time(message: dict[str, Any], field: str) -> datetime | None:
    value = message.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"'{field}' must be an ISO 8601 date-time string, not {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{field}' is not an ISO 8601 date-time: {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def occurred_at(message: dict[str, Any], received_at: datetime) -> datetime:
    """``timestamp``; else ``originalTimestamp`` corrected for the sender's clock as Segment
    does (``received_at - (sentAt - originalTimestamp)``), or as given without ``sentAt``;
    else when the server received it."""
    timestamp = _time(message, "timestamp")
    if timestamp is not None:
        return timestamp
    original = _time(message, "originalTimestamp")
    if original is None:
        return received_at
    sent = _time(message, "sentAt")
    return received_at - (sent - original) if sent is not None else original


def contact_id_of(message: dict[str, Any]) -> str:
    """``userId``, else ``anonymous:`` + ``anonymousId`` (so the two never collide)."""
    for field, prefix in (("userId", ""), ("anonymousId", ANONYMOUS_PREFIX)):
        value = message.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            return prefix + value
        if value not in (None, ""):
            raise ValueError(f"'{field}' must be a string, not {value!r}")
    raise ValueError("a message needs a userId or an anonymousId")


def _object(message: dict[str, Any], field: str) -> dict[str, Any]:
    value = message.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"'{field}' must be an object, not {type(value).__name__}")
    return dict(value)


@hookimpl(trylast=True)
def map_segment_message(message: dict[str, Any], received_at: datetime) -> Any:
    kind = message.get("type")
    if kind == "alias":
        raise ValueError(
            "alias is refused: clm-engine does not merge contacts; send events under the "
            "final userId, or map alias with a plugin (map_segment_message)"
        )
    if kind not in ("track", "identify", "page", "screen", "group"):
        raise ValueError(
            f"unknown message type {kind!r}: expected track, identify, page, screen or group"
        )
    event: dict[str, Any] = {
        "contact_id": contact_id_of(message),
        "occurred_at": occurred_at(message, received_at).isoformat(),
    }
    message_id = message.get("messageId")
    if message_id is not None:
        if not isinstance(message_id, str):
            raise ValueError(f"'messageId' must be a string, not {message_id!r}")
        event["id"] = message_id
    if kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a track message needs an event name ('event')")
        event["type"] = event_type_for(name)
        properties = _object(message, "properties")
        if event["type"] == "purchase" and "amount" not in properties:
            for field in AMOUNT_FIELDS:
                if field in properties:
                    properties["amount"] = properties[field]
                    break
        event["properties"] = properties
    elif kind == "identify":
        event["type"] = TYPES[kind]
        event["properties"] = _object(message, "traits")
    elif kind in ("page", "screen"):
        event["type"] = TYPES[kind]
        properties = _object(message, "properties")
        for field in ("name", "category"):
            if isinstance(message.get(field), str):
                properties.setdefault(field, message[field])
        event["properties"] = properties
    else:  # group
        group_id = message.get("groupId")
        if isinstance(group_id, int) and not isinstance(group_id, bool):
            group_id = str(group_id)
        if not isinstance(group_id, str) or not group_id:
            raise ValueError("a group message needs a 'groupId'")
        event["type"] = "group.joined"
        event["properties"] = {"group_id": group_id, "traits": _object(message, "traits")}
    return event
