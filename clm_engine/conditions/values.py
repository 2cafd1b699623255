"""The values conditions work with: dates, durations, strict equality, and trace rendering.

Kept free of any import from ``clm_engine.builtins`` so that the built-in operators and facts
can use these helpers without an import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..models import TOO_LONG, Duration, DurationSpec, duration_to_timedelta, fixed_days
from ..types import MISSING, FactContext

#: Exact types that count as numbers. ``bool`` is deliberately absent: ``true`` is not ``1``.
NUMBER_TYPES: frozenset[type] = frozenset({int, float})

# The ISO 8601 shapes a ruleset or a fact may use for a date: "2026-11-02",
# "2026-11-02T10:15", "2026-11-02T10:15:00Z", "2026-11-02T10:15:00.123+02:00".
# Gated by this pattern so that fromisoformat()'s more exotic forms ("20261102") are not dates;
# ASCII digits only (``\d`` alone also matches other scripts' digits).
_ISO_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)


@dataclass(frozen=True)
class ContextValue:
    """A prepared value known only at evaluation time, such as "now minus 30 days".

    An operator's ``prepare()`` may return one when its value depends on the context (the
    clock, the ruleset's stages). The evaluator calls ``resolve(ctx)`` once per evaluation and
    hands the result to ``test()``; a ``MISSING`` result makes the leaf false.
    """

    resolve: Callable[[FactContext], Any]
    label: str = ""


def is_number(value: Any) -> bool:
    """An int or a float, never a bool."""
    return type(value) in NUMBER_TYPES


def strict_eq(fact: object, value: object) -> bool:
    """JSON equality: numbers equal numbers (1 == 1.0), but ``true`` never equals ``1``."""
    kind = type(value)
    if kind is str:
        return fact == value
    if value is None or kind is bool:
        return fact is value
    if kind in NUMBER_TYPES:
        return type(fact) in NUMBER_TYPES and fact == value
    return type(fact) is kind and fact == value


@lru_cache(maxsize=16384)
def parse_datetime(text: str) -> datetime | None:
    """An aware datetime from ISO 8601 text, or None when the text is not a date.

    Date-only text is midnight UTC; text without an offset is taken as UTC. Cached, because
    the same metric timestamps are read by many rules.
    """
    if len(text) > 40 or not _ISO_DATE.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _aware(moment)


def _aware(moment: datetime) -> datetime | None:
    """``moment`` with UTC if it is naive; None if it has no UTC time at all.

    ``0001-01-01T00:00:00+14:00`` is a valid datetime whose UTC time is before year 1:
    converting it (to store a fire time, to compare across zones in C) raises OverflowError,
    so it is not a date. Only the first and the last day of the range can be so.
    """
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    if moment.year in (1, 9999) and moment.utcoffset():
        try:
            moment.astimezone(UTC)
        except OverflowError:
            return None
    return moment


def to_datetime(value: Any) -> datetime | None:
    """The aware datetime a fact value stands for, or None when it is not a date.

    Every datetime Python holds is a date here, far ones included (``9999-12-31`` often means
    "never", and ``after now`` should hold for it); a number (NaN, 1e308), text that is not
    ISO 8601 (control characters, other scripts' digits, 10,000 characters) is not. What a
    date is used *for* may be bounded further: a relative rule's fire time must be a supported
    time (``clm_engine.timed``). Never raises.
    """
    kind = type(value)
    if kind is str:
        return parse_datetime(value)
    if kind is datetime or isinstance(value, datetime):
        moment: datetime = value
        if moment.tzinfo is not None and 1 < moment.year < 9999:
            return moment  # the common case, without a call
        return _aware(moment)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


_DURATION = TypeAdapter(DurationSpec)
_DURATION_HINT = "a duration like 'P30D', 'PT12H' or {\"days\": 30}"


def _not_a_duration(value: Any, error: ValidationError) -> ValueError:
    """The message for a ruleset duration that failed: too long, or no duration at all."""
    if any(item["type"] == "duration_too_long" for item in error.errors()):
        return ValueError(f"{describe(value)} {TOO_LONG}")
    fixed = fixed_days(value) if isinstance(value, str) else None
    if fixed is not None:  # "P1M": months and years vary in length
        return ValueError(
            f"{describe(value)} is not {_DURATION_HINT}: months and years vary in length, "
            f"write 'P{fixed}D'"
        )
    return ValueError(f"{describe(value)} is not {_DURATION_HINT}")


@lru_cache(maxsize=1024)
def _parse_duration_text(text: str) -> timedelta:
    try:
        return duration_to_timedelta(_DURATION.validate_python(text))
    except ValidationError as error:
        raise _not_a_duration(text, error) from None


def parse_duration(value: Any) -> timedelta:
    """The timedelta of a ruleset duration: ISO 8601 text, ``{"days": 30}`` or a Duration."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return _parse_duration_text(value)
    if isinstance(value, Duration):
        return duration_to_timedelta(value)
    if isinstance(value, dict):
        try:
            return duration_to_timedelta(Duration.model_validate(value))
        except ValidationError as error:
            raise _not_a_duration(value, error) from None
    raise ValueError(f"needs {_DURATION_HINT} (got {describe(value)})")


def describe(value: Any) -> str:
    """A ruleset value the way an ops person wrote it, for error messages."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Duration):
        return repr(value.model_dump(exclude_defaults=True))
    return repr(value)


def iso_duration(delta: timedelta) -> str:
    """A timedelta as ISO 8601 text ("P30D", "PT12H", "P1DT6H")."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    days, rest = divmod(abs(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    text = (f"{days}D" if days else "") + (f"T{time}" if time else "")
    return f"{sign}P{text or '0D'}"


def to_json(value: Any) -> Any:
    """A value as JSON for traces: dates as ISO text, MISSING as null, sets as sorted lists."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if value is MISSING:
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return iso_duration(value)
    if isinstance(value, Duration):
        return value.model_dump(exclude_defaults=True)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((to_json(v) for v in value), key=repr)
    if isinstance(value, str | int | float):  # subclasses (enums)
        return value
    return repr(value)
