"""Dispatch: run the actions that are due, exactly once for their internal effects.

Rows are taken in due order (then priority, then enqueue order) inside a ``BEGIN IMMEDIATE``
write transaction, so two processes never run the same row. For each row, in its own
savepoint: ask the dispatch policies (veto or defer), validate the parameters, run the action,
apply the events it emitted (reducers, and any rules they trigger) and mark the row, all in
that transaction. An action that raises is retried with exponential backoff and dead-lettered
after ``max_attempts``; it never stops the other actions or the engine.

Actions registered ``external=True`` (an email) must not hold SQLite's write lock through a
network round trip, so they go in three steps: inside the batch's transaction the policies are
asked and the row is *claimed* (its due time moves to the end of a lease, so the row comes
back by itself if the worker dies); ``run`` is called after the commit, with no lock held and
``ctx.tables = None``; then a short write transaction records the outcome and applies what the
action emitted. A crash between the send and the record sends again when the lease ends (at
least once): the row's ``key`` goes with the effect (an email's Message-ID) so that a receiver
can deduplicate.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .errors import MAX_RETRY_AFTER, RetryLater
from .evaluation import EventCounter, escape_key_part, unescape_key_part
from .models import (
    Contact,
    Event,
    describe_validation_error,
    duration_to_timedelta,
    made_event,
    utc_text,
)
from .store import ActionStep, OutboxRow, Store, StoreTransaction, Trace, retry_conflicts
from .types import ActionContext, Defer, FactContext, Veto

if TYPE_CHECKING:
    from .plugins import ActionSpec
    from .registry import Registry
    from .rules import CompiledRule

#: Why a claimed external action was not run: its lease had run out before its turn.
_LEASE_GONE = "the lease ran out before its turn: not run here"

#: Actions that lead to actions that lead to ... : past this depth, a loop is assumed.
MAX_CHAIN_DEPTH = 10


@dataclass
class DispatchReport:
    """What one dispatch run did, by outcome, and the notes worth showing a person."""

    outcomes: Counter[str] = field(default_factory=Counter)
    #: (ruleset/rule, outcome) -> count
    by_rule: Counter[tuple[str, str]] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)  # vetoes, retries, dead letters: the news

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def add(self, other: DispatchReport) -> None:
        self.outcomes.update(other.outcomes)
        self.by_rule.update(other.by_rule)
        self.notes.extend(other.notes[: max(0, 1000 - len(self.notes))])

    def as_dict(self) -> dict[str, Any]:
        rules: dict[str, dict[str, int]] = {}
        for (rule, outcome), count in sorted(self.by_rule.items()):
            rules.setdefault(rule, {})[outcome] = count
        return {"outcomes": dict(self.outcomes), "by_rule": rules, "notes": self.notes[:100]}


#: Applies an action's emitted events in a transaction at a depth; the last argument holds
#: contacts' stored JSON the caller read in that same transaction (not read again).
ApplyEvents = Callable[[StoreTransaction, list[Event], int, Mapping[str, str]], list[str]]


@dataclass
class Claim:
    """An external action claimed under a lease, to run after the batch's transaction."""

    row: OutboxRow
    spec: ActionSpec
    params: Any
    contact: Contact
    lease_until: str
    attempts: int
    event: Event | None = None  # what triggered the decision


class _OneByOne(Exception):
    """An effect of a batch of sends failed: apply each send's effects alone."""


@dataclass
class _Outcome:
    """What one claimed external action came to, waiting for its batch's write."""

    claim: Claim
    ctx: ActionContext | None
    result: Any
    error: Exception | None
    veto: str | None
    at: datetime


