"""Folding one contact's events: state, decisions and internal effects, in event-time order.

This is where "same history, same outcome" is made true. For each event of a contact, oldest
first:

1. the reducers fold it into the contact (and, if it is newly stored, plugins' event handlers
   see it);
2. the rules it triggers are judged on the contact as of that event, all on the same state;
3. each decision is taken in priority order (limits, keys), and each of its **internal**
   actions that is due at once runs right there, inline: the events it emits about the
   contact (a stage change, a score, a tag ...) are folded in at the triggering event's time,
   and judged in turn (a stage change fires stage-change rules), before the contact's next
   event is judged.

So a contact ends in the same state, with the same stage history (each change dated by the
event that caused it) and the same outbox, whether its events came one by one or in one batch.
External actions (an email) and delayed ones are written to the outbox for dispatch.

**A late event** (older than what the contact has already seen) makes the engine fold the
contact's whole history again, and *re-judge* every event from the late one's time on. A
decision already taken stays taken: its key exists, so a repeat is a no-op and nothing
external is sent twice. A decision the corrected history now implies is taken (marked
``late``: its external actions respect ``late_action_limit`` at dispatch). The decisions of
*recomputable* rules (whose actions are all pure and immediate: stage, score, tags,
attributes, emitted events) are part of the contact's state, so they are recomputed: their
effects are derived again, and those the corrected history no longer implies are
``retracted``. That is what makes every arrival order end in the same state.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .dispatch import (
    MAX_CHAIN_DEPTH,
    action_context,
    ask_policies,
    emitted_events,
    failure_of,
    follow_up_row,
    result_outcome,
    verdict_of,
)
from .evaluation import (
    EventCounter,
    Fire,
    FireLog,
    HistoryCounter,
    action_row,
    actions_of,
    decide,
    decision_key,
    trace_of,
    unescape_key_part,
)
from .models import (
    Contact,
    Event,
    describe_validation_error,
    duration_to_timedelta,
    utc_text,
)
from .store import IngestFailure, StageTransition, StoreTransaction, Trace

if TYPE_CHECKING:
    from .engine import Engine

_OCCURRED_AT = operator.attrgetter("occurred_at")


@dataclass
class Folded:
    """One contact after folding a batch's events into it: what to write."""

    contact: Contact | None
    applied: list[Event] = field(default_factory=list)  # new events, effects included
    origins: dict[str, str] = field(default_factory=dict)  # effect event id -> decision key
    transitions: list[StageTransition] = field(default_factory=list)
    failures: list[IngestFailure] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # new outbox rows
    traces: list[Trace] = field(default_factory=list)
    elsewhere: list[Event] = field(default_factory=list)  # what actions emitted about others
    ran_inline: int = 0
    #: Set when a late event made the whole history fold again: what the re-judgement redid.
    rejudged: Rejudged | None = None


@dataclass
class Rejudged:
    """What a re-judgement from ``since`` replaces in the store."""

    since: str
    rules: set[tuple[str, str]]  # the recomputable rules: their traces from ``since`` go
    dropped_events: list[str]  # effects of recomputed decisions, derived again (or not)
    redone: list[dict[str, Any]] = field(default_factory=list)  # recomputed inline rows
    retracted: list[str] = field(default_factory=list)  # no longer implied
    #: The live recomputable decisions before the re-judgement: key -> (ruleset, rule, at).
    live: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: Why a retracted decision was retracted, for its row and its trace.
    why: str = ""


class _Restart(Exception):
    """An event failed; fold again without it."""


