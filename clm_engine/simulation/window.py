"""What a simulation is asked for, checked: the window ``[start, end)`` and the clock's step.

Shared by the library and ``clm simulate``, so both say the same thing about a bad date or
step. ``SimulationError`` lives here too: every other module of the package raises it.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from typing import TypedDict

from ..errors import ClmError

#: The step boundaries are aligned to the epoch (9:00, 10:00 ... UTC).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The finest time difference: "just before" a moment.
ONE_TICK = timedelta(microseconds=1)


class Window(TypedDict):
    """A run's window, step and stores, as the keyword arguments ``simulate`` and ``compare``
    take."""

    start: datetime
    end: datetime
    step: timedelta
    db: str | os.PathLike[str] | None
    keep: str | os.PathLike[str] | None


class SimulationError(ClmError):
    """A simulation that cannot run as asked (bad window or step, missing file, bad store)."""


def parse_when(text: str, *, name: str = "date") -> datetime:
    """``2026-05-01`` (midnight UTC) or an ISO 8601 time; without an offset, UTC is meant."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SimulationError(
            f"{name} {text!r} is not a date: write 2026-05-01 or 2026-05-01T09:00:00Z"
        ) from None
    return aware(moment)


_STEP = re.compile(r"^\s*(\d+)\s*(m|min|minutes?|h|hours?|d|days?)\s*$", re.IGNORECASE)


def parse_step(text: str) -> timedelta:
    """``15m``, ``1h``, ``1d`` (or ``90 minutes``): how far the virtual clock moves per tick."""
    match = _STEP.match(text)
    if not match:
        raise SimulationError(f"step {text!r} is not a duration: write 15m, 1h or 1d")
    number, unit = int(match[1]), match[2].lower()[0]
    step = {"m": timedelta(minutes=number), "h": timedelta(hours=number)}.get(
        unit, timedelta(days=number)
    )
    check_step(step)
    return step


def check_step(step: timedelta) -> None:
    if not timedelta(minutes=1) <= step <= timedelta(days=1):
        raise SimulationError(
            f"step {step} is out of range: between 1 minute (the finest a schedule can ask "
            "for) and 1 day (coarser would run a day's delays and schedules late)"
        )


def check_window(start: datetime, end: datetime) -> None:
    if start >= end:
        raise SimulationError(
            f"--from ({start:%Y-%m-%d %H:%M}Z) must be before --to ({end:%Y-%m-%d %H:%M}Z)"
        )


def aware(moment: datetime) -> datetime:
    """In UTC; a naive time is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