class Dispatcher:
    def __init__(
        self,
        *,
        registry: Registry,
        stages: tuple[str, ...],
        apply_events: ApplyEvents,
        max_attempts: int = 5,
        dry_run_external: bool = False,
        backoff: timedelta = timedelta(seconds=30),
        max_backoff: timedelta = timedelta(hours=6),
        lease: timedelta = timedelta(minutes=5),
        documents: dict[str, dict[str, Any]] | None = None,
        late_action_limit: timedelta = timedelta(days=3),
        conditions: Any = None,
        record_every: int = 16,
        record_within: float = 0.25,
        rules: Mapping[tuple[str, str], CompiledRule] | None = None,
    ) -> None:
        self.registry = registry
        #: The loaded rules, by (ruleset, rule): their ``unless`` conditions are re-checked
        #: when a delayed action falls due.
        self.rules = rules or {}
        self.actions = registry.actions
        self.stages = stages
        self.apply_events = apply_events
        self.max_attempts = max_attempts
        self.dry_run_external = dry_run_external
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.lease = lease
        self.documents = documents or {}
        self.action_names = frozenset(self.actions)
        self.late_action_limit = late_action_limit
        self.conditions = conditions
        #: External outcomes are written every ``record_every`` sends or ``record_within``
        #: seconds: the most sends a crash can make happen twice (see ``run_claims``).
        self.record_every = max(1, record_every)
        self.record_within = record_within

    def run_batch(
        self, tx: StoreTransaction, now: datetime, limit: int, report: DispatchReport
    ) -> tuple[int, list[Claim]]:
        """Dispatch up to ``limit`` due rows in ``tx``: how many were taken, and the external
        actions claimed, for ``run_claims`` to run once ``tx`` has committed."""
        rows = tx.due_actions(utc_text(now), limit)
        return len(rows), self.run_rows(tx, rows, now, report)

    def run_rows(
        self, tx: StoreTransaction, rows: list[OutboxRow], now: datetime, report: DispatchReport
    ) -> list[Claim]:
        """Dispatch these rows (due, and held by this transaction) in ``tx``: the external
        actions claimed, for ``run_claims`` to run once ``tx`` has committed."""
        claims: list[Claim] = []
        for row in rows:
            # No savepoint of its own: what may fail in a row (the action, its effects) has
            # one inside ``_one``; anything else aborts the whole transaction anyway.
            outcome, note = self._one(tx, row, now, claims)
            if outcome != "claimed":
                _count(report, row, outcome, note)
        return claims

    def run_claims(
        self,
        store: Store,
        claims: list[Claim],
        now: Callable[[], datetime],
        report: DispatchReport,
    ) -> None:
        """Run claimed external actions with no lock held; record their outcomes in batches.

        Right before each runs, its policies are asked again on the contact as committed now:
        an unsubscribe (or a suppression) that committed after the claim still stops the send.
        What remains is the send itself (an SMTP conversation of a few milliseconds): an
        unsubscribe committed while it is under way does not stop it.

        Outcomes are written in one short transaction per ``record_every`` sends (or sooner,
        when ``record_within`` has passed since the oldest unwritten one), not one per send:
        the at-least-once window. A worker that dies between a send and the write of its batch
        leaves those rows claimed; their leases run out and another worker sends them again.
        So a crash repeats at most ``record_every`` sends (``record_every=1``: at most the one
        in flight), and nothing is ever lost.
        """
        done: list[_Outcome] = []
        oldest = 0.0
        for claim in claims:
            row = claim.row
            if utc_text(now()) >= claim.lease_until:
                # Its lease ran out before its turn (a slow batch): another worker may hold
                # the row now. Not sent here; whoever holds it sends it.
                done.append(_Outcome(claim, None, None, None, _LEASE_GONE, now()))
                continue
            contact, veto = self._ask_again(store, claim, now())
            if veto is not None:
                done.append(_Outcome(claim, None, None, None, veto, now()))
            else:
                claim.contact = contact or claim.contact  # None only comes with a veto
                ctx = self._context(row, claim.contact, now(), claim.attempts, tx=None)
                ctx.event = claim.event
                ctx.ask_policies_again = lambda claim=claim: self._ask_again(store, claim, now())[1]
                try:
                    result, error = claim.spec.run(ctx, claim.params), None
                except Exception as exc:  # a plugin's failure is retried, never fatal
                    result, error = None, exc
                done.append(_Outcome(claim, ctx, result, error, None, now()))
            if len(done) == 1:
                oldest = time.monotonic()
            if len(done) >= self.record_every or time.monotonic() - oldest >= self.record_within:
                self._write_outcomes(store, done, report)
                done = []
        if done:
            self._write_outcomes(store, done, report)

    def _write_outcomes(
        self, store: Store, outcomes: list[_Outcome], report: DispatchReport
    ) -> None:
        """Record what the sends of a batch came to, in one write transaction (run again
        whole if it met another worker's in a deadlock: ``retry_conflicts``)."""

        def record() -> list[tuple[OutboxRow, str, str | None]]:
            counted: list[tuple[OutboxRow, str, str | None]] = []
            with store.write(concurrent=True) as tx:
                tx.lock_contacts({done.claim.row.contact_id for done in outcomes})
                # The lease ran out and another worker took the row: it records it.
                lost = {
                    id(done)
                    for done in outcomes
                    if done.veto is _LEASE_GONE or not _still_ours(tx, done.claim)
                }
                applied = self._apply_together(
                    tx,
                    [
                        (done, done.ctx)
                        for done in outcomes
                        if id(done) not in lost and done.ctx is not None and done.error is None
                    ],
                )
                for done in outcomes:
                    claim, row = done.claim, done.claim.row
                    if id(done) in lost:
                        counted.append((row, "lost_lease", "the lease ran out before the outcome"))
                        continue
                    if done.ctx is None:  # vetoed right before the send
                        outcome, note = self._finish(
                            tx, row, "vetoed", done.veto, None, claim.attempts, done.at
                        )
                    elif id(done) in applied:
                        outcome, note = self._outcome(
                            tx, row, done.result, done.ctx.attempt, done.at
                        )
                    else:
                        with tx.savepoint():
                            outcome, note = self._record(
                                tx, row, claim.contact, done.ctx, done.result, done.error, done.at
                            )
                    counted.append((row, outcome, note))
            return counted

        counted = retry_conflicts(record)
        for row, outcome, note in counted:  # counted once the batch has committed
            _count(report, row, outcome, note)

    def _ask_again(
        self, store: Store, claim: Claim, now: datetime
    ) -> tuple[Contact | None, str | None]:
        """The contact as committed now, and the policies' veto of the claimed action, if any.

        Only vetoes count here (consent, suppression): a deferral was decided at the claim."""
        reader = store.read()
        row = claim.row
        stored = reader.load_contacts([row.contact_id]).get(row.contact_id)
        if stored is None:
            return None, "the contact no longer exists"
        contact = Contact.model_validate_json(stored)
        answers = ask_policies(self.registry, row, contact, now, reader, in_flight=list)
        verdict = verdict_of(answers)
        return contact, (verdict.note if verdict is not None and verdict.until is None else None)

    def _one(
        self, tx: StoreTransaction, row: OutboxRow, now: datetime, claims: list[Claim]
    ) -> tuple[str, str | None]:
        def finish(
            status: str, note: str | None = None, attempts: int = 0
        ) -> tuple[str, str | None]:
            return self._finish(tx, row, status, note, None, row.attempts + attempts, now)

        spec = self.actions.get(row.action)
        if spec is None:
            return finish("dead", f"action {row.action!r} is not registered (plugin removed?)")
        if row.depth > MAX_CHAIN_DEPTH:
            return finish("dead", f"{row.depth} actions led to this one: a loop between rules?")
        if spec.external and row.late:
            due = datetime.fromisoformat(row.due_at)
            if now - due > self.late_action_limit:
                return finish(
                    "skipped",
                    f"decided late (a late event re-judged the history) for an occurrence of "
                    f"{row.due_at[:19]}Z, more than {self.late_action_limit} ago "
                    "(late_action_limit): not sent",
                )
        stored = tx.load_contacts([row.contact_id]).get(row.contact_id)
        if stored is None:
            return finish("skipped", "the contact no longer exists")
        contact = Contact.model_validate_json(stored)
        trigger = trigger_of(tx, row)
        skip = self._recheck(tx, row, contact, trigger)
        if skip is not None:
            return finish("skipped", skip)
        answers = ask_policies(
            self.registry,
            row,
            contact,
            now,
            tx,
            lambda: tx.claimed_actions(row.contact_id, utc_text(now)),
        )
        verdict = verdict_of(answers)
        if verdict is not None and verdict.until is None:
            return finish("vetoed", verdict.note)
        if verdict is not None and verdict.until is not None:
            tx.reschedule_action(
                row.seq, due_at=utc_text(verdict.until), note=verdict.note, attempts=row.attempts
            )
            _history(tx, row, "deferred", now, row.attempts, verdict.note, verdict.until)
            return "deferred", verdict.note
        try:
            params = spec.params.model_validate(row.params)
        except ValidationError as error:
            return finish("dead", f"parameters no longer valid: {describe_validation_error(error)}")
        attempts = row.attempts + 1
        if spec.external and not self.dry_run_external:
            lease_until = utc_text(now + self.lease)
            tx.claim_action(
                row.seq,
                lease_until=lease_until,
                note=f"running (attempt {attempts}); back at {lease_until[:19]}Z if it never ends",
                attempts=attempts,
            )
            claims.append(Claim(row, spec, params, contact, lease_until, attempts, trigger[0]))
            return "claimed", None
        # Here: an internal action, or an external one in a dry run (its stand-in, if any).
        run = spec.simulate if spec.external else spec.run
        if run is None:
            return finish("simulated", "external action: recorded, not run (dry run)", 1)
        ctx = self._context(row, contact, now, attempts, tx=tx)
        ctx.event = trigger[0]
        try:
            with tx.savepoint():  # the action's writes and effects roll back together
                result = run(ctx, params)
                # The contact as read above is still what is stored: only ``_apply`` writes
                # contacts, and nothing has run it since in this transaction.
                self._apply_effects(tx, row, contact, ctx, loaded={row.contact_id: stored})
        except Exception as error:  # a plugin's failure is retried, never fatal
            return self._failed(tx, row, attempts, error, now)
        if spec.external and not outcome_of(result):
            note = "external action: simulated, not sent (dry run)"
            return self._finish(tx, row, "simulated", note, result, attempts, now)
        return self._outcome(tx, row, result, attempts, now)

    def _recheck(
        self,
        tx: StoreTransaction,
        row: OutboxRow,
        contact: Contact,
        trigger: tuple[Event | None, dict[str, str | None] | None],
    ) -> str | None:
        """Why the row's action is skipped now that it falls due (its rule's ``unless`` holds),
        or None. The skip is traced, so ``clm explain`` shows what the condition saw.

        The condition is judged on the contact as it is, with ``now`` the time the action was
        planned for (the trigger's time plus the delay, which stays put when a policy defers
        the row) and the triggering event as ``event.*``; events that came since the trigger,
        up to this moment, count. A rule no longer loaded has nothing to re-check."""
        parts = row.key.split("/")
        compiled = self.rules.get((row.ruleset, row.rule))
        if compiled is None or len(parts) != 5 or not parts[4].isdigit():
            return None  # a follow-up (longer key) or a rule no longer loaded
        index = int(parts[4])
        if index >= len(compiled.rechecks) or compiled.rechecks[index] is None:
            return None
        condition, evaluator = compiled.rechecks[index]  # type: ignore[misc]  # the None case returned just above
        occurrence = unescape_key_part(parts[3])
        event, transition = trigger
        call = compiled.rule.then[index] if index < len(compiled.rule.then) else None
        planned = datetime.fromisoformat(row.due_at)
        if event is not None and call is not None and call.after is not None:
            planned = event.occurred_at + duration_to_timedelta(call.after)
        ctx = FactContext(
            contact=contact,
            now=planned,
            event=event,
            transition=transition,
            count_events=EventCounter(tx, contact.id),
            stages=self.stages,
            db=tx.db,
            tables=tx.tables,
            documents=self.documents,
        )
        if not evaluator.matching(ctx):
            return None
        tree = compiled.compiler.explain(condition, ctx)
        note = f"skipped at {utc_text(planned)[:16].replace('T', ' ')}Z: {describe(condition)}"
        tx.add_traces(
            [
                Trace(
                    contact_id=row.contact_id,
                    ruleset=row.ruleset,
                    version=row.version,
                    content_hash=row.content_hash,
                    rule=row.rule,
                    occurrence=f"{occurrence}#unless/{index}",
                    trigger=f"re-checked when {row.action} fell due ('unless' of action {index})",
                    decision="skipped",
                    detail=note,
                    tree=tree,
                    actions=[row.key],
                    at=utc_text(planned),
                )
            ],
            recorded_at=utc_text(planned),
        )
        return note

    def _context(
        self, row: OutboxRow, contact: Contact, now: datetime, attempt: int, tx: Any
    ) -> ActionContext:
        """The action's context; ``tx`` is the write transaction (``None`` for external)."""
        return action_context(
            key=row.key,
            ruleset=row.ruleset,
            rule=row.rule,
            entity=row.entity,
            params_raw=row.params,
            due_at=datetime.fromisoformat(row.due_at),
            contact=contact,
            now=now,
            attempt=attempt,
            tx=tx,
            stages=self.stages,
            documents=self.documents,
            actions=self.action_names,
            conditions=self.conditions,
            registry=self.registry,
        )

    def _record(
        self,
        tx: StoreTransaction,
        row: OutboxRow,
        contact: Contact,
        ctx: ActionContext,
        result: Any,
        error: Exception | None,
        now: datetime,
    ) -> tuple[str, str | None]:
        """Record an external action's run: its outcome, and what it emitted."""
        if error is not None:
            return self._failed(tx, row, ctx.attempt, error, now)
        try:
            with tx.savepoint():
                self._apply_effects(tx, row, contact, ctx)
        except Exception as exc:  # the effect is out: recording it must not repeat it
            note = f"ran, but applying what it emitted failed: {exc}"
            return self._finish(tx, row, "done", note, result, ctx.attempt, now)
        return self._outcome(tx, row, result, ctx.attempt, now)

    def _apply_together(
        self, tx: StoreTransaction, sends: list[tuple[_Outcome, ActionContext]]
    ) -> set[int]:
        """Apply what a batch's sends (each with the context it ran in) emitted in one pass:
        one fold per contact and one write of each kind, not a whole ingestion per send.
        Returns the outcomes applied (by ``id``): all, or none when anything failed (nothing
        of it kept); ``_record`` then applies each alone, so a failure is charged to its row."""
        if len(sends) < 2:
            return set()
        by_depth: dict[int, list[Event]] = defaultdict(list)
        try:
            with tx.savepoint():
                for done, ctx in sends:
                    row = done.claim.row
                    by_depth[row.depth + 1] += self._effects(tx, row, done.claim.contact, ctx)
                for depth, events in sorted(by_depth.items()):
                    if self.apply_events(tx, events, depth, {}):
                        raise _OneByOne
        except Exception:  # a plugin's failure, or _OneByOne: each on its own, then
            return set()
        return {id(done) for done, _ in sends}

    def _failed(
        self, tx: StoreTransaction, row: OutboxRow, attempts: int, error: Exception, now: datetime
    ) -> tuple[str, str | None]:
        """Retry with exponential backoff, or dead-letter after ``max_attempts``."""
        retry_at, note = failure_of(
            attempts, error, now, self.max_attempts, self.backoff, self.max_backoff
        )
        if retry_at is None:
            return self._finish(tx, row, "dead", note, None, attempts, now)
        tx.reschedule_action(row.seq, due_at=utc_text(retry_at), note=note, attempts=attempts)
        _history(tx, row, "retried", now, attempts, note, retry_at)
        return "retried", note

    def _outcome(
        self, tx: StoreTransaction, row: OutboxRow, result: Any, attempts: int, now: datetime
    ) -> tuple[str, str | None]:
        """``{"skipped": why}`` and ``{"failed": why}`` results say so; anything else is done."""
        status, note = result_outcome(result)
        return self._finish(tx, row, status, note, result, attempts, now)

    @staticmethod
    def _finish(
        tx: StoreTransaction,
        row: OutboxRow,
        status: str,
        note: str | None,
        result: Any,
        attempts: int,
        now: datetime,
    ) -> tuple[str, str | None]:
        tx.finish_action(
            row.seq, status=status, note=note, result=result, at=utc_text(now), attempts=attempts
        )
        _history(tx, row, status, now, attempts, note, None)
        return status, note

    def _apply_effects(
        self,
        tx: StoreTransaction,
        row: OutboxRow,
        contact: Contact,
        ctx: ActionContext,
        loaded: Mapping[str, str] | None = None,
    ) -> None:
        """Apply the events the action emitted and enqueue its follow-ups; raise on failure.
        ``loaded``: contacts' stored JSON read in ``tx`` since the last write to them."""
        events = self._effects(tx, row, contact, ctx)
        if not events:
            return
        failures = self.apply_events(tx, events, row.depth + 1, loaded or {})
        if failures:
            raise RuntimeError("; ".join(failures))

    def _effects(
        self, tx: StoreTransaction, row: OutboxRow, contact: Contact, ctx: ActionContext
    ) -> list[Event]:
        """Enqueue the action's follow-ups; the events it emitted, dated and with their ids."""
        if ctx.enqueued:
            tx.enqueue([follow_up_row(vars(row), item, utc_text(ctx.now)) for item in ctx.enqueued])
        if not ctx.emitted:
            return []
        return emitted_events(row.key, ctx.emitted, row.contact_id, _effect_time(row, contact))


