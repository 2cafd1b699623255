"""APScheduler 3.x wiring: the pumps that drive clm-engine on the real clock.

APScheduler holds no per-contact state here. It runs a few fixed jobs, rebuilt from the loaded
rulesets at every start with stable ids: a pump that calls ``Engine.tick()`` every few
seconds (due anchors, schedule slots, due actions), one job per cron rule so its slot runs on
time rather than at the next pump, and a watcher that reloads changed ruleset files (it
validates them in a thread of its own; only the swap runs in the worker). Every job
has ``coalesce=True``, ``max_instances=1`` and ``misfire_grace_time=None``: measured with
APScheduler 3.11, the default grace of 1 s silently dropped jobs that fell due during a short
restart. What is due lives in the store (outbox rows, anchors, schedule slots), so a restart
loses nothing and a pump can always catch up; and because every step claims its work in a
``BEGIN IMMEDIATE`` transaction, two processes on one database never run the same thing twice.

Nothing here starts on import: ``background(engine)`` returns a scheduler the host starts and
stops; ``run_forever(engine)`` is what ``clm run`` does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .errors import RulesetError

if TYPE_CHECKING:
    from .engine import Engine, PreparedRulesets
    from .models import ScheduleTrigger
    from .timed import TimeReport

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
PUMP_ID = "clm:pump"
RELOAD_ID = "clm:reload-rulesets"
SWAP_ID = "clm:use-rulesets"


def _new(kind: type[BaseScheduler]) -> BaseScheduler:
    # One worker thread: the engine's jobs never overlap, so they share its connection safely.
    return kind(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults=JOB_DEFAULTS,
    )


def install_jobs(
    engine: Engine,
    scheduler: BaseScheduler,
    *,
    interval: float = 5.0,
    on_tick: Callable[[TimeReport], Any] | None = None,
) -> list[str]:
    """(Re)build the engine's jobs on ``scheduler`` from the loaded rulesets; their ids.

    Schedule jobs of rules that are gone are removed; the others are replaced in place.
    """

    def pump() -> None:
        report = engine.tick()
        if on_tick is not None:
            on_tick(report)

    wanted = {PUMP_ID}
    scheduler.add_job(
        pump,
        IntervalTrigger(seconds=interval),
        id=PUMP_ID,
        replace_existing=True,
        # The scheduler runs on the wall clock, whatever the engine's (a virtual clock of
        # ``clm run --clock virtual`` may be days ahead): the first pump is now.
        next_run_time=datetime.now(UTC),
    )
    for rule in engine.rulebook.scheduled:
        when: ScheduleTrigger = rule.rule.when  # type: ignore[assignment]  # all cron rules
        if when.timezone == "contact":
            continue  # one slot per contact timezone: the pump runs each as it comes
        job_id = f"clm:schedule:{rule.ruleset}/{rule.id}"
        trigger = CronTrigger.from_crontab(when.schedule, timezone=ZoneInfo(when.timezone))
        scheduler.add_job(pump, trigger, id=job_id, replace_existing=True)
        wanted.add(job_id)
    for job in scheduler.get_jobs():
        if job.id.startswith("clm:schedule:") and job.id not in wanted:
            job.remove()
    return sorted(wanted)


def watch_rulesets(
    engine: Engine,
    scheduler: BaseScheduler,
    *,
    every: float = 10.0,
    interval: float = 5.0,
    on_tick: Callable[[TimeReport], Any] | None = None,
    on_reload: Callable[[bool, str], Any] | None = None,
) -> None:
    """Reload the rulesets when their files change (an invalid change keeps the last valid).

    Validating a changed folder (reading, checking, rendering every email template) runs in a
    thread of its own, never in the scheduler's one worker, so the pumps keep their pace
    however slow that is. Only the swap runs in the worker, as a job between pumps: quick,
    and atomic for them. One validation at a time; a change made meanwhile is picked up by
    the next check.
    """
    seen = [_fingerprint(engine)]
    validating: list[threading.Thread] = []

    def check() -> None:  # in the worker: only looks at file times and sizes
        if validating and validating[0].is_alive():
            return
        current = _fingerprint(engine)
        if current == seen[0]:
            return
        seen[0] = current
        thread = threading.Thread(
            target=validate, args=(engine.ruleset_paths,), name="clm-validate-rulesets", daemon=True
        )
        validating[:] = [thread]
        thread.start()

    def validate(paths: list[str]) -> None:  # its own thread: touches no store, no engine state
        try:
            prepared = engine.prepare_rulesets(paths)
        except RulesetError as error:
            message = f"kept the last valid rulesets; the new ones are invalid:\n{error}"
            _in_worker(scheduler, done, False, message)
        except Exception as error:  # a plugin's check that broke: still keep the last valid
            _in_worker(scheduler, done, False, f"kept the last valid rulesets: {error!r}")
        else:
            _in_worker(scheduler, use, prepared)

    def use(prepared: PreparedRulesets) -> None:  # in the worker, between pumps
        warnings = engine.use_rulesets(prepared)
        install_jobs(engine, scheduler, interval=interval, on_tick=on_tick)
        loaded = ", ".join(
            f"{r.ruleset.ruleset} v{r.ruleset.version}" for r in engine.rulebook.rulesets
        )
        done(True, "\n".join([f"loaded {loaded}", *warnings]))

    def done(ok: bool, message: str) -> None:
        if on_reload is not None:
            on_reload(ok, message)

    scheduler.add_job(check, IntervalTrigger(seconds=every), id=RELOAD_ID, replace_existing=True)


def _in_worker(scheduler: BaseScheduler, job: Callable[..., Any], *args: Any) -> None:
    """Run ``job`` once, now, in the scheduler's worker (where the engine's work runs)."""
    with contextlib.suppress(SchedulerNotRunningError):
        scheduler.add_job(job, args=args, id=SWAP_ID, replace_existing=True)


def _fingerprint(engine: Engine) -> tuple[tuple[str, int, int], ...]:
    files: list[tuple[str, int, int]] = []
    for path in engine.ruleset_paths:
        root = Path(path)
        candidates = sorted(root.rglob("*.json")) if root.is_dir() else [root]
        for file in candidates:
            try:
                stat = file.stat()
            except OSError:
                continue
            files.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(files)


def background(engine: Engine, *, interval: float = 5.0) -> BackgroundScheduler:
    """A BackgroundScheduler with the engine's jobs, not started: the host calls ``start()``
    and ``shutdown()`` (the library form of ``clm run``)."""
    scheduler = _new(BackgroundScheduler)
    install_jobs(engine, scheduler, interval=interval)
    return scheduler


def _quiet_skips() -> None:
    """A pump still busy when the next is due is skipped by design (max_instances=1): say
    nothing about it; job errors are still logged."""
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)


def run_forever(
    engine: Engine,
    *,
    interval: float = 5.0,
    on_tick: Callable[[TimeReport], Any] | None = None,
    on_reload: Callable[[bool, str], Any] | None = None,
) -> None:
    """``clm run``: pump until SIGTERM or SIGINT, then finish the job at hand and stop."""
    _quiet_skips()
    scheduler = _new(BlockingScheduler)
    install_jobs(engine, scheduler, interval=interval, on_tick=on_tick)
    watch_rulesets(engine, scheduler, interval=interval, on_tick=on_tick, on_reload=on_reload)

    def stop(signum: int, frame: Any) -> None:
        # Wait for the job at hand: the engine's connection is closed right after, and closing
        # it under a running job would crash the process instead of stopping it cleanly.
        if scheduler.running:
            scheduler.shutdown(wait=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    scheduler.start()
