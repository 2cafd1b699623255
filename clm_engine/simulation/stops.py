"""What each stop of the virtual clock has to run: a full ``Engine.tick()``, or less.

A full tick sweeps anchors, computes every schedule's slots in every timezone, and dispatches.
At most stops only the dispatch has work, so the simulation computes the cron slots itself,
with the same library the scheduler uses, and asks the store whether an anchor is due; a test
checks that the shortcut gives exactly what a full tick at every stop gives.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..dispatch import DispatchReport
from ..engine import Engine
from ..models import ScheduleTrigger, utc_text
from ..rules import CompiledRule
from .window import ONE_TICK


class TickPlan:
    """Knows when a full ``Engine.tick()`` has work that ``dispatch()`` alone would not do.

    That is when an anchor is due (the store says so through its ``(status, fire_at)`` index),
    when a cron slot came due in any timezone a schedule runs in, when a contact brought a
    timezone not seen before (the scheduler starts that zone's clock at its next tick), and
    at least once a simulated day, as a safety net. Slots are computed the way the scheduler
    computes them (APScheduler's ``CronTrigger``), but each trigger is built once and each
    slot computed once, when the previous one has passed, rather than at every step.

    With ``full_ticks`` every stop runs a full ``Engine.tick()``: the reference the shortcut
    is tested against.
    """

    def __init__(self, engine: Engine, *, full_ticks: bool = False) -> None:
        self.engine = engine
        self.full_ticks = full_ticks
        self.schedules: list[tuple[str, str]] = []  # (expression, zone or "contact")
        for compiled in engine.rulebook.scheduled:
            when = compiled.rule.when
            assert isinstance(when, ScheduleTrigger)
            self.schedules.append((when.schedule, when.timezone))
        self.by_contact_zone = any(zone == "contact" for _, zone in self.schedules)
        self.zones: set[str] = set()
        if self.by_contact_zone:  # a copied store's contacts bring their timezones along
            self.zones.update(engine.store.read().contact_timezones())
        self.new_zone = True
        self.next_slots: dict[tuple[str, str], datetime] = {}  # (expression, zone) -> slot
        self.last_schedules: datetime | None = None  # the last full tick
        self.triggers: dict[tuple[str, str], Any] = {}
        #: What ran, summed over the run: the engine's counts, and stops by kind.
        self.counts: Counter[str] = Counter()
        self.dispatched = DispatchReport()
        self.ticks = 0

    def run(self) -> None:
        """Run what is due at the engine's ``now``, as ``Engine.tick()`` would."""
        self.ticks += 1
        now = self.engine.clock.now()
        if not self.full_tick_due(now):
            self.dispatched.add(self.engine.dispatch())
            if not self.anchor_due(now):  # an action's effect may have made a date due now
                self.counts["dispatch_only"] += 1
                return
        if self.schedules_due(now):
            report, kind = self.engine.tick(), "full_ticks"
            self.last_schedules = now
        else:
            report, kind = self.engine.tick(schedules=False), "anchor_sweeps"
        self.ticked(now)
        self.counts[kind] += 1
        self.dispatched.add(report.dispatched)
        for item in fields(report):
            value = getattr(report, item.name)
            if isinstance(value, int):
                self.counts[item.name] += value

    def full_tick_due(self, now: datetime) -> bool:
        """Whether ``dispatch()`` alone would leave something due undone at ``now``."""
        return self.full_ticks or self.schedules_due(now) or self.anchor_due(now)

    def schedules_due(self, now: datetime) -> bool:
        """Whether the schedules' part of a tick has work: a slot, a new zone, or a day gone."""
        last = self.last_schedules
        if self.full_ticks or last is None or self.new_zone or now - last >= timedelta(days=1):
            return True
        slot = self.upcoming_slot()
        return slot is not None and slot <= now

    def upcoming_slot(self) -> datetime | None:
        """The earliest slot not run yet, over every schedule and timezone."""
        return min(self.next_slots.values()) if self.next_slots else None

    def anchor_due(self, now: datetime) -> bool:
        return bool(self.engine.store.read().due_anchors(utc_text(now), 1))

    def ingested(self) -> None:
        """After a batch: a timezone no contact had before needs a full tick (the scheduler
        starts that zone's clock at its next tick). The store lists the zones in one index
        seek per zone, so asking after every batch costs little."""
        if not self.by_contact_zone:
            return
        zones = set(self.engine.store.read().contact_timezones())
        if not zones <= self.zones:
            self.zones |= zones
            self.new_zone = True

    def ticked(self, now: datetime) -> None:
        """After a tick at ``now``: move on every schedule's next slot that it has passed."""
        self.new_zone = False
        for expression, zone in self.schedules:
            for name in sorted(self.zones) if zone == "contact" else [zone]:
                key = (expression, name)
                slot = self.next_slots.get(key)
                if slot is None or slot <= now:
                    found = self._next(expression, name, now)
                    if found is None:
                        self.next_slots.pop(key, None)
                    else:
                        self.next_slots[key] = found

    def _next(self, expression: str, zone: str, after: datetime) -> datetime | None:
        from apscheduler.triggers.cron import CronTrigger

        key = (expression, zone)
        trigger = self.triggers.get(key)
        if trigger is None:
            try:
                trigger = CronTrigger.from_crontab(expression, timezone=ZoneInfo(zone))
            except (ValueError, KeyError, ZoneInfoNotFoundError):
                return after  # a zone or expression this cannot read: tick fully, every step
            self.triggers[key] = trigger
        slot = trigger.get_next_fire_time(None, after + ONE_TICK)
        return None if slot is None else slot.astimezone(UTC)


def timed_rules(engine: Engine) -> list[CompiledRule]:
    """The rules only a scheduler runs: before/after a date, and cron schedules."""
    return [*engine.rulebook.relative, *engine.rulebook.scheduled]
