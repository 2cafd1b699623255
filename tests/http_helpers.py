"""Shared by the HTTP service's tests: an app on a fresh database, and keys of each scope."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from clm_engine.http import create_app
from clm_engine.http.auth import hash_token, new_token
from clm_engine.store import open_store


def make_key(db: Path | str, scope: str, name: str = "") -> str:
    """A new key of ``scope`` in ``db`` (a SQLite file, which must exist, or a PostgreSQL
    URL), as ``clm keys create`` makes it."""
    key_id, token = new_token()
    store = open_store(str(db))
    try:
        store.create_api_key(
            key_id, name=name, scope=scope, token_hash=hash_token(token), created_at="2026-01-01"
        )
    finally:
        store.close()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def served(db: Path, rulesets: list[Any] | None = None, **options: Any) -> Iterator[TestClient]:
    """The app over ``db``, started (its lifespan), with ``client.keys[scope]`` for each
    scope."""
    app = create_app(db, rulesets or [], **options)
    with TestClient(app) as client:
        client.keys = {scope: make_key(db, scope) for scope in ("ingest", "read", "admin")}  # type: ignore[attr-defined]  # a test-only attribute on the client
        yield client
