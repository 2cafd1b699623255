"""Recurring moments: the calendar arithmetic of yearly and monthly triggers.

A rule ``{"every": "P1Y", "on": "contact.attributes.birthday", "at": "09:00"}`` fires on each
anniversary of a date fact, at a time of day in the contact's timezone. The anchor machinery
of :mod:`clm_engine.timed` keeps one row per (rule, contact, entity) holding the *next*
occurrence; this module says what the occurrences are, so the sweep can move the row on after
each one fires. It is pure: no store, no clock.

The rules, documented in docs/rulesets.md ("Recurring moments"):

- Occurrences are the anniversaries of the date: the date plus 1, 2, 3 ... periods, never the
  date itself (a birthday is not celebrated on the day of birth; a signup anniversary is a
  year after the signup).
- **29 February** (and the 29th-31st in a monthly rule): in a year (month) without that day,
  the occurrence is the last day of February (of the month): 28 February by default, or
  1 March with ``"leap_day": "mar1"``. The date itself never drifts: the next leap year is
  29 February again.
- The date of a fact with a time of day (``contact.created_at``) is its calendar date in the
  rule's timezone; a date-only value (``"1990-03-14"``) is that date; ``"--03-14"`` (ISO 8601
  without a year, as vCard writes birthdays) is that day every year.
- **The time of day** is local: 09:00 in Europe/Paris is 08:00Z in winter and 07:00Z in
  summer. A time the clocks skip that day (a DST gap: 02:30 on the spring-forward night)
  fires as far after the gap as it was into it (03:30 local, the same instant as 02:30 in the
  offset before the change); a time that happens twice (autumn) fires at the first.
- An occurrence whose fire time is outside the supported range of times (1900-2200,
  ``models.SUPPORTED_TIMES``) does not exist: a ``9999-12-31`` never fires.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from .conditions.values import to_datetime
from .models import EARLIEST_TIME, LATEST_TIME

#: The base year of a date without a year (``--02-29``): a leap year, so 29 February is one.
YEARLESS_BASE = 2000

LeapDay = Literal["feb28", "mar1"]

_PERIOD = re.compile(r"^P(?:(\d+)Y|(\d+)M)$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_YEARLESS = re.compile(r"^--(\d{2})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    """A calendar period: ``months`` months (12 for a year)."""

    months: int

    @classmethod
    def parse(cls, text: str) -> Period:
        """``"P1Y"`` -> 12 months, ``"P3M"`` -> 3; the model's pattern already checked it."""
        found = _PERIOD.match(text)
        if found is None:
            raise ValueError(f"{text!r} is not a calendar period like 'P1Y' or 'P1M'")
        years, months = found.groups()
        return cls(int(years) * 12 if years else int(months))


@dataclass(frozen=True)
class Moment:
    """How a recurring rule turns a base date into fire times."""

    period: Period
    at: time
    zone: str
    leap_day: LeapDay = "feb28"

    def occurrence(self, base: date, index: int) -> date | None:
        """The ``index``-th anniversary of ``base`` (1 is the first), or None past year 9999."""
        months = base.month - 1 + index * self.period.months
        year, month = base.year + months // 12, months % 12 + 1
        if year > 9999:
            return None
        last = calendar.monthrange(year, month)[1]
        if base.day <= last:
            return date(year, month, base.day)
        if self.leap_day == "mar1" and month == 2:
            return date(year, 3, 1)
        return date(year, month, last)

    def fire_at(self, day: date) -> datetime | None:
        """The UTC instant of ``at`` on ``day`` in the zone; None outside supported times."""
        local = datetime.combine(day, self.at, tzinfo=_zone(self.zone))  # fold=0: see above
        moment = local.astimezone(UTC)
        return moment if EARLIEST_TIME <= moment < LATEST_TIME else None

    def index_of(self, base: date, day: date) -> int | None:
        """Which anniversary of ``base`` ``day`` is, or None if it is not one."""
        months = (day.year - base.year) * 12 + day.month - base.month
        if self.leap_day == "mar1" and day.month == 3 and day.day == 1 and base.day > 28:
            months -= 1  # a moved 29 February (or 29-31 Jan in a monthly rule) lands in March
        if months <= 0 or months % self.period.months:
            return None
        index = months // self.period.months
        return index if self.occurrence(base, index) == day else None

    def next_after(self, base: date, moment: datetime) -> tuple[date, datetime] | None:
        """The first anniversary of ``base`` that fires at or after ``moment``."""
        local = moment.astimezone(_zone(self.zone)).date()
        months = (local.year - base.year) * 12 + local.month - base.month
        first = max(1, months // self.period.months - 1)  # a period early, then step on
        for index in range(first, first + 4):
            day = self.occurrence(base, index)
            if day is None:
                return None
            fire = self.fire_at(day)
            if fire is not None and fire >= moment:
                return day, fire
            if fire is None and day.year >= LATEST_TIME.year:
                return None
        return None  # not reached: four periods always pass ``moment``

    def following(self, base: date, day: date) -> tuple[date, datetime] | None:
        """The anniversary after the one on ``day`` (which fired), with its fire time."""
        index = self.index_of(base, day)
        if index is None:  # the date fact changed since: count on from that day
            return self.next_after(base, self.fire_at(day) or _day_start(day))
        for step in range(index + 1, index + 3):
            nxt = self.occurrence(base, step)
            if nxt is None:
                return None
            fire = self.fire_at(nxt)
            if fire is not None:
                return nxt, fire
        return None


def base_date(value: Any, zone: str) -> date | None:
    """The calendar date a fact's value names, or None if it names none (see module doc)."""
    if isinstance(value, datetime):
        return value.astimezone(_zone(zone)).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        yearless = _YEARLESS.match(value)
        if yearless:
            try:
                return date(YEARLESS_BASE, int(yearless.group(1)), int(yearless.group(2)))
            except ValueError:
                return None
        if _DATE_ONLY.match(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                return None
    moment = to_datetime(value)
    return moment.astimezone(_zone(zone)).date() if moment is not None else None


def parse_time_of_day(text: str) -> time:
    """``"09:00"`` -> 09:00 (the model's pattern already checked it)."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC) + timedelta(days=1)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)