class ContactFold:
    """Folds one contact's events; one instance per attempt (a failure restarts it)."""

    def __init__(
        self,
        engine: Engine,
        tx: StoreTransaction,
        log: FireLog,
        contact: Contact,
        *,
        now: datetime,
        recorded_at: str,
        new_ids: set[str],
        judge_from: datetime | None,
        rejudged: Rejudged | None,
        recomputable_keys: set[str],
        kept_keys: set[str],
        rederived_ids: set[str],
        batch: dict[str, Contact],
    ) -> None:
        self.engine, self.tx, self.log, self.contact = engine, tx, log, contact
        self.batch = batch  # the contacts folded before this one in the batch, not yet stored
        self.now, self.recorded_at = now, recorded_at
        self.new_ids, self.judge_from = new_ids, judge_from
        self.recomputable_keys, self.kept_keys = recomputable_keys, kept_keys
        self.rederived_ids = rederived_ids
        self.out = Folded(contact, rejudged=rejudged)
        #: The history so far, for ``events.count`` on a re-judgement (the store has the rest).
        self.history = HistoryCounter() if rejudged is not None else None
        book = engine.rulebook
        self.evaluate = None if book.empty else engine._evaluator.on_event
        self.reducers = engine.reducers.for_type
        self.handlers = engine.handlers.for_type
        self.first_stage = engine.stages[0] if engine.stages else None
        self.counter: Callable[[str, datetime | None], int] = (
            self.history
            if self.history is not None
            else EventCounter(tx, contact.id, self.out.applied)
        )
        self.failing = ""  # the reducer, handler or "(rules)" running: named if it raises

    # -- events -------------------------------------------------------------------------------

    def step(self, event: Event, depth: int) -> None:
        """Fold one event, run its handlers if it is new, judge it and run what it decides."""
        contact = self.contact
        before = contact.stage
        for name, reducer in self.reducers(event.type):
            self.failing = name
            reducer(contact, event)
        if contact.stage is None:
            contact.stage = self.first_stage
        if contact.stage != before:
            self.out.transitions.append(transition(contact, before, event))
        if self.history is not None:
            self.history.add(event)
        is_new = event.id in self.new_ids
        if is_new:
            self.out.applied.append(event)
            if event.id not in self.rederived_ids:
                for name, handler in self.handlers(event.type):
                    self.failing = name
                    handler(self.tx.tables, contact, event)  # type: ignore[call-arg,arg-type]  # Reducers types handlers as reducers
        if self.evaluate is None:
            return
        if not is_new and (self.judge_from is None or event.occurred_at < self.judge_from):
            return  # judged when it came, on this same history
        self.failing = "(rules)"
        fires: list[Fire] = []
        self.evaluate(
            contact, event, before, self.counter, depth, fires, self.tx.db, self.tx.tables
        )
        fires.sort(key=lambda f: -f.rule.rule.priority)  # stable: ruleset order on ties
        for fire in fires:
            self.take(fire, event, is_new)

    # -- decisions ----------------------------------------------------------------------------

    def take(self, fire: Fire, event: Event, is_new: bool) -> None:
        """Decide a fire; run its internal actions due at once, enqueue the others."""
        rule = fire.rule
        rejudging = self.out.rejudged is not None
        if rejudging:
            first = decision_key(rule.ruleset, rule.id, fire.contact_id, fire.occurrence, 0)
            if first in self.kept_keys:  # taken when the event came: it stays taken, once
                if rule.once_per or rule.cooldown:
                    self.log.record(fire)  # (again, if the re-judgement forgot it)
                if rule.recomputable:  # its traces from the late event on are redone
                    kept = [first[:-1] + str(i) for i in range(len(rule.actions))]
                    self.out.traces.append(trace_of(fire, "fired", None, kept))
                return
            if not fire.matched and not is_new and not rule.recomputable:
                return  # judged and traced when the event came
        decision, detail = decide(fire, self.log)
        keys: list[str] = []
        if decision == "fired":
            actions, detail = actions_of(fire, self.tx.tables, detail)
            for index, (call, params) in enumerate(actions):
                due = fire.at + duration_to_timedelta(call.after) if call.after else fire.at
                row = action_row(fire, index, call.action, params, due, self.recorded_at)
                row["late"] = int(rejudging and not rule.recomputable)
                keys.append(row["key"])
                spec = self.engine.actions.get(call.action)
                if spec is not None and not spec.external and call.after is None:
                    self.run_inline(row, spec, fire, event)
                if row["key"] in self.recomputable_keys:
                    self.recomputable_keys.discard(row["key"])
                    self.out.rejudged.redone.append(row)  # type: ignore[union-attr]  # rejudged is set whenever recomputable_keys is non-empty
                else:
                    self.out.rows.append(row)
        self.out.traces.append(trace_of(fire, decision, detail, keys))

    def run_inline(self, row: dict[str, Any], spec: Any, fire: Fire, event: Event) -> None:
        """Run an internal action now, in the fold: its policies, its run, then its effects.
        ``event`` is the event that triggered the decision (``ctx.event``, as at dispatch).

        The row is written finished (``inline``), or left pending when a policy defers it or
        it fails (dispatch retries it, as it would any action)."""
        if fire.depth > MAX_CHAIN_DEPTH:
            note: str | None = f"{fire.depth} actions led to this one: a loop between rules?"
            row.update(status="dead", note=note, finished_at=self.recorded_at)
            return
        contact, tx, key = self.contact, self.tx, row["key"]
        answers = ask_policies(
            self.engine.registry,
            row,
            contact,
            fire.at,
            tx,
            lambda: tx.claimed_actions(contact.id, utc_text(fire.at)),
        )
        verdict = verdict_of(answers)
        if verdict is not None and verdict.until is None:
            row.update(status="vetoed", note=verdict.note, finished_at=self.recorded_at)
            return
        if verdict is not None and verdict.until is not None:  # deferred: dispatch runs it then
            row.update(due_at=utc_text(verdict.until), note=verdict.note)
            return
        try:
            params = spec.params.model_validate(row["params"])
        except ValidationError as error:
            note = f"parameters no longer valid: {describe_validation_error(error)}"
            row.update(status="dead", note=note, finished_at=self.recorded_at)
            return
        ctx = action_context(
            key=key,
            ruleset=row["ruleset"],
            rule=row["rule"],
            entity=row["entity"],
            params_raw=row["params"],
            due_at=fire.at,
            contact=contact,
            now=fire.at,  # inline, an action happens at its event's time, whenever it is run
            attempt=1,
            tx=tx,
            stages=self.engine.stages,
            documents=self.engine.rulebook.documents,
            actions=self.engine.action_names,
            registry=self.engine.registry,
            folded=self.batch,
            conditions=self.engine.conditions,
        )
        ctx.event = event
        try:
            with nullcontext() if spec.pure else tx.savepoint():
                result = spec.run(ctx, params)
                effects = self.effects(row, spec, ctx.emitted, fire.at)
        except Exception as error:  # a plugin's failure is retried at dispatch, never fatal
            retry_at, note = failure_of(1, error, max(self.now, fire.at), self.engine.max_attempts)
            if retry_at is None:
                row.update(status="dead", note=note, attempts=1, finished_at=self.recorded_at)
            else:
                row.update(due_at=utc_text(retry_at), note=note, attempts=1)
            return
        status, note = result_outcome(result)
        row.update(
            status=status,
            note=note,
            result=result,
            attempts=1,
            finished_at=self.recorded_at,
            inline=1,
        )
        self.out.ran_inline += 1
        self.out.rows.extend(follow_up_row(row, item, self.recorded_at) for item in ctx.enqueued)
        for event in effects:
            if event.contact_id != contact.id:
                self.out.elsewhere.append(event)
                continue
            self.out.origins[event.id] = key  # type: ignore[index]  # Event.id is set by its validator when missing
            self.new_ids.add(event.id)  # type: ignore[arg-type]  # Event.id is set by its validator when missing
            self.step(event, fire.depth + 1)

    def effects(
        self,
        row: dict[str, Any],
        spec: Any,
        emitted: list[tuple[str, dict[str, Any], str | None]],
        at: datetime,
    ) -> list[Event]:
        """The events an action emitted, dated by its decision (ids from its key); a pure
        action may emit only about its own contact."""
        if spec.pure and any(about not in (None, self.contact.id) for _, _, about in emitted):
            raise ValueError(f"pure action {spec.name!r} emitted about another contact")
        return emitted_events(row["key"], emitted, self.contact.id, at)


