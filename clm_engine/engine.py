"""The engine: events in, contact state out (and, as later parts land, rules, actions, time).

Ingestion is the one path every change takes:

1. **Parse**: each event is validated against the fixed event shape; a bad one is rejected
   with a message naming the field, and the others go on.
2. **Deduplicate**: the event id is the idempotency key. Inside one write transaction the
   engine drops events already stored, so a replayed event changes nothing.
3. **Fold**: reducers (a hook) fold each new event into its contact, oldest first. An event
   older than the newest one already applied to its contact makes the engine re-fold that
   contact's whole history in time order, so late events still give the right state.
4. **Write**: events, contacts, stage transitions and failures are written in the same
   transaction. A reducer that raises drops its event from the batch, leaves its contact as if
   the event had never come, and is recorded with its reason; the rest of the batch lands.
"""

from __future__ import annotations

import operator
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from pydantic import ValidationError

from . import plugins
from .clock import Clock, SystemClock
from .dispatch import Dispatcher, DispatchReport
from .errors import EventError, ReducerError, RulesetError
from .evaluation import Evaluator, EventCounter, Fire, settle
from .models import DEFAULT_STAGES, Contact, Event, describe_validation_error, utc_text
from .rules import RuleBook
from .store import IngestFailure, StageTransition, Store, StoreTransaction, open_store
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

    def add(self, other: IngestResult) -> None:
        self.ingested += other.ingested
        self.duplicates += other.duplicates
        self.enqueued += other.enqueued
        self.rejected.extend(other.rejected)
        self.failed.extend(other.failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "enqueued": self.enqueued,
            "failed": [
                {"event_id": f.event.id, "reducer": f.reducer, "error": f.error}
                for f in self.failed
            ],
        }


@dataclass
class _Folded:
    """One contact after folding a batch's events into it."""

    contact: Contact | None
    applied: list[Event]
    transitions: list[StageTransition]
    failures: list[IngestFailure]
    refolded: bool
    fires: list[Fire] = field(default_factory=list)


_OCCURRED_AT = operator.attrgetter("occurred_at")


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


