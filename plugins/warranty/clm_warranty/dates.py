"""Dates of products: parsing what events say, calendar months, and the stored text form.

Warranties and useful lives are counted in calendar months ("24 months from purchase"), which
a ``timedelta`` cannot express, so the plugin adds months itself: the same day of the month,
clamped to the month's last day (a warranty bought on 31 January for one month ends on 28 or
29 February). Every stored date is fixed-width UTC text, whose text order is its time order,
so SQL can compare and index it.
"""

from __future__ import annotations

from calendar import monthrange
from datetime import UTC, date, datetime, timedelta
from typing import Any

_DAY = timedelta(days=1)


def parse_moment(value: Any, what: str = "date") -> datetime:
    """An aware UTC datetime from ISO 8601 text (a date alone is midnight UTC).

    Raises ``ValueError`` with a message for an ops person: event handlers let it through, and
    the engine records it as the event's failure.
    """
    problem = f"{what} must be an ISO 8601 date or time, like '2026-11-02' (got {value!r})"
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(problem) from None
    else:
        raise ValueError(problem)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def optional_moment(value: Any) -> datetime | None:
    """The datetime of stored text, or ``None`` for a missing or unreadable value."""
    if value is None:
        return None
    try:
        return parse_moment(value)
    except ValueError:
        return None


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` plus calendar months: same day of month, clamped to the month's last day."""
    year, month = divmod(moment.month - 1 + months, 12)
    year += moment.year
    day = min(moment.day, monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def utc_text(moment: datetime) -> str:
    """Fixed-width UTC text (``2026-11-02T10:15:00.000000Z``): text order is time order.

    The same form as the core's own columns, so the plugin's dates compare with them.
    """
    moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def whole_days(start: datetime, end: datetime) -> int:
    """Whole days from ``start`` to ``end``, rounded down (negative when ``end`` is earlier)."""
    return (end - start) // _DAY
