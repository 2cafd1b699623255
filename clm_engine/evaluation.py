"""Match and decide: which rules an occurrence fires, and what each decision is.

Runs inside the ingest transaction, while the engine folds a contact's events: each event is
judged against the contact *as of that event*. A rule that matches is a ``Fire``; its limits
(``FireLog``) make it a decision: fired, blocked by its limit, or (if traced) not matched. A
fired decision's actions become outbox rows under keys that name the decision
(``decision_key``), so a repeat of the same decision is a no-op; every decision leaves a trace.

The fold (``folding.py``) decides event by event and runs the internal actions due at once
inline; timed rules (anchors, schedules) decide in their sweeps through ``settle``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .conditions.facts import plan_fact, resolve
from .models import ActionCall, Contact, Event, duration_to_timedelta, utc_text
from .rules import CompiledRule, RuleBook, RuleGroup
from .store import StoreTransaction, Trace
from .types import MISSING, FactContext


def escape_key_part(part: str) -> str:
    """A key component with ``%`` and ``/`` escaped, so ``/`` only ever separates components."""
    return part.replace("%", "%25").replace("/", "%2F")


def unescape_key_part(part: str) -> str:
    """A key component as it was before ``escape_key_part``."""
    return part.replace("%2F", "/").replace("%25", "%")


def decision_key(ruleset: str, rule: str, contact_id: str, occurrence: str, index: int) -> str:
    """The outbox key of one action of one decision: the idempotency key of the decision.

    No two different (ruleset, rule, contact, occurrence, action index) share a key, whatever
    their ids hold: each component is escaped before they are joined with ``/``. The key is
    also an email's Message-ID and the seed of the ids of the events the action emits.
    """
    return "/".join(
        (
            escape_key_part(ruleset),
            escape_key_part(rule),
            escape_key_part(contact_id),
            escape_key_part(occurrence),
            str(index),
        )
    )


@dataclass
class Fire:
    """One evaluated rule on one occurrence for one contact (matched or, if traced, not)."""

    rule: CompiledRule
    contact_id: str
    occurrence: str
    trigger: str
    at: datetime
    matched: bool
    seen: dict[str, Any] | None  # the values its condition read (``ConditionCompiler.record``)
    entity: str | None
    depth: int
    error: str | None = None
    subject: str | None = None  # the entity an anchor fired for (a product id), if any


class Evaluator:
    """Evaluates the rules an event triggers, and the stage-change rules it causes."""

    def __init__(self, rulebook: RuleBook) -> None:
        self.rulebook = rulebook

    def on_event(
        self,
        contact: Contact,
        event: Event,
        stage_before: str | None,
        count_events: Callable[[str, datetime | None], int],
        depth: int,
        out: list[Fire],
        db: Any = None,
        tables: Any = None,
    ) -> None:
        book = self.rulebook
        groups = book.by_event.get(event.type)
        stage_changed = contact.stage != stage_before and stage_before is not None
        if not groups and not (stage_changed and book.on_stage_change):
            return
        ctx = FactContext(
            contact=contact,
            now=event.occurred_at,  # "now", for an event's rules, is when the event happened
            event=event,
            count_events=count_events,
            stages=book.stages,
            db=db,
            tables=tables,
            documents=book.documents,
        )
        for group in groups or ():
            self._run(group, ctx, event.id or "", f"{event.type} event {event.id}", depth, out)
        if stage_changed:
            ctx.transition = {"from": stage_before, "to": contact.stage}
            ctx.cache.clear()
            occurrence = f"{event.id}:stage:{stage_before}>{contact.stage}"
            trigger = f"stage change {stage_before} -> {contact.stage}"
            for group in book.on_stage_change:
                wanted = [r.matches_stage_change(stage_before, contact.stage) for r in group.rules]
                if any(wanted):
                    self._run(group, ctx, occurrence, trigger, depth, out, only=wanted)

    def _run(
        self,
        group: RuleGroup,
        ctx: FactContext,
        occurrence: str,
        trigger: str,
        depth: int,
        out: list[Fire],
        only: list[bool] | None = None,
    ) -> None:
        try:
            matched = set(group.evaluator.matching(ctx))
        except Exception:  # a plugin's fact or operator failed: find which rule, spare the rest
            matched = None
        for index, rule in enumerate(group.rules):
            if only is not None and not only[index]:
                continue
            if matched is None:
                try:
                    hit = (
                        rule.compiler.explain(rule.condition, ctx)["result"]
                        if rule.condition
                        else True
                    )
                except Exception as error:
                    reason = f"{type(error).__name__}: {error}"
                    out.append(
                        Fire(
                            rule,
                            ctx.contact.id,
                            occurrence,
                            trigger,
                            ctx.now,
                            False,
                            None,
                            None,
                            depth,
                            error=reason,
                        )
                    )
                    continue
            else:
                hit = index in matched
            if not hit and not rule.trace_all:
                continue
            if matched is None:  # the compiled evaluator failed: read node by node
                seen = rule.compiler.record(rule.condition, ctx)
            else:
                seen = group.evaluator.record(index, ctx)
            entity = limit_entity(rule, ctx) if hit else None
            out.append(
                Fire(rule, ctx.contact.id, occurrence, trigger, ctx.now, hit, seen, entity, depth)
            )


class EventCounter:
    """``events.count`` for one contact: its stored events, plus those of the batch being
    folded that are not stored yet (``pending``). Used when the stored events all come before
    the ones being judged (the usual in-order path, and timed rules)."""

    def __init__(
        self, reader: StoreTransaction, contact_id: str, pending: Sequence[Event] = ()
    ) -> None:
        self.reader, self.contact_id, self.pending = reader, contact_id, pending

    def __call__(self, type_: str, since: datetime | None) -> int:
        stored = self.reader.count_events(
            self.contact_id, type_, utc_text(since) if since else None
        )
        return stored + sum(
            1 for e in self.pending if e.type == type_ and (since is None or e.occurred_at >= since)
        )


class HistoryCounter:
    """``events.count`` over the events folded so far, in memory: a re-judged event sees the
    history up to itself, not the events stored after it. Events are added in time order, so
    a count is a bisection of that type's times, not a scan of the history."""

    def __init__(self) -> None:
        self.times: dict[str, list[datetime]] = defaultdict(list)

    def add(self, event: Event) -> None:
        self.times[event.type].append(event.occurred_at)

    def __call__(self, type_: str, since: datetime | None) -> int:
        times = self.times.get(type_, ())
        return len(times) - (bisect_left(times, since) if since is not None else 0)


