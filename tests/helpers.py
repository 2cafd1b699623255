"""Small helpers for writing events in tests."""

from __future__ import annotations


def event(contact_id: str, type_: str, when: str, **properties) -> dict:
    """An event in the fixed JSON shape, with ``when`` as 'YYYY-MM-DD' or a full timestamp."""
    occurred_at = when if "T" in when else f"{when}T10:00:00Z"
    return {
        "contact_id": contact_id,
        "type": type_,
        "occurred_at": occurred_at,
        "properties": properties,
    }
