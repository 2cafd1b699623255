"""Where clm-engine reads the time.

Every component takes a ``Clock`` instead of calling ``datetime.now()``, so that tests and
simulation can drive time with a ``VirtualClock`` and never sleep.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """A clock that only moves when told to: for tests and simulation.

    It starts at ``start``, by default at ``DEFAULT_START``: the time at which
    ``clm_engine.testing.make_event`` dates events unless told otherwise, so that in a first
    test the events have happened by the clock's now and what they make due can be dispatched.
    """

    DEFAULT_START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)

    def __init__(self, start: datetime | None = None) -> None:
        start = start or self.DEFAULT_START
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**kwargs)``; never backward."""
        step = delta if delta is not None else timedelta(**kwargs)
        if step < timedelta(0):
            raise ValueError("a VirtualClock never moves backward")
        self._now += step
        return self._now

    def set(self, when: datetime) -> datetime:
        """Jump to ``when``, which must not be earlier than now."""
        when = when.astimezone(UTC)
        if when < self._now:
            raise ValueError("a VirtualClock never moves backward")
        self._now = when
        return self._now


class AcceleratedClock:
    """Virtual time that runs by itself, ``speed`` times as fast as the wall clock, from
    ``start``: what ``clm run --clock virtual --speed N`` runs the live engine on, so that a
    test environment sees a week of drips in seconds, with real sends.

    It reads ``time.monotonic`` (never the wall clock, which may step), so it never moves
    backward."""

    def __init__(
        self,
        start: datetime,
        speed: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("AcceleratedClock needs a timezone-aware start time")
        if not math.isfinite(speed) or speed <= 0:
            raise ValueError(f"the speed must be a positive number, not {speed!r}")
        self.start = start.astimezone(UTC)
        self.speed = speed
        self._monotonic = monotonic
        self._began = monotonic()

    def now(self) -> datetime:
        elapsed = (self._monotonic() - self._began) * self.speed
        return self.start + timedelta(seconds=elapsed)
