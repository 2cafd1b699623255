"""Simulation and backtests: replay an event history against rulesets, on a virtual clock.

Why it exists: before an ops team ships a ruleset change it wants to know what the change
*does*: how often each rule would fire, for whom, week by week, and which contacts would be
treated differently from today. The only honest way to know is to run the real engine (the
same reducers, conditions, limits, outbox, delays, schedules and dispatch) over a real
history, so this module does exactly that, in a scratch store, on a ``VirtualClock``:

* the history is sorted into time order and cut to ``[start, end)``;
* the clock moves in ``step`` s (an hour by default) aligned to the epoch, and stops besides at
  every cron slot; at each stop the events that occurred since the last one are ingested in
  one batch (the clock set to the newest of them first), then what came due runs, as
  ``Engine.tick()`` runs it: delayed actions, relative-time anchors and cron slots. A last
  tick runs just before ``end``. The engine thus behaves like a live one that ingests
  continuously and runs its scheduler every ``step`` and at every slot;
* external actions (email and the like) are recorded, never run (``dry_run_external``);
  internal ones (stage, score, tags) run, because later rules depend on them;
* the numbers come from the scratch store itself (traces and outbox rows written during the
  run), so they are what the engine decided, not an estimate.

The real store is never opened for writing: with ``db`` it is copied (SQLite's backup API,
read-only) and the copy is what the simulation changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from operator import attrgetter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import plugins
from .clock import VirtualClock
from .dispatch import DispatchReport
from .engine import Engine, parse_event
from .errors import ClmError, EventError
from .models import Event, EventTrigger, Rule, StageTrigger, utc_text

__all__ = [
    "Comparison",
    "EventHistory",
    "SimulationError",
    "SimulationResult",
    "compare",
    "parse_step",
    "parse_when",
    "read_events",
    "simulate",
]

#: Ruleset paths as callers give them: one path, or several.
RulesetPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_TICK = timedelta(microseconds=1)
_STATUS_ORDER = ("done", "simulated", "skipped", "vetoed", "dead", "pending")


class SimulationError(ClmError):
    """A simulation that cannot run as asked (bad window, missing file, unsafe engine ...)."""


# -- the history -----------------------------------------------------------------------------


@dataclass
class EventHistory:
    """A history, parsed once and sorted into time order; reusable by several simulations.

    ``rejected`` holds ``(line, error)`` for inputs that are not events (``line`` counts from 1
    in the file, or is the 1-based position in an iterable). Sorting is stable: events of the
    same instant keep their order in the file.
    """

    events: list[Event]
    rejected: list[tuple[int, str]] = field(default_factory=list)
    source: str | None = None

    @classmethod
    def from_items(
        cls, items: Iterable[Event | Mapping[str, Any] | str | bytes], *, source: str | None = None
    ) -> EventHistory:
        events: list[Event] = []
        rejected: list[tuple[int, str]] = []
        for number, item in enumerate(items, start=1):
            if isinstance(item, str | bytes) and not item.strip():
                continue  # a blank line, as ``clm ingest`` skips them
            try:
                events.append(parse_event(item))
            except EventError as error:
                rejected.append((number, str(error)))
        events.sort(key=attrgetter("occurred_at"))
        return cls(events, rejected, source)


def read_events(path: str | os.PathLike[str]) -> EventHistory:
    """The events of a JSON Lines file (the format ``clm ingest`` reads), in time order."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise SimulationError(f"events file {path} {what}")
    try:
        with path.open("rb") as stream:
            return EventHistory.from_items(stream, source=str(path))
    except OSError as error:
        raise SimulationError(f"cannot read events file {path}: {error.strerror}") from None


def _history(events: Any) -> EventHistory:
    if isinstance(events, EventHistory):
        return events
    if isinstance(events, str | os.PathLike):  # a path: a lone JSON line would be in a list
        return read_events(events)
    return EventHistory.from_items(events)


# -- parsing the window and the step, shared with the CLI ------------------------------------


