"""Replaying a history: the virtual clock's loop over one scratch store, and ``simulate()``.

* The clock moves in ``step`` s (an hour by default) aligned to the epoch, and stops besides at
  every cron slot. At each stop the events that occurred since the last one are ingested in
  one batch (``Engine.ingest_many``, the clock set to the newest of them first: each event is
  judged at its own time, and internal actions due at once run inline), then what came due
  runs, as ``Engine.tick()`` runs it (``stops.TickPlan``). A last tick runs just before
  ``end``. The engine thus behaves like a live one that ingests continuously and runs its
  scheduler every ``step`` and at every slot.
* External actions (email and the like) are recorded, never run (``dry_run_external``);
  internal ones run, because later rules depend on them.
* Events come from the history's sorted copy one step at a time (``history.Window``), so
  memory does not grow with the length of the history.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ..clock import VirtualClock
from ..engine import Engine
from ..experiments.backtest import summaries
from ..registry import Registry
from ..store import is_url
from .history import EventHistory, Window, as_history
from .report import SimulationResult, count_results, ruleset_list, step_notes, weeks_of
from .scratch import Scratch, copy_postgres_store, copy_store
from .stops import TickPlan, timed_rules
from .window import EPOCH, ONE_TICK, SimulationError, aware, check_step, check_window

#: Ruleset paths as callers give them: one path, or several.
RulesetPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def simulate(
    rulesets: RulesetPaths,
    events: Any,
    *,
    start: datetime,
    end: datetime,
    db: str | os.PathLike[str] | None = None,
    step: timedelta = timedelta(hours=1),
    keep: str | os.PathLike[str] | None = None,
    progress: Callable[[datetime], None] | None = None,
    registry: Registry | None = None,
) -> SimulationResult:
    """Replay ``events`` in ``[start, end)`` against ``rulesets`` and count what each rule did.

    ``events`` is an :class:`EventHistory`, a path to a JSON Lines file, or an iterable of
    events (models, dicts or JSON text). ``db``, when it names an existing store, is copied and
    the simulation starts from the copy's state (the store itself is never written); otherwise
    it starts from an empty store. ``keep`` names a directory in which to leave the scratch
    store (``simulation.db``) for ``clm explain`` and ``clm report``; by default it is deleted.
    ``progress`` is called with the virtual time after each step. ``registry`` gives the
    plugins (by default the built-ins and the installed ones, as ``clm`` has).

    Raises :class:`SimulationError` for a window or step that makes no sense or a store that
    cannot be copied, and ``RulesetError`` (listing every problem) for invalid rulesets.
    """
    start, end = aware(start), aware(end)
    check_window(start, end)
    check_step(step)
    paths = ruleset_paths(rulesets)
    registry = Registry() if registry is None else registry
    validate(paths, registry)
    with opened(events) as history:
        return replay(
            paths,
            history,
            start=start,
            end=end,
            step=step,
            db=db,
            keep=keep,
            progress=progress,
            registry=registry,
        )


def replay(
    paths: list[str],
    history: EventHistory,
    *,
    start: datetime,
    end: datetime,
    step: timedelta,
    db: str | os.PathLike[str] | None = None,
    keep: str | os.PathLike[str] | None = None,
    name: str = "simulation.db",
    progress: Callable[[datetime], None] | None = None,
    full_ticks: bool = False,
    registry: Registry | None = None,
) -> SimulationResult:
    """One run in a scratch store named ``name``, with arguments ``simulate`` has checked.

    ``full_ticks`` runs a full ``Engine.tick()`` at every stop instead of only what is due:
    slower, and the reference that the shortcuts are tested against.
    """
    with Scratch(keep, name) as scratch:
        run = _Replay(paths, history, start, end, step, db, scratch, progress, full_ticks)
        return run.run(Registry() if registry is None else registry)


def ruleset_paths(rulesets: RulesetPaths) -> list[str]:
    if isinstance(rulesets, str | os.PathLike):
        return [os.fspath(rulesets)]
    return [os.fspath(p) for p in rulesets]


def validate(paths: list[str], registry: Registry) -> None:
    """Validate before any heavy work, so a bad ruleset costs nothing; raises RulesetError."""
    from ..rulesets import load_rulesets

    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise SimulationError(f"no rulesets at {missing[0]}: no such file or directory")
    loaded = load_rulesets(paths, registry=registry)
    if not loaded:
        raise SimulationError(f"no ruleset files (*.json) in {', '.join(paths)}")


@contextmanager
def opened(events: Any) -> Iterator[EventHistory]:
    """The history of ``events``; one made here (from a path or items) is closed after."""
    history = as_history(events)
    try:
        yield history
    finally:
        if history is not events:
            history.close()


class _Replay:
    """One simulation run: the clock loop, then counting from the scratch store."""

    def __init__(
        self,
        paths: list[str],
        history: EventHistory,
        start: datetime,
        end: datetime,
        step: timedelta,
        db: str | os.PathLike[str] | None,
        scratch: Scratch,
        progress: Callable[[datetime], None] | None,
        full_ticks: bool,
    ) -> None:
        self.paths, self.history = paths, history
        self.start, self.end, self.step = start, end, step
        self.db: str | Path | None = None
        if db is not None:
            self.db = str(db) if is_url(str(db)) else Path(db)
        self.scratch, self.progress = scratch, progress
        self.full_ticks = full_ticks
        self.notes: list[str] = []

    def run(self, registry: Registry) -> SimulationResult:
        began = time.perf_counter()
        self.history.sort()  # read and checked before the scratch store is made
        if isinstance(self.db, str):  # a PostgreSQL store: copied into the scratch file
            copy_postgres_store(self.db, self.scratch.path, registry)
        elif self.db is not None and self.db.is_file():
            copy_store(self.db, self.scratch.path)
        elif self.db is not None:
            self.notes.append(f"no store at {self.db}: started from an empty store")
        # The first tick, just before ``start``, settles a copied store's backlog and starts the
        # schedules' clocks, so that a slot due at ``start`` itself runs: [start, end) exactly.
        clock = VirtualClock(self.start - ONE_TICK)
        engine = Engine(self.scratch.path, clock=clock, dry_run_external=True, registry=registry)
        with engine:
            self.notes.extend(engine.load_rulesets(self.paths))
            base = engine.store.read().high_water()
            self.notes.extend(step_notes(timed_rules(engine), self.step))
            plan = TickPlan(engine, full_ticks=self.full_ticks)
            with self.history.window(self.start, self.end) as window:
                counts = self._loop(engine, clock, plan, window)
            per_rule, fires, actions = count_results(engine, base)
            rulesets = ruleset_list(engine)
            experiments = summaries(engine, fires)
        weeks, partial = weeks_of(self.start, self.end)
        return SimulationResult(
            start=self.start,
            end=self.end,
            step=self.step,
            per_rule=per_rule,
            contacts_by_rule={key: set(counter) for key, counter in fires.items()},
            fires_by_contact=fires,
            weeks=weeks,
            partial_weeks=partial,
            events=counts,
            rejected=self.history.rejected,
            actions=actions,
            rulesets=rulesets,
            scheduler_counts=dict(plan.counts),
            ticks=plan.ticks,
            duration_seconds=time.perf_counter() - began,
            notes=self.notes,
            dispatch_notes=plan.dispatched.notes,
            db=os.fspath(self.db) if self.db is not None else None,
            kept=os.fspath(self.scratch.path) if self.scratch.keep is not None else None,
            experiments=experiments,
        )

    def _loop(
        self, engine: Engine, clock: VirtualClock, plan: TickPlan, window: Window
    ) -> dict[str, int]:
        counts: Counter[str] = Counter()
        contacts: set[str] = set()
        last = self.end - ONE_TICK  # [start, end): nothing that is due at ``end`` runs

        def ingest_until(limit: datetime) -> None:
            batch = window.take_until(limit)
            if not batch:
                return
            newest = batch[-1].occurred_at
            if newest > clock.now():
                clock.set(newest)  # rules judge each event at its own time; the rest is "now"
            result = engine.ingest_many(batch)
            plan.ingested()
            counts["replayed"] += len(batch)
            counts["ingested"] += result.ingested
            counts["duplicates"] += result.duplicates
            counts["failed"] += len(result.failed)
            contacts.update(event.contact_id for event in batch)
            for failure in result.failed[: max(0, 20 - len(self.notes))]:
                self.notes.append(
                    f"event {failure.event.id} was not applied: reducer {failure.reducer} "
                    f"failed with {failure.error}"
                )

        plan.run()
        boundary = self.start + (self.step - (self.start - EPOCH) % self.step)
        while True:
            # Stop at each step, and also exactly at a schedule's slot between two steps (9:00
            # in Kolkata is 3:30 UTC), so that a slot sees the events before it and no later.
            stop = boundary
            slot = plan.upcoming_slot()
            if slot is not None and clock.now() < slot < stop:
                stop = slot
            if stop > last:
                break
            ingest_until(stop)
            clock.set(stop)
            plan.run()
            if stop == boundary:
                if self.progress is not None:
                    self.progress(boundary)
                boundary += self.step
        ingest_until(self.end)
        clock.set(max(clock.now(), last))
        plan.run()
        if self.progress is not None:
            self.progress(self.end)
        window.finish()
        history = self.history
        return {
            "read": history.read,
            "rejected": history.rejected_count,
            "replayed": counts["replayed"],
            "ingested": counts["ingested"],
            "duplicates": counts["duplicates"],
            "failed": counts["failed"],
            "skipped_before": window.skipped_before,
            "skipped_after": window.skipped_after,
            "contacts": len(contacts),
        }
