"""Errors a user may see. Each carries a message fit to print as one line, without a traceback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime


class ClmError(Exception):
    """Base of every error clm-engine raises on purpose."""


class EventError(ClmError):
    """An event that does not have the fixed event shape (missing field, bad timestamp, ...)."""


class ReducerError(ClmError):
    """A reducer raised while applying an event; the event and its effects were not stored."""


class RulesetError(ClmError):
    """A ruleset that failed validation."""


class PluginError(ClmError):
    """A plugin could not be loaded, or two plugins claim the same name."""


class ActionError(ClmError):
    """An action failed or was called with bad parameters."""


class StoreError(ClmError):
    """The store cannot be opened or used (not a database, locked for too long, ...)."""


#: The longest wait a ``Retry-After`` may ask for: a server that says "in a year" (or a hostile
#: one) does not park an action past what an operator would notice; the retry then comes
#: after a day, and counts as an attempt like any other.
MAX_RETRY_AFTER = timedelta(days=1)


class RetryLater(ActionError):
    """An action that could not run now and was told when to try again (an HTTP 429 or 503
    with ``Retry-After``): the dispatcher retries it ``after`` that long (at most
    :data:`MAX_RETRY_AFTER`) or after its usual backoff, whichever is later. It counts as an
    attempt, so ``max_attempts`` still ends a retry that never succeeds. Raise it from an
    action; :meth:`from_header` reads the header."""

    def __init__(self, message: str, *, after: timedelta | None = None) -> None:
        super().__init__(message)
        self.after = after

    @classmethod
    def from_header(cls, message: str, retry_after: str | None, now: datetime) -> RetryLater:
        """``retry_after`` as HTTP sends it (RFC 9110, 10.2.3): a number of seconds, or an
        HTTP date, which is read against ``now`` (the action's ``ctx.now``). A value that is
        neither means no particular time (the usual backoff)."""
        when = retry_after_time(retry_after, now)
        return cls(message, after=None if when is None else when - now)


def retry_after_time(value: str | None, now: datetime) -> datetime | None:
    """When a ``Retry-After`` header value says to come back; ``None`` if it says nothing
    usable. A date in the past means now."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        seconds = int(text) if len(text) <= 12 else 10**12  # int() refuses 4,300+ digits
        return now + min(timedelta(seconds=seconds), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; "-0000" parses as naive
        when = when.replace(tzinfo=UTC)
    return min(max(when, now), now + MAX_RETRY_AFTER)