def limit_entity(rule: CompiledRule, ctx: FactContext) -> str | None:
    """The value naming the entity a rule's ``once_per`` limit counts (``""`` per contact)."""
    if rule.once_per is None or rule.once_per == "contact":
        return ""
    value = resolve(plan_fact(rule.once_per, None, rule.compiler.facts), ctx)
    return None if value is MISSING or value is None else str(value)


LimitKey = tuple[str, str, str, str]  # ruleset, rule, contact, entity


def limit_key(fire: Fire) -> LimitKey:
    return (fire.rule.ruleset, fire.rule.id, fire.contact_id, fire.entity or "")


class FireLog:
    """The fires of limited rules (``once_per``, ``cooldown``), for the contacts at hand.

    Loaded from the store the first time a contact's limited rule matches, then kept in
    memory as decisions are taken, so a limit sees the fires taken earlier in the same batch.
    ``forget`` drops the fires a re-judgement is about to recompute.
    """

    def __init__(self, tx: StoreTransaction) -> None:
        self.tx = tx
        self.fires: dict[LimitKey, list[tuple[str, str]]] = {}  # (at, occurrence)
        #: Each contact's keys in ``fires``: ``forget`` reads one contact's, not the batch's.
        self.keys_of: dict[str, list[LimitKey]] = defaultdict(list)
        self.loaded: set[str] = set()
        self.added: list[tuple[str, str, str, str, str, str]] = []

    def load(self, contact_ids: Iterable[str]) -> None:
        wanted = [c for c in contact_ids if c not in self.loaded]
        if not wanted:
            return
        self.loaded.update(wanted)
        for contact_id, ruleset, rule, entity, occurrence, at in self.tx.fires_of(wanted):
            self._fires((ruleset, rule, contact_id, entity)).append((at, occurrence))

    def _fires(self, key: LimitKey) -> list[tuple[str, str]]:
        fires = self.fires.get(key)
        if fires is None:
            fires = self.fires[key] = []
            self.keys_of[key[2]].append(key)
        return fires

    def forget(self, contact_id: str, rules: set[tuple[str, str]], since: str) -> None:
        """Drop a contact's fires of ``rules`` at or after ``since``, in memory: the caller
        deletes them from the store (``delete_fires``) once the contact's fold succeeded,
        before ``flush`` writes the fires taken again."""
        self.load([contact_id])
        for key in self.keys_of.get(contact_id, ()):
            if key[:2] in rules:
                fires = self.fires[key]
                fires[:] = [f for f in fires if f[0] < since]
        self.added = [
            f for f in self.added if not (f[0] == contact_id and f[1:3] in rules and f[5] >= since)
        ]

    def blocked(self, fire: Fire) -> str | None:
        """Why ``fire`` may not fire, given the fires before (and around) it; None if it may."""
        rule = fire.rule
        if fire.entity is None:
            return f"the limit's entity ({rule.once_per}) is missing for this occurrence"
        self.load([fire.contact_id])
        fires = self.fires.get(limit_key(fire))
        if not fires:
            return None
        per = "" if not fire.entity else f" for {rule.once_per} {fire.entity}"
        if rule.cooldown is None:
            last = max(at for at, _ in fires)
            return f"fires once{per}; last fired on {last[:19]}Z"
        for at, _ in sorted(fires, reverse=True):
            if abs(fire.at - datetime.fromisoformat(at)) < rule.cooldown:
                return f"cooldown of {rule.cooldown}{per}; last fired on {at[:19]}Z"
        return None

    def record(self, fire: Fire) -> None:
        at = utc_text(fire.at)
        key = limit_key(fire)
        self._fires(key).append((at, fire.occurrence))
        self.added.append((fire.contact_id, key[0], key[1], key[3], fire.occurrence, at))

    def mark(self) -> int:
        """A point to ``rollback`` to: a fold that fails forgets the fires it took."""
        return len(self.added)

    def rollback(self, mark: int) -> None:
        for contact_id, ruleset, rule, entity, occurrence, at in reversed(self.added[mark:]):
            self.fires[(ruleset, rule, contact_id, entity)].remove((at, occurrence))
        del self.added[mark:]

    def flush(self) -> None:
        self.tx.record_fires(self.added)
        self.added = []