def action_context(
    *,
    key: str,
    ruleset: str,
    rule: str,
    entity: str | None,
    params_raw: dict[str, Any],
    due_at: datetime,
    contact: Contact,
    now: datetime,
    attempt: int,
    tx: StoreTransaction | None,
    stages: tuple[str, ...],
    documents: dict[str, dict[str, Any]],
    actions: frozenset[str],
    folded: Mapping[str, Contact] | None = None,
    conditions: Any = None,
    registry: Registry | None = None,
) -> ActionContext:
    """What an action's ``run`` receives, at dispatch or inline in the fold; ``tx`` is the
    write transaction (``None`` while an external action runs outside it). ``folded`` holds
    the contacts of the batch being folded, newer than what ``tx`` has stored: what
    ``ctx.contact_of`` answers first."""
    return ActionContext(
        contact=contact,
        key=key,
        now=now,
        ruleset=ruleset,
        rule=rule,
        stages=stages,
        tables=tx.tables if tx is not None else None,
        entity=entity,
        documents=documents,
        attempt=attempt,
        params_raw=params_raw,
        due_at=due_at,
        load_contact=_contact_loader(tx, folded or {}) if tx is not None else None,
        actions=actions,
        conditions=conditions,
        count_events=EventCounter(tx, contact.id) if tx is not None else None,
        registry=registry,
    )


