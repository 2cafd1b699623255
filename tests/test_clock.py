"""The clocks: the accelerated one ``clm run --clock virtual`` runs on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clm_engine.clock import AcceleratedClock


def test_an_accelerated_clock_runs_speed_times_as_fast_and_refuses_nonsense():
    ticks = iter([100.0, 100.0, 101.5, 101.5])
    start = datetime(2026, 5, 1, tzinfo=UTC)
    clock = AcceleratedClock(start, 86400, monotonic=lambda: next(ticks))
    assert clock.now() == start
    assert clock.now() == start + timedelta(days=1.5)
    for speed in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number"):
            AcceleratedClock(start, speed)
    with pytest.raises(ValueError, match="timezone-aware"):
        AcceleratedClock(datetime(2026, 5, 1), 10)
