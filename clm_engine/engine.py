"""The engine: events in; contact state, decisions and actions out; time; dispatch.

Ingestion is the one path every change takes:

1. **Parse**: each event is validated against the fixed event shape; a bad one is rejected
   with a message naming the field, and the others go on.
2. **Deduplicate**: the event id is the idempotency key. Inside one write transaction the
   engine drops events already stored, so a replayed event changes nothing.
3. **Fold and decide** (``folding.py``): reducers fold each new event into its contact, oldest
   first; the rules it triggers are judged on the contact as of that event, and the internal
   actions they decide that are due at once run inline, before the next event is judged. An
   event older than the newest one already applied makes the engine fold that contact's
   whole history again and re-judge the events from the late one on.
4. **Write**: events, contacts, stage transitions, outbox rows, traces and failures are
   written in the same transaction. A reducer that raises drops its event from the batch,
   leaves its contact as if the event had never come, and is recorded with its reason; the
   rest of the batch lands.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import secrets
import socket
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .action_history import timeline
from .clock import Clock, SystemClock
from .conditions.checker import Conditions
from .dispatch import Claim, Dispatcher, DispatchReport
from .erasure import ErasureReport
from .errors import EventError, ReducerError, RulesetError
from .evaluation import Evaluator, FireLog
from .folding import fold_contact
from .models import DEFAULT_STAGES, Contact, Event, describe_validation_error, utc_text
from .registry import Plugins, Registry
from .rules import RuleBook
from .rulesets.loading import Validated
from .store import (
    IngestFailure,
    OutboxRow,
    StageTransition,
    Store,
    StoreTransaction,
    Trace,
    open_store,
    retry_conflicts,
)
from .timed import TimeReport, rebuild_anchors, refresh_anchors, run_schedules, sweep_anchors


@dataclass
class Rejection:
    """An input that is not an event: where it was (0-based position) and what is wrong."""

    position: int
    error: str
    raw: Any = None


@dataclass
class IngestResult:
    """What one call to ``ingest`` / ``ingest_many`` did."""

    ingested: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    failed: list[IngestFailure] = field(default_factory=list)
    enqueued: int = 0  # actions put in the outbox by the rules these events fired
    ran_inline: int = 0  # internal actions run as their events were folded
    retracted: int = 0  # inline decisions a late event's corrected history no longer implies
    #: Ids of events that were already stored (each one a duplicate): how a caller that needs
    #: each event's own outcome (``clm serve``) tells them from the ones that landed.
    duplicate_ids: set[str] = field(default_factory=set)

    def add(self, other: IngestResult) -> None:
        self.ingested += other.ingested
        self.duplicates += other.duplicates
        self.enqueued += other.enqueued
        self.ran_inline += other.ran_inline
        self.retracted += other.retracted
        self.rejected.extend(other.rejected)
        self.failed.extend(other.failed)
        self.duplicate_ids.update(other.duplicate_ids)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "enqueued": self.enqueued,
            "ran_inline": self.ran_inline,
            "retracted": self.retracted,
            "failed": [
                {"event_id": f.event.id, "reducer": f.reducer, "error": f.error}
                for f in self.failed
            ],
        }


def parse_event(item: Event | Mapping[str, Any] | str | bytes) -> Event:
    """An ``Event`` from a model, a mapping or a JSON text; ``EventError`` names what is wrong."""
    if isinstance(item, Event):
        return item
    try:
        if isinstance(item, str | bytes):
            return Event.model_validate_json(item)
        if isinstance(item, Mapping):
            return Event.model_validate(item)
    except ValidationError as error:
        raise EventError(f"invalid event: {describe_validation_error(error)}") from None
    raise EventError(f"invalid event: expected a JSON object, got {type(item).__name__}")


@dataclass(frozen=True)
class PreparedRulesets:
    """Rulesets validated and compiled by ``Engine.prepare_rulesets``, not yet in use."""

    paths: list[str]
    validated: Validated
    book: RuleBook


class Engine:
    """clm-engine as a library: open a store, ingest events, read contacts.

    ``store`` is a path to a SQLite file (created and migrated if needed) or a ``Store``.
    Nothing runs in the background: the host decides when work happens.

    Its plugins are the built-ins, the installed ones (``CLM_LOAD_PLUGINS``) and ``plugins``
    (objects or modules, or ``{name: plugin}``), in a :class:`~clm_engine.registry.Registry`
    of its own; or pass a ``registry`` to share one between engines (a web server's).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] = "clm.db",
        *,
        clock: Clock | None = None,
        stages: Sequence[str] = DEFAULT_STAGES,
        rulesets: Sequence[str | os.PathLike[str]] | None = None,
        max_attempts: int = 5,
        dry_run_external: bool = False,
        migrate: bool = True,
        lease: timedelta = timedelta(minutes=5),
        late_action_limit: timedelta = timedelta(days=3),
        record_every: int = 16,
        plugins: Plugins = (),
        registry: Registry | None = None,
    ) -> None:
        if registry is not None and plugins:
            raise TypeError("give Engine either plugins or a registry, not both")
        #: This engine's plugins and what they register (built-ins, installed, ``plugins``).
        self.registry = registry if registry is not None else Registry(plugins)
        self.clock = clock or SystemClock()
        self.store: Store = (
            open_store(os.fspath(store)) if isinstance(store, str | os.PathLike) else store
        )
        self.stages = tuple(stages)
        self.reducers = self.registry.reducers
        self.handlers = self.registry.event_handlers
        self.operators = self.registry.operators
        self.facts = self.registry.facts
        self.actions = self.registry.actions
        self.action_names = frozenset(self.actions)  # what ctx.enqueue can hand work to
        self.max_attempts = max_attempts
        #: Record actions that reach outside (emails ...) instead of running them: simulations.
        self.dry_run_external = dry_run_external
        #: How long an external action (an email) may run before its row is given to another
        #: worker: longer than any send can take (SMTP timeouts), short enough to recover.
        self.lease = lease
        #: An external action decided on a re-judgement (a late event changed the history)
        #: is skipped, with its reason, if its occurrence is older than this: nobody wants
        #: an email about something that happened months ago.
        self.late_action_limit = late_action_limit
        #: External actions' outcomes are written every this many sends (or every quarter of a
        #: second): a crash between a send and that write repeats at most this many sends.
        self.record_every = record_every
        #: ... or as soon as the oldest unwritten outcome is this many seconds old.
        self.record_within = 0.25
        #: Who this engine is when it claims outbox rows on a store many processes share
        #: (``outbox.worker``): host, process and a random part, unique per engine.
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        #: How many claimed rows one dispatch transaction runs (concurrent stores): a few
        #: dozen, so that the contacts it holds are held briefly, and under PostgreSQL's 64
        #: subtransactions per transaction (each row is one or two savepoints) past which
        #: every other session's snapshots get slower.
        self.dispatch_group = 25
        self.rulebook = RuleBook(stages=self.stages)
        #: Plugins' own conditions (a sequence's exit), judged with this engine's registries.
        self.conditions = Conditions(self.operators, self.facts, self.stages)
        self._evaluator = Evaluator(self.rulebook)
        self._ruleset_paths: list[str] = []
        if migrate:
            self.store.migrate(self.registry.tables)
        if rulesets:
            self.load_rulesets(rulesets)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- ingestion ---------------------------------------------------------------------------

    def ingest(self, event: Event | Mapping[str, Any] | str | bytes) -> IngestResult:
        """Store one event exactly once and fold it into its contact.

        Raises ``EventError`` for a malformed event and ``ReducerError`` when a reducer failed
        (the failure is recorded; the event is not stored and may be ingested again later).
        """
        result = self._ingest_events([parse_event(event)])
        if result.failed:
            failure = result.failed[0]
            raise ReducerError(
                f"event {failure.event.id} was not applied: reducer {failure.reducer} "
                f"failed with {failure.error}"
            )
        return result

    def ingest_many(
        self, events: Iterable[Event | Mapping[str, Any] | str | bytes]
    ) -> IngestResult:
        """Ingest a batch in one transaction: the fast path.

        Malformed events are returned in ``rejected`` (with their position) and events whose
        reducers failed in ``failed``; everything else lands, together.
        """
        parsed: list[Event] = []
        rejected: list[Rejection] = []
        for position, item in enumerate(events):
            try:
                parsed.append(parse_event(item))
            except EventError as error:
                rejected.append(Rejection(position, str(error), item))
        result = self._ingest_events(parsed)
        result.rejected = rejected
        return result

    def _ingest_events(self, events: list[Event]) -> IngestResult:
        unique: dict[str, Event] = {}
        for event in events:
            unique.setdefault(event.id, event)  # type: ignore[arg-type]  # Event.id is set by its validator when missing
        repeated = len(events) - len(unique)

        def attempt() -> IngestResult:  # afresh each time: a conflict rolled it all back
            result = IngestResult(duplicates=repeated)
            if unique:
                with self.store.write(concurrent=True) as tx:
                    self._apply(tx, list(unique.values()), self.clock.now(), 0, result)
            return result

        return retry_conflicts(attempt)

    def _apply(
        self,
        tx: StoreTransaction,
        events: list[Event],
        now: datetime,
        depth: int,
        result: IngestResult,
        origins: Mapping[str, str] | None = None,
        loaded: Mapping[str, str] | None = None,
    ) -> None:
        """Deduplicate, fold, decide and write, inside ``tx``: the heart of ingestion.

        ``events`` have distinct ids. ``depth`` counts the actions that led to these events
        (0 for events from outside), so chains of rules cannot loop forever. ``origins``
        names the decision each event is the effect of, if any (events an action emitted
        about another contact). Each contact is folded by ``folding.fold_contact``: its
        events in time order, each judged on the state it met, internal effects inline.
        """
        # Hold the contacts first (concurrent writers): a contact's events are then checked
        # for duplicates, folded and written by one transaction at a time.
        tx.lock_contacts({event.contact_id for event in events})
        existing = tx.existing_event_ids([event.id for event in events])  # type: ignore[misc]  # Event.id is set by its validator when missing
        result.duplicates += len(existing)
        result.duplicate_ids.update(existing)
        by_contact: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            if event.id not in existing:
                by_contact[event.contact_id].append(event)
        if not by_contact:
            return
        # Contacts in the order their first new event happened, so that an action reading
        # another contact of the batch (a referrer) finds it folded if it came first.
        order = sorted(by_contact, key=lambda c: min(e.occurred_at for e in by_contact[c]))
        # ``loaded``: contacts the caller read in this transaction since the last write to
        # them (the dispatcher's row's contact): one read fewer per dispatched action.
        known = {c: loaded[c] for c in by_contact if c in loaded} if loaded else {}
        stored = known | tx.load_contacts([c for c in by_contact if c not in known])
        log = FireLog(tx)
        if self.rulebook.limited and len(order) > 1:
            log.load(order)  # one read for the batch, before the folds ask contact by contact
        now_text = utc_text(now)
        applied: list[Event] = []
        all_origins: dict[str, str] = dict(origins or {})
        contacts: list[Contact] = []
        transitions: list[StageTransition] = []
        rows: list[dict[str, Any]] = []
        traces: list[Trace] = []
        elsewhere: list[Event] = []
        failures: list[IngestFailure] = []  # this pass's (``result`` may hold an outer one's)
        batch: dict[str, Contact] = {}
        for contact_id in order:
            contact_events = by_contact[contact_id]
            folded = fold_contact(
                self,
                tx,
                log,
                contact_id,
                contact_events,
                stored.get(contact_id),
                depth=depth,
                now=now,
                recorded_at=now_text,
                batch=batch,
            )
            failures.extend(folded.failures)
            if folded.contact is None:
                continue
            folded.contact.updated_at = now
            contacts.append(folded.contact)
            batch[contact_id] = folded.contact
            applied.extend(folded.applied)
            all_origins.update(folded.origins)
            rows.extend(folded.rows)
            traces.extend(folded.traces)
            elsewhere.extend(folded.elsewhere)
            result.ran_inline += folded.ran_inline
            rejudged = folded.rejudged
            if rejudged is None:
                transitions.extend(folded.transitions)
                continue
            tx.replace_transitions(contact_id, folded.transitions)
            tx.delete_events(rejudged.dropped_events)
            tx.delete_traces(contact_id, sorted(rejudged.rules), rejudged.since)
            tx.delete_fires(contact_id, sorted(rejudged.rules), rejudged.since)
            tx.redo_actions(rejudged.redone)
            if rejudged.retracted:
                tx.retract_actions(rejudged.retracted, note=rejudged.why, at=now_text)
            result.retracted += len(rejudged.retracted)
        tx.insert_events(applied, received_at=now_text, origins=all_origins)
        tx.upsert_contacts(contacts, updated_at=now_text)
        tx.add_transitions(transitions)
        result.failed.extend(failures)
        if failures:
            tx.record_failures(failures, failed_at=now_text)
        tx.clear_failures([event.id for event in applied])  # type: ignore[misc]  # Event.id is set by its validator when missing
        result.enqueued += tx.enqueue(rows)
        log.flush()
        tx.add_traces(traces, recorded_at=now_text)
        if self.rulebook.relative:
            moved: dict[str, set[str]] = defaultdict(set)
            for event in applied:
                moved[event.contact_id].add(event.type)
            refresh_anchors(tx, self.rulebook, contacts, moved)
        result.ingested += sum(1 for e in applied if e.id not in all_origins)
        if elsewhere:  # what actions emitted about other contacts: their folds, now
            self._apply(tx, elsewhere, now, depth + 1, result, all_origins)

    # -- rulesets ------------------------------------------------------------------------------

    def load_rulesets(self, paths: Sequence[str | os.PathLike[str]]) -> list[str]:
        """Validate, compile and start using the rulesets at ``paths`` (files or directories).

        Raises ``RulesetError`` listing every problem if any ruleset is invalid: the engine
        never runs a ruleset that failed validation, and keeps the rules it had. Each loaded
        version is recorded in the store with its content hash; returns warnings. Plugin
        documents found in ``paths`` (sequences, catalogues) load with them, all or nothing:
        ``self.documents[kind][name]``.
        """
        return self.use_rulesets(self.prepare_rulesets(paths))

    def prepare_rulesets(self, paths: Sequence[str | os.PathLike[str]]) -> PreparedRulesets:
        """The slow half of :meth:`load_rulesets`: read, validate and compile (email templates
        are rendered for sample contacts). It touches neither the store nor this engine, so it
        may run in another thread while the engine works: ``clm run`` validates a changed
        folder off its pumps. Raises ``RulesetError``."""
        from .rulesets import load_all

        validated = load_all([os.fspath(p) for p in paths], registry=self.registry)
        book = RuleBook.build(
            validated.rulesets,
            actions=self.actions,
            operators=self.operators,
            facts=self.facts,
            documents=validated.by_kind(),
        )
        return PreparedRulesets([os.fspath(p) for p in paths], validated, book)

    def use_rulesets(self, prepared: PreparedRulesets) -> list[str]:
        """The quick half of :meth:`load_rulesets`: record rulesets :meth:`prepare_rulesets`
        validated and start using them; returns warnings. Call it where the engine's work
        runs (its thread): the swap is then atomic for that work."""
        paths, validated, book = prepared.paths, prepared.validated, prepared.book
        loaded = validated.rulesets
        warnings = []
        now_text = utc_text(self.clock.now())
        known = {
            (v["name"], v["version"]): v["content_hash"] for v in self.store.ruleset_versions()
        }
        files = _set_files(paths, [*loaded, *validated.documents])
        with self.store.write() as tx:
            for item in loaded:
                name, version = item.ruleset.ruleset, item.ruleset.version
                if known.get((name, version), item.content_hash) != item.content_hash:
                    warnings.append(
                        f"ruleset {name!r} version {version} changed without a new version "
                        "number; decisions record the content hash, but bump 'version'"
                    )
                tx.record_ruleset(
                    name, version, item.content_hash, item.path, item.source, now_text
                )
            summary = [[r.ruleset.ruleset, r.ruleset.version] for r in loaded]
            tx.record_ruleset_set(_set_hash(files), files, summary, now_text)
        self.rulebook = book
        self.stages = book.stages
        self.conditions = Conditions(self.operators, self.facts, self.stages)
        self._evaluator = Evaluator(book)
        self._ruleset_paths = [os.fspath(p) for p in paths]
        rebuild_anchors(self.store, book, self.clock.now())
        return warnings

    def load_last_good(self, paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
        """Run on the last valid set of rulesets this store loaded, because ``paths`` are
        invalid now (a restart must not stop automation). ``paths`` stay the ones watched and
        reloaded. Returns the set (its hash, summary and when it was loaded); raises
        ``RulesetError`` if this store never loaded a valid set.
        """
        sets = self.store.read().ruleset_sets(limit=1)
        if not sets:
            raise RulesetError("no valid rulesets were ever loaded into this database")
        last = sets[0]
        # Written out in the shape they were loaded from, loaded, then gone: a rule book keeps
        # nothing of its files.
        with tempfile.TemporaryDirectory(prefix="clm-last-good-") as name:
            folder = Path(name)
            for file in last["files"]:
                target = folder / file["name"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(file["source"], encoding="utf-8")
            roots = sorted({file["name"].split("/", 1)[0] for file in last["files"]}, key=int)
            self.load_rulesets([folder / root for root in roots])
        self._ruleset_paths = [os.fspath(p) for p in paths]
        return last

    @property
    def ruleset_paths(self) -> list[str]:
        """The ruleset files and folders this engine loads (and ``clm run`` watches)."""
        return list(self._ruleset_paths)

    def record_status(self, key: str, value: Any) -> None:
        """Say something about this running engine for ``clm status`` (and, later, health)."""
        with self.store.write() as tx:
            tx.set_status(key, value, utc_text(self.clock.now()))

    @property
    def documents(self) -> dict[str, dict[str, Any]]:
        """Plugin documents loaded with the rulesets, by kind and name."""
        return self.rulebook.documents

    def reload_rulesets(self) -> tuple[bool, str]:
        """Load the same paths again. If they are now invalid, keep running the last valid
        version and say so: ``(False, the problems)``; else ``(True, a summary)``."""
        try:
            warnings = self.load_rulesets(self._ruleset_paths)
        except RulesetError as error:
            return False, f"kept the last valid rulesets; the new ones are invalid:\n{error}"
        loaded = ", ".join(
            f"{r.ruleset.ruleset} v{r.ruleset.version}" for r in self.rulebook.rulesets
        )
        return True, "\n".join([f"loaded {loaded}", *warnings])

    # -- dispatch ------------------------------------------------------------------------------

    def dispatch(self, *, limit: int | None = None, batch: int = 200) -> DispatchReport:
        """Run every action that is due now (and those that running them makes due).

        Each batch is one write transaction; each action inside it a savepoint. Returns what
        happened, by outcome: done, skipped, failed, vetoed, deferred, retried, dead, and for
        external actions simulated (dry runs) or lost_lease (a worker recorded too late).
        """
        report = DispatchReport()
        dispatcher = Dispatcher(
            registry=self.registry,
            stages=self.stages,
            apply_events=self._apply_emitted,
            max_attempts=self.max_attempts,
            dry_run_external=self.dry_run_external,
            lease=self.lease,
            documents=self.rulebook.documents,
            late_action_limit=self.late_action_limit,
            conditions=self.conditions,
            record_every=self.record_every,
            record_within=self.record_within,
            rules=self.rulebook.rules,
        )
        if self.store.concurrent_writers:
            return self._dispatch_claimed(dispatcher, report, limit=limit, batch=batch)
        while limit is None or report.total < limit:
            take = batch if limit is None else min(batch, limit - report.total)
            if not self.store.read().due_actions(utc_text(self.clock.now()), 1):
                break  # nothing due: a read, not the write lock (an idle pump, another process)
            with self.store.write() as tx:
                taken, claims = dispatcher.run_batch(tx, self.clock.now(), take, report)
            if claims:  # external actions: run with no lock held, each recorded after
                dispatcher.run_claims(self.store, claims, self.clock.now, report)
            if not taken:
                break
        return report

    def _dispatch_claimed(
        self, dispatcher: Dispatcher, report: DispatchReport, *, limit: int | None, batch: int
    ) -> DispatchReport:
        """Dispatch on a store many workers share, with no leader and no long transaction.

        In rounds of ``dispatch_group`` rows (at most ``batch`` between two looks at what is
        due), each round:

        1. claims the due rows in one short transaction: each gets this worker's id and a
           lease (``FOR UPDATE SKIP LOCKED``: workers claiming at once pass over each other's
           rows, never wait). A worker that dies leaves its rows to come back when the lease
           ends;
        2. runs them in a transaction of its own that holds their contacts and re-takes only
           the rows still this worker's (a lease that ran out gave them to another). Internal
           effects commit with the row marked done, as on SQLite: exactly once;
        3. runs the external actions step 2 claimed with nothing held, as on SQLite, at once:
           a send never waits behind other rounds while its lease runs down.
        """
        while limit is None or report.total < limit:
            take = batch if limit is None else min(batch, limit - report.total)
            now = self.clock.now()
            if not self.store.read().due_actions(utc_text(now), 1):
                break  # nothing due: a read, no write (an idle pump)
            taken = 0
            while taken < take:
                now = self.clock.now()
                lease_until = utc_text(now + self.lease)
                size = min(self.dispatch_group, take - taken)
                rows = retry_conflicts(partial(self._claim, now, size, lease_until))
                if not rows:
                    break  # nothing left due, or all of it claimed by other workers
                taken += len(rows)
                done, claims = retry_conflicts(
                    partial(self._run_held, dispatcher, rows, lease_until)
                )
                report.add(done)
                if claims:  # external actions: run with nothing held, each recorded after
                    dispatcher.run_claims(self.store, claims, self.clock.now, report)
            if not taken:
                break
        return report

    def _claim(self, now: datetime, take: int, lease_until: str) -> list[OutboxRow]:
        """Claim up to ``take`` due rows for this worker, in one short concurrent write."""
        with self.store.write(concurrent=True) as tx:
            return tx.claim_due_actions(
                utc_text(now), take, lease_until=lease_until, worker=self.worker
            )

    def _run_held(
        self, dispatcher: Dispatcher, group: list[OutboxRow], lease_until: str
    ) -> tuple[DispatchReport, list[Claim]]:
        """Run claimed rows still held by this worker, in one concurrent write."""
        report = DispatchReport()  # afresh per attempt: a conflict rolled the last one back
        with self.store.write(concurrent=True) as tx:
            tx.lock_contacts({row.contact_id for row in group})
            held = tx.held_actions(
                [row.seq for row in group], worker=self.worker, lease_until=lease_until
            )
            claims = dispatcher.run_rows(tx, held, self.clock.now(), report)
        return report, claims

    def tick(
        self, *, progress: Callable[[int], None] | None = None, schedules: bool = True
    ) -> TimeReport:
        """Run everything that is due at ``clock.now()``, once, and return what happened.

        Relative-time anchors whose fire time has come, cron slots that came due (missed ones
        coalesce; stale ones are skipped and recorded), then due actions, including those that
        running them makes due. ``clm tick`` and every pump of ``clm run`` call this; so can a
        host application from its own cron or request cycle. ``schedules=False`` leaves the
        cron slots out: a simulation that knows no slot is due saves their computation.
        """
        report = TimeReport()
        for _ in range(10):  # actions may set dates that make anchors due: settle it out
            now = self.clock.now()
            before = (report.anchors_fired, report.anchors_skipped, report.anchors_not_matched)
            sweep_anchors(self.store, self.rulebook, now, report)
            if schedules:
                run_schedules(self.store, self.rulebook, now, report, progress)
            dispatched = self.dispatch()
            report.dispatched.add(dispatched)
            after = (report.anchors_fired, report.anchors_skipped, report.anchors_not_matched)
            if not dispatched.total and after == before:
                break
        return report

    def _apply_emitted(
        self, tx: StoreTransaction, events: list[Event], depth: int, loaded: Mapping[str, str]
    ) -> list[str]:
        """Apply events an action emitted, in the dispatch transaction; failures as text.
        ``loaded``: contacts' stored JSON the dispatcher read in ``tx`` (not read again)."""
        result = IngestResult()
        self._apply(tx, events, self.clock.now(), depth, result, loaded=loaded)
        return [f"{f.event.type}: {f.reducer} failed with {f.error}" for f in result.failed]

    # -- reading and erasing -----------------------------------------------------------------

    def contact(self, contact_id: str) -> Contact | None:
        return self.store.get_contact(contact_id)

    def action_timelines(self, rows: Sequence[OutboxRow]) -> dict[int, list[dict[str, Any]]]:
        """Each outbox row's history by ``seq``: queued, then what the dispatcher did (deferred
        with reason and until when, retried, vetoed, sent...), oldest first; what ``clm
        explain`` and ``clm email queue`` show."""
        steps = self.store.action_history([row.seq for row in rows])
        external = {name for name, spec in self.actions.items() if spec.external}
        return {row.seq: timeline(row, steps.get(row.seq, []), external) for row in rows}

    def forget(
        self,
        contact_id: str,
        *,
        requested_by: str | None = None,
        files: Sequence[str | os.PathLike[str]] = (),
    ) -> ErasureReport:
        """Erase a contact's personal data everywhere (GDPR erasure) and say what went.

        One transaction: the core's rows that are theirs are deleted, every plugin's
        ``forget_contact`` hook erases its own, other contacts' references (a friend's
        ``referred_by``, a ledger's counterpart) are rewritten to a random pseudonym, and no
        table may still mention the contact's id, email or name, or nothing is erased. The
        request is recorded (who, when, counts; no personal data). Then, after the commit,
        the files the plugins named (sent ``.eml`` copies) are removed and the rejects files
        ``clm ingest`` wrote (and ``files``) are rewritten without the contact.
        """
        erasure, report = self.store.forget(
            contact_id,
            also=self.registry.forget_contact,
            erased_at=utc_text(self.clock.now()),
            requested_by=requested_by or _operator(),
            files=files,
        )
        erasure.apply_files(report)
        return report

    def record_rejects_file(self, path: str | os.PathLike[str]) -> None:
        """Remember a rejects file that holds events' text, so an erasure scrubs it."""
        self.store.record_rejects_file(str(Path(path).resolve()), utc_text(self.clock.now()))


def _operator() -> str:
    """Who asks for an erasure when nobody says: the operating-system user."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return "unknown"


def _set_files(
    paths: Sequence[str | os.PathLike[str]], items: Sequence[Any]
) -> list[dict[str, str]]:
    """The files of a loaded set, each named ``<n>/<path under the n-th given path>`` so the set
    can be written out again in the same shape (templates/ beside the rulesets ...)."""
    roots = [Path(p).resolve() for p in paths]
    files = []
    for item in items:
        path = Path(item.path).resolve()
        for index, root in enumerate(roots):
            if path == root:
                name = f"{index}/{path.name}"
                break
            if root.is_dir() and path.is_relative_to(root):
                name = f"{index}/{path.relative_to(root).as_posix()}"
                break
        else:
            name = f"{len(roots)}/{path.name}"
        files.append({"name": name, "path": item.path, "source": item.source})
    return sorted(files, key=lambda f: f["name"])


def _set_hash(files: Sequence[dict[str, str]]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file['name']}\0{file['source']}\0".encode())
    return digest.hexdigest()
