"""``clm run --clock virtual --speed N``: the live engine on an accelerated clock, for tests.

Everything runs as in production (real sends, the dispatcher, schedules, the ruleset watcher),
only the engine's clock runs ``N`` times as fast, from now (or ``--start``, or where this
database's virtual clock stopped last: time never moves backward in one database). A
production database is refused (``clm_engine.environment``) unless ``--allow-production``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from ..clock import AcceleratedClock
from ..engine import Engine
from ..environment import (
    VIRTUAL_CLOCK_KEY,
    production_reason,
    virtual_clock_status,
    virtual_time,
)
from ..errors import ClmError
from ..models import utc_text


def virtual_clock_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of ``clm run`` that choose its clock."""
    options = [
        click.option(
            "--clock",
            type=click.Choice(["system", "virtual"]),
            default="system",
            show_default=True,
            help="system: the wall clock. virtual: an accelerated clock for test environments "
            "(with --speed); refused on a production database.",
        ),
        click.option(
            "--speed",
            type=click.FloatRange(min=0, min_open=True, max=1e9),
            help="With --clock virtual: how many times as fast as the wall clock time runs "
            "(86400: a day a second).",
        ),
        click.option(
            "--start",
            type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"]),
            help="With --clock virtual: the virtual time to start at, UTC (default: now, or "
            "where this database's virtual clock stopped, whichever is later).",
        ),
        click.option(
            "--allow-production",
            is_flag=True,
            help="Run --clock virtual even on a database that is production "
            "(clm migrate --production or $CLM_ENVIRONMENT=production).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def use_virtual_clock(
    engine: Engine,
    clock: str,
    speed: float | None,
    start: datetime | None,
    allow_production: bool,
) -> str | None:
    """Put ``engine`` on an accelerated clock if ``clock`` is ``virtual``: the line to show,
    or None for the system clock. Refuses a production database, and a start earlier than
    the time this database's virtual clock reached."""
    if clock == "system":
        if speed is not None or start is not None:
            raise ClmError("--speed and --start go with --clock virtual")
        return None
    if speed is None:
        raise ClmError("--clock virtual needs --speed N (how many times as fast as real time)")
    reason = production_reason(engine.store)
    if reason is not None and not allow_production:
        raise ClmError(
            f"refusing to run on a virtual clock against a production database: {reason}. "
            "A virtual clock sends real messages at test speed; use a test database, or pass "
            "--allow-production if this really is what you want"
        )
    reached = virtual_time(engine.store)
    wall = datetime.now(UTC)
    if start is not None:
        begin = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
        if reached is not None and begin < reached:
            raise ClmError(
                f"--start {utc_text(begin)[:19]}Z is before {utc_text(reached)[:19]}Z, where "
                "this database's virtual clock already was: time never moves backward here"
            )
    else:
        begin = max(wall, reached) if reached is not None else wall
    engine.clock = AcceleratedClock(begin, speed)
    record_virtual_time(engine)
    warning = f" (PRODUCTION: {reason}; --allow-production)" if reason else ""
    return (
        f"clm run: VIRTUAL clock from {utc_text(begin)[:19]}Z at {speed:g}x real time"
        f"{warning}: for test environments only"
    )


def record_virtual_time(engine: Engine) -> None:
    """Remember how far the virtual clock went (``clm status``; where a restart resumes)."""
    clock = engine.clock
    speed = clock.speed if isinstance(clock, AcceleratedClock) else 1.0
    engine.record_status(VIRTUAL_CLOCK_KEY, virtual_clock_status(clock.now(), speed))