def trigger_of(
    tx: StoreTransaction, row: OutboxRow
) -> tuple[Event | None, dict[str, str | None] | None]:
    """The event that triggered a row's decision (and, for a stage-change rule, the change),
    read back from the occurrence in its key; ``(None, None)`` for timed rules' rows."""
    parts = row.key.split("/")
    if len(parts) < 5:
        return None, None
    occurrence = unescape_key_part(parts[3])
    event_id, _, change = occurrence.rpartition(":stage:")
    event = tx.event_of(row.contact_id, event_id or occurrence)
    if not event_id or event is None:
        return event, None
    before, _, after = change.partition(">")
    return event, {"from": before or None, "to": after or None}


def retry_delay(
    attempts: int,
    backoff: timedelta = timedelta(seconds=30),
    max_backoff: timedelta = timedelta(hours=6),
) -> timedelta:
    """How long to wait before retrying an action that failed ``attempts`` times."""
    delay: timedelta = backoff * 2 ** (attempts - 1)
    return min(delay, max_backoff)


def _contact_loader(
    tx: StoreTransaction, folded: Mapping[str, Contact]
) -> Callable[[str], Contact | None]:
    def load(contact_id: str) -> Contact | None:
        if contact_id in folded:
            return folded[contact_id]
        stored = tx.load_contacts([contact_id]).get(contact_id)
        return Contact.model_validate_json(stored) if stored else None

    return load