def decide(fire: Fire, log: FireLog) -> tuple[str, str | None]:
    """A fire's decision, ``(decision, detail)``: fired, blocked_by_limit, no_match or error.

    A fired decision of a limited rule is recorded in ``log``, so later fires see it."""
    if fire.error:
        return "error", f"evaluation failed: {fire.error}"
    if not fire.matched:
        return "no_match", None
    rule = fire.rule
    if rule.once_per or rule.cooldown:
        blocked = log.blocked(fire)
        if blocked:
            return "blocked_by_limit", blocked
        log.record(fire)
    return "fired", None


def action_row(
    fire: Fire, index: int, action: str, params: dict[str, Any], due: datetime, recorded_at: str
) -> dict[str, Any]:
    """The outbox row of one action of a fired decision (pending unless the caller runs it)."""
    rule = fire.rule
    return {
        "key": decision_key(rule.ruleset, rule.id, fire.contact_id, fire.occurrence, index),
        "ruleset": rule.ruleset,
        "version": rule.version,
        "content_hash": rule.content_hash,
        "rule": rule.id,
        "contact_id": fire.contact_id,
        "action": action,
        "params": params,
        "priority": rule.rule.priority,
        "depth": fire.depth,
        "due_at": utc_text(due),
        "created_at": recorded_at,
        "entity": fire.subject or fire.entity or None,
    }


_last_at: tuple[datetime | None, str] = (None, "")


def actions_of(
    fire: Fire, tables: Any, detail: str | None
) -> tuple[tuple[tuple[ActionCall, dict[str, Any]], ...], str | None]:
    """The actions a fired decision takes, and its trace's detail: the rule's own, or, for a
    rule with an experiment, those of the contact's arm (its exposure recorded, its arm named
    in the detail; a holdout arm takes none)."""
    rule = fire.rule
    experiment = rule.experiment
    if experiment is None:
        return rule.actions, detail
    arm, actions = experiment.expose(
        tables, contact_id=fire.contact_id, at=fire.at, occurrence=fire.occurrence
    )
    return actions, experiment.detail(arm)


def trace_of(fire: Fire, decision: str, detail: str | None, keys: list[str]) -> Trace:
    """The trace of a decision: what its condition saw (``fire.seen``), not the tree."""
    global _last_at
    rule = fire.rule
    # The fires of one occurrence share its time: format it once (utc_text costs microseconds,
    # as much as the rest of a trace).
    moment, at = _last_at
    if moment is not fire.at:
        at = utc_text(fire.at)
        _last_at = (fire.at, at)
    return Trace(
        contact_id=fire.contact_id,
        ruleset=rule.ruleset,
        version=rule.version,
        content_hash=rule.content_hash,
        rule=rule.id,
        occurrence=fire.occurrence,
        trigger=fire.trigger,
        decision=decision,
        detail=detail,
        tree=None,
        seen=fire.seen,
        actions=keys,
        at=at,
    )


def settle(tx: StoreTransaction, fires: list[Fire], *, recorded_at: str) -> int:
    """Decide timed rules' fires, enqueue what fired and trace every decision.

    Returns the number of outbox rows added. Fires are settled in occurrence order and, on the
    same occurrence, by rule priority (highest first), which is also the order their actions
    get in the outbox. Their actions run at dispatch (``Engine.tick`` dispatches at once).
    """
    if not fires:
        return 0
    fires.sort(key=lambda f: (f.at, -f.rule.rule.priority))
    log = FireLog(tx)
    log.load({f.contact_id for f in fires if f.matched and (f.rule.once_per or f.rule.cooldown)})
    rows: list[dict[str, Any]] = []
    traces: list[Trace] = []
    for fire in fires:
        decision, detail = decide(fire, log)
        keys: list[str] = []
        if decision == "fired":
            actions, detail = actions_of(fire, tx.tables, detail)
            for index, (call, params) in enumerate(actions):
                due = fire.at + duration_to_timedelta(call.after) if call.after else fire.at
                row = action_row(fire, index, call.action, params, due, recorded_at)
                keys.append(row["key"])
                rows.append(row)
        traces.append(trace_of(fire, decision, detail, keys))
    added = tx.enqueue(rows)
    log.flush()
    tx.add_traces(traces, recorded_at=recorded_at)
    return added