def fold_contact(
    engine: Engine,
    tx: StoreTransaction,
    log: FireLog,
    contact_id: str,
    new_events: list[Event],
    stored_json: str | None,
    *,
    depth: int,
    now: datetime,
    recorded_at: str,
    batch: dict[str, Contact],
) -> Folded:
    """Fold a contact's new events (in time order) into it, judging and deciding as it goes.

    A reducer, handler or fact that raises drops its event (recorded as a failure, with what
    the event's handlers and inline actions wrote rolled back) and the fold starts again
    without it: one bad event never takes the rest of the batch down.
    """
    new_events.sort(key=_OCCURRED_AT)  # stable: ties keep their arrival order
    stored = Contact.model_validate_json(stored_json) if stored_json is not None else None
    late = (
        stored is not None
        and stored.last_event_at is not None
        and new_events[0].occurred_at < stored.last_event_at
    )
    rejudged: Rejudged | None = None
    kept: set[str] = set()
    recomputable: set[str] = set()
    dropped_ids: set[str] = set()
    since = new_events[0].occurred_at  # a failed event leaves it: what was dropped is redone
    if late:
        rejudged, history, kept, recomputable, dropped_ids = _plan_rejudgement(
            engine, tx, log, contact_id, new_events, since
        )
    else:
        history = new_events
    failures: list[IngestFailure] = []
    while True:
        if late or stored is None:
            start = Contact(id=contact_id)
        elif failures:
            start = Contact.model_validate_json(stored_json)  # type: ignore[arg-type]  # failures imply a stored contact
        else:
            start = stored
        plan = None
        if rejudged is not None:
            plan = Rejudged(
                rejudged.since, rejudged.rules, rejudged.dropped_events, live=rejudged.live
            )
        mark = log.mark()
        fold = ContactFold(
            engine,
            tx,
            log,
            start,
            now=now,
            recorded_at=recorded_at,
            new_ids={e.id for e in new_events},  # type: ignore[misc]  # Event.id is set by its validator when missing
            judge_from=since if late else None,
            rejudged=plan,
            recomputable_keys=set(recomputable),
            kept_keys=kept,
            rederived_ids=dropped_ids,
            batch=batch,
        )
        handled = any(fold.handlers(e.type) for e in history)
        try:
            # Handlers and plugins' inline actions write the plugins' tables: a failed fold
            # must take their writes back (pure actions write nothing: no savepoint for them).
            with tx.savepoint() if handled or engine.rulebook.writes_inline else nullcontext():
                _fold_events(fold, history, depth)
        except _Restart as restart:
            event, error = restart.args
            failures.append(IngestFailure(event, fold.failing, error))
            history = [e for e in history if e is not event]
            new_events = [e for e in new_events if e is not event]
            log.rollback(mark)
            if not new_events:
                return Folded(None, failures=failures)
            continue
        out = fold.out
        out.failures = failures
        if out.rejudged is not None:
            # Those not derived again, and live until now, are retracted (once).
            live = out.rejudged.live
            out.rejudged.retracted = sorted(k for k in fold.recomputable_keys if k in live)
            ids = ", ".join(e.id for e in new_events[:3])  # type: ignore[misc]  # stored: have ids
            out.rejudged.why = f"the history corrected by late event {ids} no longer implies it"
            out.traces += _retractions(engine, contact_id, out.rejudged)
        return out