def ask_policies(
    registry: Registry,
    row: OutboxRow | Mapping[str, Any],
    contact: Contact,
    now: datetime,
    tx: StoreTransaction,
    in_flight: Callable[[], list[OutboxRow]],
) -> list[Any]:
    """Every dispatch policy's answer about running this row's action for ``contact`` now,
    asked in ``tx`` (the write transaction, or a read view).

    ``row`` is an ``OutboxRow`` or, for an action run inline, the row the fold is writing."""
    fields = row if isinstance(row, Mapping) else vars(row)
    return registry.dispatch_policy(
        action=fields["action"],
        params=fields["params"],
        contact=contact,
        now=now,
        tables=tx.tables,
        entity=fields["entity"],
        key=fields["key"],
        ruleset=fields["ruleset"],
        rule=fields["rule"],
        in_flight=in_flight,
    )


def _still_ours(tx: StoreTransaction, claim: Claim) -> bool:
    """Whether the claimed row is still held by this worker's lease (not taken by another)."""
    current = tx.action(claim.row.seq)
    return current is not None and (current.status, current.due_at, current.attempts) == (
        "pending",
        claim.lease_until,
        claim.attempts,
    )


@dataclass(frozen=True)
class Verdict:
    """What the dispatch policies said against running an action now: a veto (``until`` is
    None), or a deferral to ``until``; ``note`` says why, for the row and ``clm explain``."""

    note: str
    until: datetime | None = None


