"""``clm tick`` and ``clm run``: time-driven work, once or for as long as it takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.progress import Progress

from ..engine import Engine
from ..errors import RulesetError
from ..models import utc_text
from ..scheduling import run_forever
from ..timed import TimeReport
from . import cli
from .common import (
    console,
    db_option,
    errors,
    json_option,
    open_engine,
    print_dispatch,
    print_json,
    rulesets_option,
)
from .virtual_time import record_virtual_time, use_virtual_clock, virtual_clock_options


def print_time_report(report: TimeReport) -> None:
    console.print(
        f"anchors: {report.anchors_fired:,} fired, {report.anchors_not_matched:,} did not match, "
        f"{report.anchors_skipped:,} skipped; schedules: {report.slots_run:,} slots run over "
        f"{report.contacts_evaluated:,} contacts, {report.slots_skipped:,} skipped or coalesced; "
        f"{report.enqueued:,} actions enqueued",
        soft_wrap=True,
    )
    for note in report.notes[:10]:
        errors.print(f"  {note}", markup=False)
    print_dispatch(report.dispatched)


@cli.command()
@db_option
@rulesets_option
@json_option
def tick(db_path: Path, ruleset_paths: tuple[Path, ...], as_json: bool) -> None:
    """Run everything that is due now, once, and exit (for your own cron, or a request cycle).

    Dates that came up (relative-time rules), schedule slots that came due, and due actions.
    What fell due while nothing ran is caught up once; what is older than a rule's stale_after
    is skipped and recorded.
    """
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        show = not as_json and console.is_terminal and bool(engine.rulebook.scheduled)
        with Progress(console=errors, disable=not show, transient=True) as progress:
            total = engine.store.count_contacts()
            task = progress.add_task("schedules", total=total * len(engine.rulebook.scheduled))
            report = engine.tick(progress=lambda n: progress.advance(task, n))
    if as_json:
        print_json(report.as_dict())
    else:
        print_time_report(report)


@cli.command()
@db_option
@rulesets_option
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.05),
    help="Seconds between pumps.",
)
@click.option(
    "--lease",
    default=300.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds an external action (an email) may take before another worker may run it "
    "again: longer than any send can take.",
)
@click.option(
    "--record-every",
    default=16,
    show_default=True,
    envvar="CLM_RECORD_EVERY",
    type=click.IntRange(1),
    help="Write external actions' outcomes every N sends (or $CLM_RECORD_EVERY): the most "
    "sends a crash can repeat. 1 writes each send on its own (slower).",
)
@virtual_clock_options
def run(
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    interval: float,
    lease: float,
    record_every: int,
    clock: str,
    speed: float | None,
    start: datetime | None,
    allow_production: bool,
) -> None:
    """Run the engine until stopped (SIGTERM or Ctrl-C): pumps due work every few seconds.

    Schedules run on their slots; delayed actions and dates that come up run as they fall due;
    changed ruleset files are reloaded (an invalid change keeps the last valid rulesets and
    says so). Safe to run twice on one database: nothing is done twice.

    For test environments, --clock virtual --speed N runs it on a clock N times as fast as
    the wall clock (real sends: a week of drips in seconds); it refuses a production database
    (docs/operations.md, "Live testing on a virtual clock").
    """
    engine = _start(db_path, ruleset_paths)
    engine.lease = timedelta(seconds=lease)
    engine.record_every = record_every
    try:
        virtual = use_virtual_clock(engine, clock, speed, start, allow_production)
    except BaseException:
        engine.close()
        raise

    def on_tick(report: TimeReport) -> None:
        if virtual is not None:
            record_virtual_time(engine)
        busy = report.dispatched.total or report.anchors_fired or report.slots_run
        if busy:
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            if virtual is not None:
                stamp += f" (virtual {utc_text(engine.clock.now())[:16].replace('T', ' ')})"
            outcomes = ", ".join(
                f"{n:,} {k}" for k, n in sorted(report.dispatched.outcomes.items())
            )
            console.print(
                f"{stamp} anchors {report.anchors_fired}, slots {report.slots_run}, "
                f"actions: {outcomes or 'none'}",
                soft_wrap=True,
            )

    def on_reload(ok: bool, message: str) -> None:
        (console if ok else errors).print(message, markup=False)
        _say_rulesets(engine, None if ok else message)

    rules = len(engine.rulebook.rules)
    console.print(f"clm run: {db_path}, {rules} rules, pump every {interval:g}s (Ctrl-C stops)")
    if virtual is not None:
        console.print(virtual, markup=False)
    try:
        run_forever(engine, interval=interval, on_tick=on_tick, on_reload=on_reload)
    finally:
        try:
            if virtual is not None:  # where it stopped, not where the last pump ended:
                record_virtual_time(engine)  # a send may have gone out since
        finally:
            engine.close()
            console.print("clm run: stopped")


def _start(db_path: Path, ruleset_paths: tuple[Path, ...]) -> Engine:
    """The engine ``clm run`` runs: on the given rulesets or, when they are invalid, on the
    last valid set this database loaded (a restart must not stop automation), said loudly
    and recorded for ``clm status``."""
    try:
        engine = open_engine(db_path, must_exist=False, rulesets=ruleset_paths)
    except RulesetError as error:
        engine = open_engine(db_path, must_exist=False)
        try:
            last = engine.load_last_good(list(ruleset_paths))
        except RulesetError:
            engine.close()
            raise error from None  # nothing to fall back on: the problems, as they are
        names = ", ".join(f"{name} v{version}" for name, version in last["summary"])
        errors.print(
            f"clm run: THE RULESETS ARE INVALID; running on the last valid set, loaded "
            f"{last['last_loaded_at'][:19]}Z ({names}). Fix these and they load by themselves:"
            f"\n{error}",
            markup=False,
        )
        _say_rulesets(engine, str(error))
        return engine
    _say_rulesets(engine, None)
    return engine


def _say_rulesets(engine: Engine, problems: str | None) -> None:
    """Record, for ``clm status``, which rulesets run and whether the folder is valid."""
    loaded = [[r.ruleset.ruleset, r.ruleset.version] for r in engine.rulebook.rulesets]
    engine.record_status(
        "rulesets",
        {
            "valid": problems is None,
            "problems": problems,
            "paths": engine.ruleset_paths,
            "running": loaded,
        },
    )
