"""One writer per process: every write of ``clm serve`` goes through one thread.

Why: SQLite has one writer at a time anyway. A single thread that owns the writing engine
turns the requests that arrive together into one transaction (group commit: a request waits
for the batch it joined, and is answered only once that batch is committed), keeps the
asyncio loop free while SQLite works, and means no two threads of a worker ever contend for
the write lock. Between worker processes, ``BEGIN IMMEDIATE`` under the store's busy timeout
queues the writers; should a writer still find the database locked (a very long transaction
elsewhere), the batch is retried with backoff for ``retry_for`` seconds before its requests
are answered 503 (and may be resent: every event id is an idempotency key).

On a store with concurrent writers (PostgreSQL) the workers' transactions run side by side,
each holding only its contacts: there a group commit stops at ``group_size`` events, so
that a transaction locks its contacts one by one instead of whole buckets of them (which a
transaction naming many contacts takes, ``PostgresTransaction.lock_contacts``) and does not
make the other workers wait.

A batch that fails for any other reason is retried one request at a time, so that one bad
request cannot fail the requests that happened to share its transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..engine import Engine, IngestResult
from ..errors import StoreError
from ..models import Event

log = logging.getLogger("clm.http")


#: Events per group commit on a store with one writer at a time (SQLite): many, since the
#: writers queue anyway and a commit's cost is shared by more requests. On a store with
#: concurrent writers (PostgreSQL) a group holds at most the contacts that store locks one by
#: one (``clm_engine.store.postgres.FEW_CONTACTS``): see ``group_size``.
SERIAL_GROUP = 5000


def group_size(engine: Engine) -> int:
    """The most events one group commit of ``engine``'s writer takes."""
    if not engine.store.concurrent_writers:
        return SERIAL_GROUP
    from ..store.postgres import FEW_CONTACTS  # the only store with concurrent writers

    return FEW_CONTACTS


@dataclass
class Outcome:
    """What became of one event of a request."""

    status: str  # ingested / duplicate / failed
    reason: str | None = None


@dataclass
class _Job:
    events: list[Event] | None  # None: ``call`` is the work
    future: Future[Any] = field(default_factory=Future)
    call: Callable[[Engine], Any] | None = None


class Unavailable(Exception):
    """The database stayed locked for longer than the writer retries: answer 503."""


class Writer:
    """The thread that owns ``engine`` and runs every write of this process."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_events: int | None = None,
        retry_for: float = 60.0,
        pump_interval: float | None = None,
        on_result: Callable[[IngestResult], None] | None = None,
        on_tick: Callable[[Any], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_events = group_size(engine) if max_events is None else max_events
        self.retry_for = retry_for
        self.pump_interval = pump_interval
        self.on_result = on_result
        self.on_tick = on_tick
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="clm-writer", daemon=True)
        self.batches = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def stop(self) -> None:
        """Finish what was submitted, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def submit(self, events: list[Event]) -> Future[list[Outcome]]:
        """Ingest ``events``; the future's result is each one's outcome, in order, once
        committed (or :class:`Unavailable` / the error that stopped it)."""
        job = _Job(events)
        self._queue.put(job)
        return job.future

    def call(self, work: Callable[[Engine], Any]) -> Future[Any]:
        """Run ``work(engine)`` on the writer thread (a ruleset swap), between batches."""
        job = _Job(None, call=work)
        self._queue.put(job)
        return job.future

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        next_pump = time.monotonic() + (self.pump_interval or 0)
        while True:
            timeout = None
            if self.pump_interval:
                timeout = max(0.0, next_pump - time.monotonic())
            try:
                job = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._pump()
                next_pump = time.monotonic() + (self.pump_interval or 0)
                continue
            if job is None:
                return
            if job.call is not None:
                self._settle(job, job.call)
                continue
            jobs = [job]
            size = len(job.events or ())
            stop = False
            while size < self.max_events:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if more.call is not None:
                    self._ingest(jobs)
                    jobs = []
                    size = 0
                    self._settle(more, more.call)
                    continue
                if jobs and size + len(more.events or ()) > self.max_events:
                    self._ingest(jobs)  # full: ``more`` starts the next group
                    jobs, size = [], 0
                jobs.append(more)
                size += len(more.events or ())
            if jobs:
                self._ingest(jobs)
            if stop:
                return

    def _settle(self, job: _Job, work: Callable[[Engine], Any]) -> None:
        try:
            job.future.set_result(work(self.engine))
        except BaseException as error:
            job.future.set_exception(error)

    def _pump(self) -> None:
        try:
            report = self.engine.tick()
        except Exception:
            log.exception("the pump failed; it runs again at the next interval")
            return
        if self.on_tick is not None:
            self.on_tick(report)

    def _ingest(self, jobs: list[_Job]) -> None:
        events = [e for job in jobs for e in job.events or ()]
        try:
            result = self._with_retries(events)
        except Unavailable as error:
            for job in jobs:
                job.future.set_exception(error)
            return
        except Exception as error:
            if len(jobs) == 1:
                log.exception("ingesting a request failed")
                jobs[0].future.set_exception(error)
                return
            for job in jobs:  # one at a time: only the culprit fails
                self._ingest([job])
            return
        self.batches += 1
        if self.on_result is not None:
            self.on_result(result)
        outcomes = outcomes_of(events, result)
        start = 0
        for job in jobs:
            count = len(job.events or ())
            job.future.set_result(outcomes[start : start + count])
            start += count

    def _with_retries(self, events: list[Event]) -> IngestResult:
        deadline = time.monotonic() + self.retry_for
        delay = 0.01
        while True:
            try:
                return self.engine.ingest_many(events)
            except StoreError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                if time.monotonic() + delay > deadline:
                    raise Unavailable(str(error)) from None
                log.warning("the database is locked; retrying in %.2fs", delay)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)


def outcomes_of(events: Sequence[Event], result: IngestResult) -> list[Outcome]:
    """Each event's outcome from one ``ingest_many`` over ``events``: a repeat of an id within
    the batch is a duplicate of its first occurrence."""
    failed = {f.event.id: f"reducer {f.reducer} failed: {f.error}" for f in result.failed}
    seen: set[str] = set()
    outcomes = []
    for event in events:
        event_id = event.id or ""
        if event_id in seen or event_id in result.duplicate_ids:
            outcomes.append(Outcome("duplicate"))
        elif event_id in failed:
            outcomes.append(Outcome("failed", failed[event_id]))
        else:
            outcomes.append(Outcome("ingested"))
        seen.add(event_id)
    return outcomes