def verdict_of(answers: list[Any]) -> Verdict | None:
    """The policies' answers as one verdict (any veto wins; else the latest deferral), or
    None when the action may run. The one reading of ``dispatch_policy`` answers."""
    vetoes = [a.reason for a in answers if isinstance(a, Veto)]
    if vetoes:
        return Verdict("; ".join(vetoes))
    defers = [a for a in answers if isinstance(a, Defer)]
    if not defers:
        return None
    latest = max(defers, key=lambda d: d.until)
    return Verdict(f"deferred to {utc_text(latest.until)[:19]}Z: {latest.reason}", latest.until)


def failure_of(
    attempts: int,
    error: Exception,
    now: datetime,
    max_attempts: int,
    backoff: timedelta = timedelta(seconds=30),
    max_backoff: timedelta = timedelta(hours=6),
) -> tuple[datetime | None, str]:
    """An action that raised on its ``attempts``-th try: when to retry it (None: dead-letter
    it, after ``max_attempts``) and the note saying why."""
    reason = f"{type(error).__name__}: {error}"
    if attempts >= max_attempts:
        return None, f"failed {attempts} times; last: {reason}"
    retry_at = now + retry_delay(attempts, backoff, max_backoff)
    if isinstance(error, RetryLater) and error.after is not None:
        retry_at = max(retry_at, now + min(error.after, MAX_RETRY_AFTER))
    return retry_at, f"attempt {attempts} failed ({reason}); retrying at {utc_text(retry_at)[:19]}Z"


