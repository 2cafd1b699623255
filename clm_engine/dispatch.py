"""Dispatch: run the actions that are due, exactly once for their internal effects.

Rows are taken in due order (then priority, then enqueue order) inside a ``BEGIN IMMEDIATE``
write transaction, so two processes never run the same row. For each row, in its own
savepoint: ask the dispatch policies (veto or defer), validate the parameters, run the action,
apply the events it emitted (reducers, and any rules they trigger) and mark the row, all in
that transaction. An action that raises is retried with exponential backoff and dead-lettered
after ``max_attempts``; it never stops the other actions or the engine.

External effects (an email) happen inside ``run``: if the process dies after ``run`` and
before the commit, the row runs again (at least once); the row's ``key`` goes with the effect
so that a receiver can deduplicate.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from . import plugins
from .models import Contact, Event, describe_validation_error, utc_text
from .store import OutboxRow, StoreTransaction
from .types import ActionContext, Defer, Veto

if TYPE_CHECKING:
    from .plugins import ActionSpec

#: Actions that lead to actions that lead to ... : past this depth, a loop is assumed.
MAX_CHAIN_DEPTH = 10


@dataclass
class DispatchReport:
    """What one dispatch run did, by outcome, and the notes worth showing a person."""

    outcomes: Counter = field(default_factory=Counter)
    by_rule: Counter = field(default_factory=Counter)  # (ruleset/rule, outcome) -> count
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


ApplyEvents = Callable[[StoreTransaction, list[Event], int], list[str]]


class Dispatcher:
    def __init__(
        self,
        *,
        actions: dict[str, ActionSpec],
        stages: tuple[str, ...],
        apply_events: ApplyEvents,
        max_attempts: int = 5,
        dry_run_external: bool = False,
        backoff: timedelta = timedelta(seconds=30),
        max_backoff: timedelta = timedelta(hours=6),
    ) -> None:
        self.actions = actions
        self.stages = stages
        self.apply_events = apply_events
        self.max_attempts = max_attempts
        self.dry_run_external = dry_run_external
        self.backoff = backoff
        self.max_backoff = max_backoff

    def run_batch(
        self, tx: StoreTransaction, now: datetime, limit: int, report: DispatchReport
    ) -> int:
        """Dispatch up to ``limit`` due rows in ``tx``; how many were taken."""
        rows = tx.due_actions(utc_text(now), limit)
        for row in rows:
            with tx.savepoint():
                outcome, note = self._one(tx, row, now)
            report.outcomes[outcome] += 1
            report.by_rule[(f"{row.ruleset}/{row.rule}", outcome)] += 1
            if note and outcome not in ("done", "skipped") and len(report.notes) < 1000:
                report.notes.append(f"{row.key}: {outcome}: {note}")
        return len(rows)

    def _one(self, tx: StoreTransaction, row: OutboxRow, now: datetime) -> tuple[str, str | None]:
        at = utc_text(now)

        def finish(status: str, note: str | None = None, result: Any = None, attempts: int = 0):
            tx.finish_action(
                row.seq,
                status=status,
                note=note,
                result=result,
                at=at,
                attempts=row.attempts + attempts,
            )
            return status, note

        spec = self.actions.get(row.action)
        if spec is None:
            return finish("dead", f"action {row.action!r} is not registered (plugin removed?)")
        if row.depth > MAX_CHAIN_DEPTH:
            return finish("dead", f"{row.depth} actions led to this one: a loop between rules?")
        stored = tx.load_contacts([row.contact_id]).get(row.contact_id)
        if stored is None:
            return finish("skipped", "the contact no longer exists")
        contact = Contact.model_validate_json(stored)
        answers = plugins.dispatch_policy(row.action, row.params, contact, now)
        vetoes = [a.reason for a in answers if isinstance(a, Veto)]
        if vetoes:
            return finish("vetoed", "; ".join(vetoes))
        defers = [a for a in answers if isinstance(a, Defer)]
        if defers:
            latest = max(defers, key=lambda d: d.until)
            note = f"deferred to {utc_text(latest.until)[:19]}Z: {latest.reason}"
            tx.reschedule_action(
                row.seq, due_at=utc_text(latest.until), note=note, attempts=row.attempts
            )
            return "deferred", note
        try:
            params = spec.params.model_validate(row.params)
        except ValidationError as error:
            return finish("dead", f"parameters no longer valid: {describe_validation_error(error)}")
        if spec.external and self.dry_run_external:
            return finish("simulated", "external action: recorded, not run (dry run)", attempts=1)
        ctx = ActionContext(
            contact=contact,
            key=row.key,
            now=now,
            ruleset=row.ruleset,
            rule=row.rule,
            stages=self.stages,
        )
        try:
            with tx.savepoint():  # the action's effects roll back alone if anything fails
                result = spec.run(ctx, params)
                effective = _effect_time(row, contact)
                events = [
                    Event(
                        id=_emitted_id(row.key, n),
                        contact_id=row.contact_id,
                        type=type_,
                        occurred_at=effective,
                        properties=properties,
                    )
                    for n, (type_, properties) in enumerate(ctx.emitted)
                ]
                failures = self.apply_events(tx, events, row.depth + 1) if events else []
                if failures:
                    raise RuntimeError("; ".join(failures))
        except Exception as error:  # a plugin's failure is retried, never fatal
            attempts = row.attempts + 1
            reason = f"{type(error).__name__}: {error}"
            if attempts >= self.max_attempts:
                return finish("dead", f"failed {attempts} times; last: {reason}", attempts=1)
            delay = min(self.backoff * 2 ** (attempts - 1), self.max_backoff)
            note = (
                f"attempt {attempts} failed ({reason}); retrying at {utc_text(now + delay)[:19]}Z"
            )
            tx.reschedule_action(
                row.seq, due_at=utc_text(now + delay), note=note, attempts=attempts
            )
            return "retried", note
        if isinstance(result, dict) and "skipped" in result:
            return finish("skipped", str(result["skipped"]), result, attempts=1)
        return finish("done", None, result, attempts=1)


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


def _emitted_id(key: str, n: int) -> str:
    """The id of the n-th event an action emitted: derived from its key, so a re-run of the
    same row emits the same events (deduplicated), and of fixed length however long the chain
    of actions that led to it."""
    return "a-" + hashlib.sha256(f"{key}#{n}".encode()).hexdigest()[:32]