class Engine:
    """clm-engine as a library: open a store, ingest events, read contacts.

    ``store`` is a path to a SQLite file (created and migrated if needed) or a ``Store``.
    Nothing runs in the background: the host decides when work happens.
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
    ) -> None:
        plugins.load_plugins()
        self.clock = clock or SystemClock()
        self.store: Store = (
            open_store(os.fspath(store)) if isinstance(store, str | os.PathLike) else store
        )
        self.stages = tuple(stages)
        self.reducers = plugins.get_reducers()
        self.handlers = plugins.get_event_handlers()
        self.operators = plugins.get_operators()
        self.facts = plugins.get_facts()
        self.actions = plugins.get_actions()
        self.max_attempts = max_attempts
        #: Record actions that reach outside (emails ...) instead of running them: simulations.
        self.dry_run_external = dry_run_external
        #: How long an external action (an email) may run before its row is given to another
        #: worker: longer than any send can take (SMTP timeouts), short enough to recover.
        self.lease = lease
        self.rulebook = RuleBook(stages=self.stages)
        self._evaluator = Evaluator(self.rulebook)
        self._ruleset_paths: list[str] = []
        if migrate:
            self.store.migrate(plugins.get_migrations())
        if rulesets:
            self.load_rulesets(rulesets)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- ingestion ---------------------------------------------------------------------------

    def ingest(self, event: Event | Mapping[str, Any] | str) -> IngestResult:
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

    def ingest_many(self, events: Iterable[Event | Mapping[str, Any] | str]) -> IngestResult:
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
        result = IngestResult()
        unique: dict[str, Event] = {}
        for event in events:
            if event.id in unique:
                result.duplicates += 1
            else:
                unique[event.id] = event  # type: ignore[index]
        if not unique:
            return result
        with self.store.write() as tx:
            self._apply(tx, list(unique.values()), self.clock.now(), 0, result)
        return result

    def _apply(
        self,
        tx: StoreTransaction,
        events: list[Event],
        now: datetime,
        depth: int,
        result: IngestResult,
    ) -> None:
        """Deduplicate, fold, evaluate rules and write, inside ``tx``: the heart of ingestion.

        ``events`` have distinct ids. ``depth`` counts the actions that led to these events
        (0 for events from outside), so chains of rules cannot loop forever.
        """
        existing = tx.existing_event_ids([event.id for event in events])  # type: ignore[misc]
        result.duplicates += len(existing)
        by_contact: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            if event.id not in existing:
                by_contact[event.contact_id].append(event)
        stored = tx.load_contacts(by_contact)
        applied: list[Event] = []
        contacts: list[Contact] = []
        transitions: list[StageTransition] = []
        fires: list[Fire] = []
        for contact_id, contact_events in by_contact.items():
            folded = self._fold(tx, contact_id, contact_events, stored.get(contact_id), depth)
            result.failed.extend(folded.failures)
            if folded.contact is None:
                continue
            folded.contact.updated_at = now
            contacts.append(folded.contact)
            applied.extend(folded.applied)
            fires.extend(folded.fires)
            if folded.refolded:
                tx.replace_transitions(contact_id, folded.transitions)
            else:
                transitions.extend(folded.transitions)
        now_text = utc_text(now)
        tx.insert_events(applied, received_at=now_text)
        tx.upsert_contacts(contacts, updated_at=now_text)
        tx.add_transitions(transitions)
        if result.failed:
            tx.record_failures(result.failed, failed_at=now_text)
        tx.clear_failures([event.id for event in applied])  # type: ignore[misc]
        result.enqueued += settle(tx, fires, recorded_at=now_text)
        if self.rulebook.relative:
            refresh_anchors(tx, self.rulebook, contacts)
        result.ingested += len(applied)

    def _fold(
        self,
        tx: StoreTransaction,
        contact_id: str,
        new_events: list[Event],
        stored_json: str | None,
        depth: int = 0,
    ) -> _Folded:
        new_events.sort(key=_OCCURRED_AT)  # stable: ties keep their arrival order
        fold = partial(self._fold_from, tx=tx, contact_id=contact_id, depth=depth)
        if stored_json is None:
            return fold(lambda: Contact(id=contact_id), new_events, new_events)
        parsed = [Contact.model_validate_json(stored_json)]

        def stored() -> Contact:  # parsed once; parsed again only if a fold must restart
            return parsed.pop() if parsed else Contact.model_validate_json(stored_json)

        last_event_at = parsed[0].last_event_at
        if last_event_at is None or new_events[0].occurred_at >= last_event_at:
            return fold(stored, new_events, new_events)
        # A late event: re-fold the whole history in time order (stored events first on ties).
        history = sorted(tx.contact_events(contact_id) + new_events, key=_OCCURRED_AT)
        folded = fold(lambda: Contact(id=contact_id), history, new_events)
        folded.refolded = True
        return folded

    def _fold_from(
        self,
        start: Callable[[], Contact],
        events: list[Event],
        new_events: list[Event],
        *,
        tx: StoreTransaction,
        contact_id: str,
        depth: int,
    ) -> _Folded:
        """Fold ``events`` into ``start()``; on a reducer error, drop that event and fold again.

        Each *new* event is evaluated against the rules right after it is folded, so rules see
        the contact as of that event. What they decide is collected, not yet written.
        """
        failures: list[IngestFailure] = []
        for_type = self.reducers.for_type  # bound once: this loop runs for every event
        first_stage = self.stages[0] if self.stages else None
        evaluate = None if self.rulebook.empty else self._evaluator.on_event
        handlers_for = self.handlers.for_type
        handled = any(handlers_for(event.type) for event in new_events)
        is_new = {id(event) for event in new_events} if evaluate or handled else set()
        db = tx.db if handled else None
        while True:
            contact = start()
            transitions: list[StageTransition] = []
            fires: list[Fire] = []
            applied_new: list[Event] = []
            counter = EventCounter(tx, contact_id, applied_new)
            reducer_name = ""
            try:
                # Handlers write the plugins' tables: a failed fold must take their writes back.
                with tx.savepoint() if handled else nullcontext():
                    for event in events:
                        before = contact.stage
                        for name, reducer in for_type(event.type):
                            reducer_name = name  # named in the failure if it raises
                            reducer(contact, event)
                        if contact.stage is None:
                            contact.stage = first_stage
                        if contact.stage != before:
                            transitions.append(_transition(contact, before, event))
                        if id(event) not in is_new:
                            continue
                        applied_new.append(event)
                        if handled:
                            for name, handler in handlers_for(event.type):
                                reducer_name = name
                                handler(db, contact, event)
                        if evaluate is not None:
                            reducer_name = "(rules)"
                            evaluate(contact, event, before, counter, depth, fires, tx.db)
            except Exception as error:  # a plugin's bug must not take the batch down
                failures.append(
                    IngestFailure(event, reducer_name, f"{type(error).__name__}: {error}")
                )
                events = [e for e in events if e is not event]
                continue
            if not events:
                return _Folded(None, [], [], failures, False)
            if failures:
                failed = {id(f.event) for f in failures}
                new_events = [e for e in new_events if id(e) not in failed]
            return _Folded(contact, new_events, transitions, failures, False, fires)

    # -- rulesets ------------------------------------------------------------------------------

    def load_rulesets(self, paths: Sequence[str | os.PathLike[str]]) -> list[str]:
        """Validate, compile and start using the rulesets at ``paths`` (files or directories).

        Raises ``RulesetError`` listing every problem if any ruleset is invalid: the engine
        never runs a ruleset that failed validation, and keeps the rules it had. Each loaded
        version is recorded in the store with its content hash; returns warnings. Plugin
        documents found in ``paths`` (sequences, catalogues) load with them, all or nothing:
        ``self.documents[kind][name]``.
        """
        from .rulesets import load_all

        registries = {"actions": self.actions, "operators": self.operators, "facts": self.facts}
        validated = load_all(list(paths), **registries)
        loaded = validated.rulesets
        book = RuleBook.build(loaded, **registries, documents=validated.by_kind())
        warnings = []
        now_text = utc_text(self.clock.now())
        known = {
            (v["name"], v["version"]): v["content_hash"] for v in self.store.ruleset_versions()
        }
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
        self.rulebook = book
        self.stages = book.stages
        self._evaluator = Evaluator(book)
        self._ruleset_paths = [os.fspath(p) for p in paths]
        rebuild_anchors(self.store, book)
        return warnings

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
            actions=self.actions,
            stages=self.stages,
            apply_events=self._apply_emitted,
            max_attempts=self.max_attempts,
            dry_run_external=self.dry_run_external,
            lease=self.lease,
            documents=self.rulebook.documents,
        )
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

    def _apply_emitted(self, tx: StoreTransaction, events: list[Event], depth: int) -> list[str]:
        """Apply events an action emitted, in the dispatch transaction; failures as text."""
        result = IngestResult()
        self._apply(tx, events, self.clock.now(), depth, result)
        return [f"{f.event.type}: {f.reducer} failed with {f.error}" for f in result.failed]

    # -- reading and erasing -----------------------------------------------------------------

    def contact(self, contact_id: str) -> Contact | None:
        return self.store.get_contact(contact_id)

    def forget(self, contact_id: str) -> dict[str, int]:
        """Erase a contact's personal data everywhere (core and plugins); rows removed by table."""
        return self.store.forget(
            contact_id, also=plugins.forget_contact, erased_at=utc_text(self.clock.now())
        )


def _transition(contact: Contact, before: str | None, event: Event) -> StageTransition:
    cause = event.properties.get("cause") if event.type == "clm.stage.set" else None
    if not cause:
        cause = f"{event.type} event" if before is not None else f"created by {event.type} event"
    return StageTransition(
        contact_id=contact.id,
        from_stage=before,
        to_stage=contact.stage or "",
        at=utc_text(event.occurred_at),
        cause=cause,
        event_id=event.id,
    )