def result_outcome(result: Any) -> tuple[str, str | None]:
    """An action's result as a row's status and note: ``{"skipped": why}``,
    ``{"failed": why}`` and ``{"vetoed": why}`` (``ActionContext.veto_now``) say so, anything
    else is done."""
    status = outcome_of(result)
    return (status, str(result[status])) if status else ("done", None)


def outcome_of(result: Any) -> str | None:
    """``"skipped"``, ``"failed"`` or ``"vetoed"`` if an action's result says so
    (``{"failed": why}``)."""
    if isinstance(result, dict):
        return next(
            (status for status in ("skipped", "failed", "vetoed") if status in result), None
        )
    return None


def _history(
    tx: StoreTransaction,
    row: OutboxRow,
    kind: str,
    now: datetime,
    attempts: int,
    note: str | None,
    until: datetime | None,
) -> None:
    """Keep what was done with ``row`` (``ActionStep``): written with ``tx``'s commit."""
    tx.add_action_history(
        [
            ActionStep(
                seq=row.seq,
                contact_id=row.contact_id,
                kind=kind,
                at=utc_text(now),
                due_at=row.due_at,
                attempts=attempts,
                note=note,
                until=utc_text(until) if until is not None else None,
            )
        ]
    )


def _count(report: DispatchReport, row: OutboxRow, outcome: str, note: str | None) -> None:
    report.outcomes[outcome] += 1
    report.by_rule[(f"{row.ruleset}/{row.rule}", outcome)] += 1
    if note and outcome not in ("done", "skipped") and len(report.notes) < 1000:
        report.notes.append(f"{row.key}: {outcome}: {note}")


