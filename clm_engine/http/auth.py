"""Who may call ``clm serve``: API keys with scopes, and signed webhooks.

**API keys.** A token is ``clm_<id>_<secret>``: ``id`` (12 hex digits) finds the key, and
``secret`` is 32 random bytes (``secrets.token_urlsafe``). The store keeps only the SHA-256 of
the whole token: a slow password hash buys nothing for 256 random bits, and a fast one keeps
every request cheap. The comparison is constant-time (``hmac.compare_digest``), and a wrong id
costs the same comparison as a wrong secret. Scopes: ``ingest`` (send events), ``read``
(contacts, explain, outbox, metrics) and ``admin`` (everything, and reloading rulesets).

**Signed webhooks** (ingest only). A sender that holds a shared secret may sign instead:
``X-Clm-Timestamp: <unix seconds>`` and ``X-Clm-Signature: v1=<hex HMAC-SHA256 of
"<timestamp>." + body>``. A timestamp outside the replay window (5 minutes either side) is
refused; within it, a replayed body is harmless, since every event id is an idempotency key.
Several secrets may be valid at once (rotation).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Any

SCOPES = ("ingest", "read", "admin")
TOKEN_PREFIX = "clm"
TIMESTAMP_HEADER = "x-clm-timestamp"
SIGNATURE_HEADER = "x-clm-signature"
SIGNATURE_VERSION = "v1"

#: Hashed against when the key id is unknown, so that an unknown id takes as long as a known one.
_NO_KEY_HASH = hashlib.sha256(b"no such key").hexdigest()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> tuple[str, str]:
    """A new key's id and its whole token (shown once, never stored)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{TOKEN_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def allows(scope: str, needed: str) -> bool:
    """``admin`` may do everything; the other scopes only what they name."""
    return scope == "admin" or scope == needed


def key_scope(store: Any, token: str) -> tuple[str, str] | None:
    """``(key id, scope)`` of a valid, unrevoked token; None for anything else."""
    parts = token.split("_", 2)
    key_id = parts[1] if len(parts) == 3 and parts[0] == TOKEN_PREFIX else ""
    row = store.api_key(key_id) if key_id and len(key_id) <= 32 else None
    expected = row["token_hash"] if row is not None else _NO_KEY_HASH
    matches = hmac.compare_digest(hash_token(token), expected)
    if row is None or not matches or row["revoked_at"] is not None:
        return None
    return row["id"], row["scope"]


def token_from_headers(authorization: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` or of HTTP Basic auth with the token as
    the user name and an empty password (Segment's write-key authentication)."""
    if not authorization:
        return None
    kind, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if kind.lower() == "bearer" and value:
        return value
    if kind.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return None


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Clm-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signature_valid(
    secrets_: Sequence[bytes],
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: float,
    window: float,
) -> bool:
    """Whether ``signature`` signs ``body`` at ``timestamp`` with one of ``secrets_``, and the
    timestamp is within ``window`` seconds of ``now``."""
    if not secrets_ or not timestamp or not signature:
        return False
    try:
        moment = int(timestamp.strip())
    except ValueError:
        return False
    if abs(now - moment) > window:
        return False
    offered = [part.strip() for part in signature.split(",")]  # v1=..., v1=... (rotation)
    valid = False
    for secret in secrets_:
        expected = sign(secret, moment, body)
        for candidate in offered:
            valid |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
    return valid
