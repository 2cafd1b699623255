"""Small helpers for tests: events in the fixed JSON shape, and where a test's store is."""

from __future__ import annotations

from pathlib import Path


def event(contact_id: str, type_: str, when: str, **properties) -> dict:
    """An event in the fixed JSON shape, with ``when`` as 'YYYY-MM-DD' or a full timestamp."""
    occurred_at = when if "T" in when else f"{when}T10:00:00Z"
    return {
        "contact_id": contact_id,
        "type": type_,
        "occurred_at": occurred_at,
        "properties": properties,
    }


#: Where a test's helpers put its store: a SQLite file in its folder, or on the ``on_store``
#: fixture's "postgres" run (tests/conftest.py), the test's PostgreSQL database.
STORE: dict[str, str] = {}


def store_in(tmp_path: Path) -> str | Path:
    """The store the test runs on (the same one when reopened)."""
    return STORE.get("url", tmp_path / "clm.db")