def follow_up_row(
    parent: Mapping[str, Any], item: dict[str, Any], created_at: str
) -> dict[str, Any]:
    """An outbox row an action enqueued: same rule and contact, key derived from the parent's
    (so it is enqueued once however often the parent runs), same chain depth (a planned
    continuation, such as a drip's next step, is not a loop). ``parent`` is the parent's row
    (an ``OutboxRow``'s fields, or the row the fold is writing)."""
    return {
        "key": f"{parent['key']}/{escape_key_part(item['occurrence'])}",
        "ruleset": parent["ruleset"],
        "version": parent["version"],
        "content_hash": parent["content_hash"],
        "rule": parent["rule"],
        "contact_id": parent["contact_id"],
        "action": item["action"],
        "params": item["params"],
        "priority": parent["priority"],
        "depth": parent["depth"],
        "due_at": utc_text(item["due_at"]),
        "created_at": created_at,
        "entity": item["entity"] if item["entity"] is not None else parent["entity"],
    }


def _effect_time(row: OutboxRow, contact: Contact) -> datetime:
    """When an action's effect happened, for the contact's history: when it was due.

    Stamping effects with their due time (not the moment a worker got to them) keeps a
    contact's history in logical order, so stage history and score decay show when things
    were meant to happen; but never before the contact's newest event, so an effect is never a
    "late" event that would make the engine re-fold the contact's history.
    """
    due = datetime.fromisoformat(row.due_at)
    if contact.last_event_at is not None and contact.last_event_at > due:
        return contact.last_event_at
    return due


def emitted_events(
    key: str,
    emitted: list[tuple[str, dict[str, Any], str | None]],
    contact_id: str,
    at: datetime,
) -> list[Event]:
    """The events an action (outbox ``key``) emitted about ``contact_id`` unless it named
    another, all dated ``at``, with ids derived from the key: the same events whether the
    action ran inline in a fold or at dispatch."""
    return [
        made_event(emitted_event_id(key, n), about or contact_id, type_, at, properties)
        for n, (type_, properties, about) in enumerate(emitted)
    ]


def emitted_event_id(key: str, n: int) -> str:
    """The id of the n-th event an action emitted: derived from its key, so a re-run of the
    same row emits the same events (deduplicated), and of fixed length however long the chain
    of actions that led to it."""
    return "a-" + hashlib.sha256(f"{key}#{n}".encode()).hexdigest()[:32]


def describe(condition: Any) -> str:
    """A condition in a few words, for a note: ``events.count(purchase, within PT4H) gt 0``."""
    from .models import All, AnyOf, Duration, FactRef, Leaf, Not

    if isinstance(condition, All):
        return " and ".join(_grouped(c) for c in condition.all)
    if isinstance(condition, AnyOf):
        return " or ".join(_grouped(c) for c in condition.any)
    if isinstance(condition, Not):
        return f"not {_grouped(condition.not_)}"
    assert isinstance(condition, Leaf)
    if condition.op == "in_segment":
        return f"in segment {condition.value}"
    fact = condition.fact or ""
    if condition.args:
        args = ", ".join(str(v) if k == "type" else f"{k} {v}" for k, v in condition.args.items())
        fact = f"{fact}({args})"
    value = condition.value
    if isinstance(value, FactRef):
        shown = value.fact
    elif isinstance(value, Duration):
        shown = ", ".join(f"{v} {k}" for k, v in value.model_dump().items() if v)
    else:
        shown = json.dumps(value)
    return f"{fact} {condition.op} {shown}"


def _grouped(condition: Any) -> str:
    from .models import Leaf

    text = describe(condition)
    return text if isinstance(condition, Leaf) else f"({text})"