def parse_when(text: str, *, name: str = "date") -> datetime:
    """``2026-05-01`` (midnight UTC) or an ISO 8601 time; without an offset, UTC is meant."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SimulationError(
            f"{name} {text!r} is not a date: write 2026-05-01 or 2026-05-01T09:00:00Z"
        ) from None
    return _aware(moment)


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
    _check_step(step)
    return step


def _check_step(step: timedelta) -> None:
    if not timedelta(minutes=1) <= step <= timedelta(days=1):
        raise SimulationError(
            f"step {step} is out of range: between 1 minute (the finest a schedule can ask "
            "for) and 1 day (coarser would run a day's delays and schedules late)"
        )


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@lru_cache(maxsize=4096)
def _week_of_day(day: str) -> str:
    """The ISO week (``2026-W19``) of a ``YYYY-MM-DD`` day: a cache, since days repeat a lot."""
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year}-W{week:02d}"


def _weeks(start: datetime, end: datetime) -> tuple[list[str], list[str]]:
    """Every ISO week that ``[start, end)`` touches, and those it only partly covers."""
    last = end - _ONE_TICK
    monday = (start - timedelta(days=start.weekday())).date()
    weeks, partial = [], []
    while monday <= last.date():
        label = _week_of_day(monday.isoformat())
        week_start = datetime.combine(monday, datetime.min.time(), UTC)
        if week_start < start or week_start + timedelta(days=7) > end:
            partial.append(label)
        weeks.append(label)
        monday += timedelta(days=7)
    return weeks, partial


# -- the result ------------------------------------------------------------------------------


@dataclass
class SimulationResult:
    """What the rulesets did over the history, per rule and in total.

    ``per_rule`` maps ``"ruleset/rule"`` to a dict: ``fired`` (decisions that fired),
    ``contacts`` (distinct contacts they fired for), ``by_week`` (fires per ISO week of the
    occurrence), ``blocked`` (matched but stopped by a limit), ``errors``, ``actions`` (outbox
    rows by final status: ``done``, ``simulated`` for external actions recorded and not run,
    ``skipped``, ``vetoed``, ``dead``, ``pending`` when due after the end), ``actions_by_week``
    (rows that ran, per ISO week of when they were due) and what the rule is: ``ruleset``,
    ``rule``, ``trigger``, ``enabled``, ``definition`` (a hash of the rule's JSON, to tell a
    changed rule from an unchanged one). Every loaded rule has an entry, fired or not.
    """

    start: datetime
    end: datetime
    step: timedelta
    per_rule: dict[str, dict[str, Any]]
    contacts_by_rule: dict[str, set[str]]
    fires_by_contact: dict[str, Counter[str]]
    weeks: list[str]
    partial_weeks: list[str]
    events: dict[str, int]
    rejected: list[tuple[int, str]]
    actions: dict[str, int]
    rulesets: list[dict[str, Any]]
    scheduler: str  # "tick", or "dispatch" when the engine cannot run schedules yet
    scheduler_counts: dict[str, int]
    ticks: int
    duration_seconds: float
    notes: list[str] = field(default_factory=list)
    dispatch_notes: list[str] = field(default_factory=list)
    db: str | None = None
    kept: str | None = None

    @property
    def skipped_events(self) -> int:
        """Events outside ``[start, end)``: read, and ignored."""
        return self.events["skipped_before"] + self.events["skipped_after"]

    @property
    def days(self) -> float:
        return (self.end - self.start) / timedelta(days=1)

    @property
    def days_per_second(self) -> float:
        return self.days / self.duration_seconds if self.duration_seconds else float("inf")

    @property
    def fired(self) -> int:
        return sum(entry["fired"] for entry in self.per_rule.values())

    def as_dict(self, *, contacts: bool = True) -> dict[str, Any]:
        """JSON-able; with ``contacts``, the ids each rule fired for (sorted) are included."""
        answer: dict[str, Any] = {
            "from": self.start.isoformat().replace("+00:00", "Z"),
            "to": self.end.isoformat().replace("+00:00", "Z"),
            "step_seconds": int(self.step.total_seconds()),
            "days": round(self.days, 3),
            "duration_seconds": round(self.duration_seconds, 3),
            "days_per_second": round(self.days_per_second, 2),
            "db": self.db,
            "kept": self.kept,
            "rulesets": self.rulesets,
            "events": self.events | {"skipped": self.skipped_events},
            "rejected": [{"line": line, "error": error} for line, error in self.rejected[:100]],
            "weeks": self.weeks,
            "partial_weeks": self.partial_weeks,
            "totals": {
                "fired": self.fired,
                "contacts": len(set().union(*self.contacts_by_rule.values())),
                "by_week": {
                    week: sum(e["by_week"].get(week, 0) for e in self.per_rule.values())
                    for week in self.weeks
                },
                "actions": self.actions,
            },
            "per_rule": self.per_rule,
            "scheduler": {"mode": self.scheduler, "ticks": self.ticks, **self.scheduler_counts},
            "notes": self.notes,
            "dispatch_notes": self.dispatch_notes[:100],
        }
        if contacts:
            answer["contacts_by_rule"] = {
                rule: sorted(ids) for rule, ids in self.contacts_by_rule.items()
            }
        return answer


# -- simulate --------------------------------------------------------------------------------


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
) -> SimulationResult:
    """Replay ``events`` in ``[start, end)`` against ``rulesets`` and count what each rule did.

    ``events`` is an :class:`EventHistory`, a path to a JSON Lines file, or an iterable of
    events (models, dicts or JSON text). ``db``, when it names an existing store, is copied and
    the simulation starts from the copy's state (the store itself is never written); otherwise
    it starts from an empty store. ``keep`` names a directory in which to leave the scratch
    store (``simulation.db``) for ``clm explain`` and ``clm report``; by default it is deleted.
    ``progress`` is called with the virtual time after each tick.

    Raises :class:`SimulationError` for a window or step that makes no sense or a store that
    cannot be copied, and ``RulesetError`` (listing every problem) for invalid rulesets.
    """
    start, end = _aware(start), _aware(end)
    _check_window(start, end)
    _check_step(step)
    paths = _paths(rulesets)
    _validate(paths)
    history = _history(events)
    with _Scratch(keep, "simulation.db") as scratch:
        return _Replay(paths, history, start, end, step, db, scratch, progress).run()


def _check_window(start: datetime, end: datetime) -> None:
    if start >= end:
        raise SimulationError(
            f"--from ({start:%Y-%m-%d %H:%M}Z) must be before --to ({end:%Y-%m-%d %H:%M}Z)"
        )


def _paths(rulesets: RulesetPaths) -> list[str]:
    if isinstance(rulesets, str | os.PathLike):
        return [os.fspath(rulesets)]
    return [os.fspath(p) for p in rulesets]


def _validate(paths: list[str]) -> list[Any]:
    """Validate before any heavy work, so a bad ruleset costs nothing; raises RulesetError."""
    from .rulesets import load_rulesets

    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise SimulationError(f"no rulesets at {missing[0]}: no such file or directory")
    loaded = load_rulesets(
        paths,
        actions=plugins.get_actions(),
        operators=plugins.get_operators(),
        facts=plugins.get_facts(),
    )
    if not loaded:
        raise SimulationError(f"no ruleset files (*.json) in {', '.join(paths)}")
    return loaded


class _Scratch:
    """Where a simulation's store lives: a temporary directory (deleted after), or ``keep``."""

    def __init__(self, keep: str | os.PathLike[str] | None, name: str) -> None:
        self.keep = Path(keep) if keep is not None else None
        self.name = name
        self.directory: Path | None = None

    def __enter__(self) -> _Scratch:
        if self.keep is None:
            self.directory = Path(tempfile.mkdtemp(prefix="clm-simulate-"))
        else:
            self.keep.mkdir(parents=True, exist_ok=True)
            self.directory = self.keep
            if self.path.exists():
                raise SimulationError(
                    f"{self.path} exists already: remove it or pick another --keep directory"
                )
        return self

    @property
    def path(self) -> Path:
        assert self.directory is not None
        return self.directory / self.name

    def __exit__(self, *exc: object) -> None:
        if self.keep is None and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a store, through SQLite's backup API, that never writes to it.

    A store in WAL mode keeps recent commits in its ``-wal`` file, so copying the file alone
    could miss them. With no ``-wal`` file nothing has the store open (the last connection to
    close removes it), and the copy reads it as immutable: no lock, and no ``-wal`` or ``-shm``
    file created beside the real store. If a writer opened it meanwhile (a ``-wal`` appeared),
    or one had it open all along, the copy is made (again) read-only, under SQLite's locks.
    """
    wal = source.with_name(source.name + "-wal")
    if not wal.exists():
        _backup(source, target, "immutable=1")
        if not wal.exists():
            return
    _backup(source, target, "mode=ro")


def _backup(source: Path, target: Path, mode: str) -> None:
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?{mode}", uri=True)
    except sqlite3.Error as error:
        raise SimulationError(f"cannot open {source}: {error}") from None
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        except sqlite3.DatabaseError as error:
            raise SimulationError(
                f"cannot copy {source} (not a clm-engine store?): {error}"
            ) from None
        finally:
            dst.close()
    finally:
        src.close()


def _supports_dry_run() -> bool:
    return "dry_run_external" in inspect.signature(Engine.__init__).parameters


def _open_engine(path: Path, clock: VirtualClock, paths: list[str]) -> tuple[Engine, list[str]]:
    """An engine on the scratch store that sends nothing; its ruleset warnings."""
    dry_run = _supports_dry_run()
    kwargs: dict[str, Any] = {"dry_run_external": True} if dry_run else {}
    engine = Engine(path, clock=clock, **kwargs)
    try:
        warnings = engine.load_rulesets(paths)
        if not dry_run:
            _refuse_external_actions(engine)
    except BaseException:
        engine.close()
        raise
    return engine, warnings


def _refuse_external_actions(engine: Engine) -> None:
    """Without ``dry_run_external`` only the core's own actions are known to send nothing.

    A plugin's action might email a customer, and a backtest must never do that, so a
    simulation on an engine that cannot hold external actions back refuses to start instead.
    """
    for compiled in engine.rulebook.rules.values():
        for call, _ in compiled.actions:
            spec = engine.actions.get(call.action)
            if spec is not None and spec.plugin not in plugins.DEFAULT_PLUGINS:
                raise SimulationError(
                    f"rule {compiled.ruleset}/{compiled.id} uses {call.action} (plugin "
                    f"{spec.plugin}), and this engine cannot hold external actions back "
                    "(no dry_run_external): refusing to simulate rather than risk sending"
                )


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
        scratch: _Scratch,
        progress: Callable[[datetime], None] | None,
    ) -> None:
        self.paths, self.history = paths, history
        self.start, self.end, self.step = start, end, step
        self.db = Path(db) if db is not None else None
        self.scratch, self.progress = scratch, progress
        self.notes: list[str] = []
        self.dispatched = DispatchReport()
        self.scheduler_counts: Counter[str] = Counter()
        self.ticks = 0
        self.kinds: Counter[str] = Counter()  # stops by what ran: full_ticks, anchor_sweeps ...

    def run(self) -> SimulationResult:
        began = time.perf_counter()
        if self.db is not None and self.db.is_file():
            _copy_store(self.db, self.scratch.path)
        elif self.db is not None:
            self.notes.append(f"no store at {self.db}: started from an empty store")
        # The first tick, just before ``start``, settles a copied store's backlog and starts the
        # schedules' clocks, so that a slot due at ``start`` itself runs: [start, end) exactly.
        clock = VirtualClock(self.start - _ONE_TICK)
        engine, warnings = _open_engine(self.scratch.path, clock, self.paths)
        self.notes.extend(warnings)
        with engine:
            base_trace, base_outbox = _high_water(engine)
            tick = getattr(engine, "tick", None)
            timed = _timed_rules(engine)
            if tick is None and timed:
                self.notes.append(
                    f"this engine has no tick(): {len(timed)} schedule and before/after rules "
                    "were not run (delayed actions were)"
                )
            self.notes.extend(_step_notes(timed, self.step))
            plan = None if tick is None else _TickPlan(engine, tick, timed)
            counts = self._loop(engine, clock, plan)
            result = self._count(engine, base_trace, base_outbox, counts)
        result.duration_seconds = time.perf_counter() - began
        return result

    def _tick(self, engine: Engine, plan: _TickPlan | None) -> None:
        """Run what is due now, as ``Engine.tick()`` would.

        A full ``tick()`` sweeps anchors and computes every schedule's slots in every timezone,
        which costs far more than the dispatch it ends with; when ``plan`` knows that no anchor
        and no slot is due, ``dispatch()`` does the same work, and when only anchors are due,
        the sweep and the dispatch do (see ``_TickPlan.run``). Without ``tick()`` on the engine
        (``plan`` is None), dispatch is all there is.
        """
        self.ticks += 1
        if plan is None:
            self.dispatched.add(engine.dispatch())
            return
        now = engine.clock.now()
        if not plan.full_tick_due(now):
            self.dispatched.add(engine.dispatch())
            if not plan.anchor_due(now):  # an action's effect may have made a date due now
                self.kinds["dispatch_only"] += 1
                return
        report, kind = plan.run(now)
        self.kinds[kind] += 1
        dispatched = getattr(report, "dispatched", None)
        if isinstance(dispatched, DispatchReport):
            self.dispatched.add(dispatched)
        if dataclasses.is_dataclass(report):
            for item in dataclasses.fields(report):
                value = getattr(report, item.name)
                if isinstance(value, int) and not isinstance(value, bool):
                    self.scheduler_counts[item.name] += value

    def _loop(self, engine: Engine, clock: VirtualClock, plan: _TickPlan | None) -> dict[str, int]:
        events = self.history.events
        counts = Counter(
            read=len(events) + len(self.history.rejected),
            rejected=len(self.history.rejected),
        )
        contacts: set[str] = set()
        index = 0
        while index < len(events) and events[index].occurred_at < self.start:
            index += 1
        counts["skipped_before"] = index
        last = self.end - _ONE_TICK  # [start, end): nothing that is due at ``end`` runs

        def ingest_until(limit: datetime) -> None:
            nonlocal index
            first = index
            while index < len(events) and events[index].occurred_at < limit:
                index += 1
            if index == first:
                return
            batch = events[first:index]
            newest = batch[-1].occurred_at
            if newest > clock.now():
                clock.set(newest)  # rules judge each event at its own time; the rest is "now"
            result = engine.ingest_many(batch)
            if plan is not None:
                plan.ingested(batch)
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

        self._tick(engine, plan)
        boundary = self.start + (self.step - (self.start - _EPOCH) % self.step)
        while True:
            # Stop at each step, and also exactly at a schedule's slot between two steps (9:00
            # in Kolkata is 3:30 UTC), so that a slot sees the events before it and no later.
            stop = boundary
            slot = plan.upcoming_slot() if plan is not None else None
            if slot is not None and clock.now() < slot < stop:
                stop = slot
            if stop > last:
                break
            ingest_until(stop)
            clock.set(stop)
            self._tick(engine, plan)
            if stop == boundary:
                if self.progress is not None:
                    self.progress(boundary)
                boundary += self.step
        ingest_until(self.end)
        clock.set(max(clock.now(), last))
        self._tick(engine, plan)
        if self.progress is not None:
            self.progress(self.end)
        counts["skipped_after"] = len(events) - index
        counts["contacts"] = len(contacts)
        for key in ("replayed", "ingested", "duplicates", "failed"):
            counts.setdefault(key, 0)
        return dict(counts)

    def _count(
        self, engine: Engine, base_trace: int, base_outbox: int, events: dict[str, int]
    ) -> SimulationResult:
        """Per rule, from the traces and outbox rows this run wrote (not those it copied)."""
        weeks, partial = _weeks(self.start, self.end)
        per_rule = {key: _rule_entry(*value) for key, value in _rules(engine).items()}
        contacts: dict[str, set[str]] = defaultdict(set)
        fires: dict[str, Counter[str]] = defaultdict(Counter)

        def entry(ruleset: str, rule: str) -> dict[str, Any]:
            key = f"{ruleset}/{rule}"
            found = per_rule.get(key)
            if found is None:  # a rule of a ruleset the copied store knows, not loaded now
                found = per_rule[key] = _rule_entry(ruleset, rule, None, enabled=False)
            return found

        conn = engine.store.conn  # type: ignore[attr-defined]
        rows = conn.execute(
            "SELECT ruleset, rule, decision, contact_id, substr(at, 1, 10) FROM traces "
            "WHERE id > ? AND decision != 'no_match'",
            [base_trace],
        )
        for ruleset, rule, decision, contact_id, day in rows:
            item = entry(ruleset, rule)
            if decision == "fired":
                key = f"{ruleset}/{rule}"
                item["fired"] += 1
                week = _week_of_day(day)
                item["by_week"][week] = item["by_week"].get(week, 0) + 1
                contacts[key].add(contact_id)
                fires[key][contact_id] += 1
            elif decision == "blocked_by_limit":
                item["blocked"] += 1
            elif decision == "error":
                item["errors"] += 1
        rows = conn.execute(
            "SELECT ruleset, rule, status, substr(due_at, 1, 10), count(*) FROM outbox "
            "WHERE seq > ? GROUP BY 1, 2, 3, 4",
            [base_outbox],
        )
        totals: Counter[str] = Counter()
        for ruleset, rule, status, day, count in rows:
            item = entry(ruleset, rule)
            item["actions"][status] = item["actions"].get(status, 0) + count
            totals[status] += count
            if status != "pending":
                week = _week_of_day(day)
                item["actions_by_week"][week] = item["actions_by_week"].get(week, 0) + count
        for key, item in per_rule.items():
            item["contacts"] = len(contacts.get(key, ()))
            item["by_week"] = dict(sorted(item["by_week"].items()))
            item["actions_by_week"] = dict(sorted(item["actions_by_week"].items()))
            item["actions"] = _ordered_statuses(item["actions"])
        return SimulationResult(
            start=self.start,
            end=self.end,
            step=self.step,
            per_rule=dict(sorted(per_rule.items())),
            contacts_by_rule={key: contacts.get(key, set()) for key in sorted(per_rule)},
            fires_by_contact={key: fires.get(key, Counter()) for key in sorted(per_rule)},
            weeks=weeks,
            partial_weeks=partial,
            events=events,
            rejected=self.history.rejected,
            actions=_ordered_statuses(dict(totals)),
            rulesets=[
                {
                    "ruleset": item.ruleset.ruleset,
                    "version": item.ruleset.version,
                    "content_hash": item.content_hash,
                    "path": item.path,
                }
                for item in engine.rulebook.rulesets
            ],
            scheduler="tick" if getattr(engine, "tick", None) is not None else "dispatch",
            scheduler_counts=dict(self.scheduler_counts) | dict(self.kinds),
            ticks=self.ticks,
            duration_seconds=0.0,
            notes=self.notes,
            dispatch_notes=self.dispatched.notes,
            db=os.fspath(self.db) if self.db is not None else None,
            kept=os.fspath(self.scratch.path) if self.scratch.keep is not None else None,
        )


class _TickPlan:
    """Knows when a full ``Engine.tick()`` has work that ``dispatch()`` alone would not do.

    That is when an anchor is due (the store says so through its ``(status, fire_at)`` index),
    when a cron slot came due in any timezone a schedule runs in, when a contact brought a
    timezone not seen before (the scheduler starts that zone's clock at its next tick), and
    at least once a simulated day, as a safety net. Slots are computed the way the scheduler
    computes them (APScheduler's ``CronTrigger``), but each trigger is built once and each
    slot computed once, when the previous one has passed, rather than at every step.
    """

    def __init__(self, engine: Engine, tick: Callable[[], Any], timed: list[Any]) -> None:
        self.engine, self.tick = engine, tick
        self.schedules: list[tuple[str, str, str]] = []  # (rule key, expression, zone|contact)
        for compiled in timed:
            expression = getattr(compiled.rule.when, "schedule", None)
            if expression is not None:
                key = f"{compiled.ruleset}/{compiled.id}"
                self.schedules.append((key, expression, compiled.rule.when.timezone))
        self.by_contact_zone = any(zone == "contact" for _, _, zone in self.schedules)
        self.zones: set[str] = set()
        if self.by_contact_zone:  # a copied store's contacts bring their timezones along
            conn = engine.store.conn  # type: ignore[attr-defined]
            self.zones.update(
                row[0] for row in conn.execute("SELECT DISTINCT timezone FROM contacts")
            )
        self.new_zone = True
        self.next_slots: dict[tuple[str, str], datetime] = {}  # (expression, zone) -> slot
        self.last_schedules: datetime | None = None  # the last full tick
        self.triggers: dict[tuple[str, str], Any] = {}

    def full_tick_due(self, now: datetime) -> bool:
        """Whether ``dispatch()`` alone would leave something due undone at ``now``."""
        return self.schedules_due(now) or self.anchor_due(now)

    def schedules_due(self, now: datetime) -> bool:
        """Whether the schedules' part of a tick has work: a slot, a new zone, or a day gone."""
        last = self.last_schedules
        if last is None or self.new_zone or now - last >= timedelta(days=1):
            return True
        return self.slot_due(now)

    def upcoming_slot(self) -> datetime | None:
        """The earliest slot not run yet, over every schedule and timezone."""
        return min(self.next_slots.values()) if self.next_slots else None

    def slot_due(self, now: datetime) -> bool:
        slot = self.upcoming_slot()
        return slot is not None and slot <= now

    def run(self, now: datetime) -> tuple[Any, str]:
        """``Engine.tick()``; or, when only anchors are due, what it does less the schedules.

        The schedules' part of a tick costs a slot computation per rule and timezone even when
        no slot is due; leaving it out then changes nothing (the slots it would find are those
        ``slot_due`` looks for), and a test checks that the results are the same.
        """
        if self.schedules_due(now):
            report, kind = self.tick(), "full_ticks"
            self.last_schedules = now
        else:
            report, kind = self.engine.tick(schedules=False), "anchor_sweeps"
        self.ticked(now)
        return report, kind

    def anchor_due(self, now: datetime) -> bool:
        due = getattr(self.engine.store.read(), "due_anchors", None)
        return bool(due and due(utc_text(now), 1))

    def ingested(self, batch: list[Event]) -> None:
        """Note the timezones of the contacts a batch touched: a new one needs a full tick."""
        if not self.by_contact_zone:
            return
        ids = json.dumps(sorted({event.contact_id for event in batch}))
        rows = self.engine.store.conn.execute(  # type: ignore[attr-defined]
            "SELECT DISTINCT timezone FROM contacts WHERE id IN (SELECT value FROM json_each(?))",
            [ids],
        )
        for (zone,) in rows:
            if zone not in self.zones:
                self.zones.add(zone)
                self.new_zone = True

    def ticked(self, now: datetime) -> None:
        """After a tick at ``now``: move on every schedule's next slot that it has passed."""
        self.new_zone = False
        for _, expression, zone in self.schedules:
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
        slot = trigger.get_next_fire_time(None, after + _ONE_TICK)
        return None if slot is None else slot.astimezone(UTC)


def _timed_rules(engine: Engine) -> list[Any]:
    """The rules only a scheduler runs: before/after a date, and cron schedules."""
    book = engine.rulebook
    return [
        *getattr(book, "relative", ()),
        *getattr(book, "scheduled", ()),
        *getattr(book, "timed", ()),
    ]


def _step_notes(timed: list[Any], step: timedelta) -> list[str]:
    """Where the step is too coarse to be exact, and what to do about it.

    Schedules are exact whatever the step (the clock stops at each slot), but an anchor runs
    at the first step at or after its fire time, so a ``stale_after`` shorter than the step
    could make the engine skip it as stale, which a live engine, ticking every few seconds,
    would not do.
    """
    from .models import duration_to_timedelta

    notes = []
    for compiled in timed:
        when = compiled.rule.when
        stale = getattr(when, "stale_after", None)
        is_anchor = getattr(when, "schedule", None) is None
        if is_anchor and stale is not None and duration_to_timedelta(stale) < step:
            notes.append(
                f"{compiled.ruleset}/{compiled.id} skips fire times older than "
                f"{duration_to_timedelta(stale)}, less than the step ({step}): some fires "
                "may be skipped as stale; use a smaller --step"
            )
    return notes


def _high_water(engine: Engine) -> tuple[int, int]:
    """The newest trace id and outbox seq before the run: what a copied store already held."""
    conn = engine.store.conn  # type: ignore[attr-defined]
    trace = conn.execute("SELECT coalesce(max(id), 0) FROM traces").fetchone()[0]
    outbox = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
    return trace, outbox


def _ordered_statuses(counts: Mapping[str, int]) -> dict[str, int]:
    rank = {name: n for n, name in enumerate(_STATUS_ORDER)}
    return dict(sorted(counts.items(), key=lambda item: (rank.get(item[0], 99), item[0])))


def _rules(engine: Engine) -> dict[str, tuple[str, str, Rule | None]]:
    found: dict[str, tuple[str, str, Rule | None]] = {}
    for (ruleset, rule_id), compiled in engine.rulebook.rules.items():
        found[f"{ruleset}/{rule_id}"] = (ruleset, rule_id, compiled.rule)
    for (ruleset, rule_id), rule in engine.rulebook.disabled.items():
        found[f"{ruleset}/{rule_id}"] = (ruleset, rule_id, rule)
    return found


def _rule_entry(
    ruleset: str, rule_id: str, rule: Rule | None, *, enabled: bool | None = None
) -> dict[str, Any]:
    definition = None
    if rule is not None:
        dumped = rule.model_dump(mode="json", by_alias=True, exclude_none=True)
        definition = hashlib.sha256(
            json.dumps(dumped, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:16]
    return {
        "ruleset": ruleset,
        "rule": rule_id,
        "trigger": _trigger_text(rule) if rule is not None else "",
        "enabled": rule.enabled if rule is not None else bool(enabled),
        "definition": definition,
        "fired": 0,
        "contacts": 0,
        "blocked": 0,
        "errors": 0,
        "by_week": {},
        "actions": {},
        "actions_by_week": {},
    }


def _trigger_text(rule: Rule) -> str:
    when = rule.when
    if isinstance(when, EventTrigger):
        return f"{when.event} event" + (" (filtered)" if when.where else "")
    if isinstance(when, StageTrigger):
        change = when.stage_changed
        return f"stage change {change.from_ or 'any'} -> {change.to or 'any'}"
    schedule = getattr(when, "schedule", None)
    if schedule is not None:
        return f"schedule {schedule} ({getattr(when, 'timezone', 'UTC')})"
    days, hours = getattr(when, "days", 0), getattr(when, "hours", 0)
    span = " ".join(
        part for part in (f"{days}d" if days else "", f"{hours}h" if hours else "") if part
    )
    before = getattr(when, "before", None)
    if before is not None:
        return f"{span or '0d'} before {before}"
    return f"{span or '0d'} after {getattr(when, 'after', '?')}"


# -- compare ---------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Two versions of the rulesets over the same history: what changes, rule by rule.

    ``rules`` holds one dict per rule of either version, those that behave differently first
    (largest change first): ``status`` (``added``, ``removed``, ``differs``, ``same``),
    ``definition`` (``modified``, ``unchanged``, ``added``, ``removed``), fires and contacts on
    each side, ``delta``, ``by_week`` (``{week: {"old": n, "new": m}}``), and the contacts
    treated differently: ``only_old`` (the rule fired for them with the old rulesets only),
    ``only_new``, and ``count_changed`` (fired on both sides, a different number of times).
    """

    old: SimulationResult
    new: SimulationResult
    rules: list[dict[str, Any]]
    rulesets: list[dict[str, Any]]

    @property
    def contacts_affected(self) -> set[str]:
        """Every contact that at least one rule treats differently."""
        found: set[str] = set()
        for rule in self.rules:
            found.update(rule["only_old"], rule["only_new"], rule["count_changed"])
        return found

    def summary(self) -> dict[str, int]:
        counts = Counter(rule["status"] for rule in self.rules)
        return {
            "rules_differ": counts["differs"],
            "rules_same": counts["same"],
            "rules_added": counts["added"],
            "rules_removed": counts["removed"],
            "contacts_affected": len(self.contacts_affected),
            "fired_old": self.old.fired,
            "fired_new": self.new.fired,
        }

    def as_dict(self, *, limit: int | None = None) -> dict[str, Any]:
        """JSON-able; ``limit`` caps each contact list (``None``: every id)."""
        rules = []
        for rule in self.rules:
            shown = dict(rule)
            for key in ("only_old", "only_new", "count_changed"):
                shown[f"{key}_count"] = len(rule[key])
                shown[key] = rule[key] if limit is None else rule[key][:limit]
            rules.append(shown)
        actions = sorted(set(self.old.actions) | set(self.new.actions))
        return {
            "from": self.old.as_dict(contacts=False)["from"],
            "to": self.old.as_dict(contacts=False)["to"],
            "summary": self.summary(),
            "rulesets": self.rulesets,
            "actions": {
                status: {
                    "old": self.old.actions.get(status, 0),
                    "new": self.new.actions.get(status, 0),
                }
                for status in actions
            },
            "weeks": self.old.weeks,
            "partial_weeks": self.old.partial_weeks,
            "rules": rules,
            "old": self.old.as_dict(contacts=False),
            "new": self.new.as_dict(contacts=False),
        }


def compare(
    old: RulesetPaths,
    new: RulesetPaths,
    events: Any,
    *,
    start: datetime,
    end: datetime,
    db: str | os.PathLike[str] | None = None,
    step: timedelta = timedelta(hours=1),
    keep: str | os.PathLike[str] | None = None,
    progress: Callable[[str, datetime], None] | None = None,
) -> Comparison:
    """Simulate ``old`` and ``new`` rulesets over the same history, each in its own scratch
    store, and say per rule what differs. Both are validated before either runs, and the
    history is read once. ``keep`` leaves ``old.db`` and ``new.db`` in that directory."""
    start, end = _aware(start), _aware(end)
    _check_window(start, end)
    _check_step(step)
    old_paths, new_paths = _paths(old), _paths(new)
    _validate(old_paths)
    _validate(new_paths)
    history = _history(events)
    results = []
    for side, paths in (("old", old_paths), ("new", new_paths)):
        report = None if progress is None else (lambda at, side=side: progress(side, at))
        with _Scratch(keep, f"{side}.db") as scratch:
            replay = _Replay(paths, history, start, end, step, db, scratch, report)
            results.append(replay.run())
    return _diff(*results)


def _diff(old: SimulationResult, new: SimulationResult) -> Comparison:
    rules = []
    for key in sorted(set(old.per_rule) | set(new.per_rule)):
        before, after = old.per_rule.get(key), new.per_rule.get(key)
        old_ids = old.contacts_by_rule.get(key, set())
        new_ids = new.contacts_by_rule.get(key, set())
        old_fires = old.fires_by_contact.get(key, Counter())
        new_fires = new.fires_by_contact.get(key, Counter())
        fired_old = before["fired"] if before else 0
        fired_new = after["fired"] if after else 0
        if before is None:
            status = definition = "added"
        elif after is None:
            status = definition = "removed"
        else:
            definition = "unchanged" if before["definition"] == after["definition"] else "modified"
            same = old_fires == new_fires and before["actions"] == after["actions"]
            status = "same" if same else "differs"
        weeks: dict[str, dict[str, int]] = {}
        for week in old.weeks:
            pair = {
                "old": before["by_week"].get(week, 0) if before else 0,
                "new": after["by_week"].get(week, 0) if after else 0,
            }
            if pair["old"] or pair["new"]:
                weeks[week] = pair
        rules.append(
            {
                "rule": key,
                "status": status,
                "definition": definition,
                "trigger": (after or before or {}).get("trigger", ""),
                "enabled": {
                    "old": before["enabled"] if before else None,
                    "new": after["enabled"] if after else None,
                },
                "fired": {"old": fired_old, "new": fired_new},
                "delta": fired_new - fired_old,
                "delta_pct": (
                    round(100 * (fired_new - fired_old) / fired_old, 1) if fired_old else None
                ),
                "contacts": {"old": len(old_ids), "new": len(new_ids)},
                "actions": {
                    "old": before["actions"] if before else {},
                    "new": after["actions"] if after else {},
                },
                "by_week": weeks,
                "only_old": sorted(old_ids - new_ids),
                "only_new": sorted(new_ids - old_ids),
                "count_changed": sorted(
                    cid for cid in old_ids & new_ids if old_fires[cid] != new_fires[cid]
                ),
            }
        )
    order = {"removed": 0, "added": 1, "differs": 2, "same": 3}
    rules.sort(key=lambda r: (order[r["status"]], -abs(r["delta"]), r["rule"]))
    return Comparison(old, new, rules, _ruleset_changes(old.rulesets, new.rulesets))


def _ruleset_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ruleset name: versions and whether the content changed (and if the version did not)."""
    before = {r["ruleset"]: r for r in old}
    after = {r["ruleset"]: r for r in new}
    changes = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None or b is None:
            state = "added" if a is None else "removed"
        elif a["content_hash"] == b["content_hash"]:
            state = "same"
        else:
            state = "changed"
        changes.append(
            {
                "ruleset": name,
                "state": state,
                "old_version": a["version"] if a else None,
                "new_version": b["version"] if b else None,
                "version_not_bumped": bool(
                    state == "changed" and a and b and a["version"] >= b["version"]
                ),
            }
        )
    return changes