def _retractions(engine: Engine, contact_id: str, rejudged: Rejudged) -> list[Trace]:
    """A trace for each decision the re-judgement retracted, so ``clm explain`` says so."""
    traces = []
    for key in rejudged.retracted:
        ruleset, rule, at = rejudged.live[key]
        compiled = engine.rulebook.rules[(ruleset, rule)]  # recomputable: it is loaded
        traces.append(
            Trace(
                contact_id=contact_id,
                ruleset=ruleset,
                version=compiled.version,
                content_hash=compiled.content_hash,
                rule=rule,
                occurrence=unescape_key_part(key.split("/")[3]),
                trigger="re-judgement after a late event",
                decision="retracted",
                detail=rejudged.why,
                tree=None,
                actions=[key],
                at=at,
            )
        )
    return traces


def _fold_events(fold: ContactFold, history: list[Event], depth: int) -> None:
    for event in history:
        try:
            fold.step(event, depth)
        except Exception as error:  # a plugin's bug must not take the batch down
            raise _Restart(event, f"{type(error).__name__}: {error}") from error


def _plan_rejudgement(
    engine: Engine,
    tx: StoreTransaction,
    log: FireLog,
    contact_id: str,
    new_events: list[Event],
    since: datetime,
) -> tuple[Rejudged, list[Event], set[str], set[str], set[str]]:
    """What a late event re-judges: the history to fold, the decisions that stay taken, and
    the recomputable ones (inline rows of pure rules from ``since`` on) with their effects."""
    book = engine.rulebook
    since_text = utc_text(since)
    stored_events, origins = tx.contact_history(contact_id)
    decisions = tx.decisions_of(contact_id)
    recomputable: set[str] = set()
    kept: set[str] = set()
    live: dict[str, tuple[str, str, str]] = {}
    for key, (ruleset, rule_id, status, due_at, inline) in decisions.items():
        rule = book.rules.get((ruleset, rule_id))
        if inline and rule is not None and rule.recomputable and due_at >= since_text:
            recomputable.add(key)
            if status != "retracted":
                live[key] = (ruleset, rule_id, due_at)
        else:
            kept.add(key)
    dropped = [e for e in stored_events if origins.get(e.id or "") in recomputable]
    dropped_ids = {e.id for e in dropped if e.id is not None}
    history = sorted(
        [e for e in stored_events if e.id not in dropped_ids] + new_events, key=_OCCURRED_AT
    )
    rules = {key for key, rule in book.rules.items() if rule.recomputable}
    log.forget(contact_id, rules, since_text)
    rejudged = Rejudged(since_text, rules, sorted(dropped_ids), live=live)
    return rejudged, history, kept, recomputable, dropped_ids


def transition(contact: Contact, before: str | None, event: Event) -> StageTransition:
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
