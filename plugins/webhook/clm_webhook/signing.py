"""Signing: how a receiver knows a post came from this engine, unaltered and recently.

Every post carries two headers::

    X-CLM-Timestamp: 1767225600
    X-CLM-Signature: v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

``v1`` is the lower-case hex HMAC-SHA256, keyed with the endpoint's secret, of the timestamp
(decimal Unix seconds, as sent), a full stop, and the raw request body bytes exactly as
received: ``HMAC(secret, b"1767225600." + body)``. A receiver

1. reads the raw body before parsing it (re-serialised JSON would not match),
2. recomputes the HMAC and compares it in constant time with each ``v1=`` value of the
   header (several, comma-separated, while a secret is being rotated),
3. refuses a timestamp more than 5 minutes from its own clock (a replayed old request), and
4. deduplicates on the ``Idempotency-Key`` header: a retry after a timeout carries the same
   key (the outbox key of the action) and the same body.

:func:`verify` does all of it; receivers in other languages follow the four steps.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

SCHEME = "v1"
#: How far a timestamp may be from the receiver's clock, in seconds.
TOLERANCE = 300


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-CLM-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={digest.hexdigest()}"


def verify(
    secrets: Iterable[bytes],
    *,
    timestamp: str,
    header: str,
    body: bytes,
    now: float,
    tolerance: int = TOLERANCE,
) -> bool:
    """Whether a received post is authentic: a ``v1`` signature made with one of ``secrets``
    over ``timestamp`` and ``body``, and ``timestamp`` within ``tolerance`` seconds of ``now``."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    given = [p.strip()[len(SCHEME) + 1 :] for p in header.split(",") if p.strip().startswith("v1=")]
    for secret in secrets:
        expected = signature(secret, int(timestamp), body)[len(SCHEME) + 1 :]
        if any(hmac.compare_digest(expected, value) for value in given):
            return True
    return False
