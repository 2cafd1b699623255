"""Match and enqueue: which rules an occurrence fires, and what that puts in the outbox.

Runs inside the ingest transaction, while the engine folds a contact's new events: each new
event is evaluated against the contact *as of that event* (so a late event is judged on the
state it would have met). Decisions are collected as ``Fire`` records, then ``settle`` applies
limits, writes outbox rows with deterministic keys and records a trace for each decision, all
in the same transaction as the event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .conditions.facts import plan_fact, resolve
from .models import Contact, Event, duration_to_timedelta, utc_text
from .rules import CompiledRule, RuleBook, RuleGroup
from .store import StoreTransaction, Trace
from .types import MISSING, FactContext


@dataclass
class Fire:
    """One evaluated rule on one occurrence for one contact (matched or, if traced, not)."""

    rule: CompiledRule
    contact_id: str
    occurrence: str
    trigger: str
    at: datetime
    matched: bool
    tree: Any
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
            documents=book.documents,
        )
        for group in groups or ():
            self._run(group, ctx, event.id, f"{event.type} event {event.id}", depth, out)
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
            tree = rule.compiler.explain(rule.condition, ctx) if rule.condition else None
            entity = limit_entity(rule, ctx) if hit else None
            out.append(
                Fire(rule, ctx.contact.id, occurrence, trigger, ctx.now, hit, tree, entity, depth)
            )


class EventCounter:
    """``events.count`` for one contact: its stored events, plus those of the batch being
    folded that are not stored yet (``pending``). The one place that answers it."""

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


def limit_entity(rule: CompiledRule, ctx: FactContext) -> str | None:
    """The value naming the entity a rule's ``once_per`` limit counts (``""`` per contact)."""
    if rule.once_per is None or rule.once_per == "contact":
        return ""
    value = resolve(plan_fact(rule.once_per, None, rule.compiler.facts), ctx)
    return None if value is MISSING or value is None else str(value)


def settle(tx: StoreTransaction, fires: list[Fire], *, recorded_at: str) -> int:
    """Apply limits, enqueue the actions of what fired, and trace every decision.

    Returns the number of outbox rows added. Fires are settled in occurrence order and, on the
    same occurrence, by rule priority (highest first), which is also the order their actions
    get in the outbox.
    """
    if not fires:
        return 0
    fires.sort(key=lambda f: (f.at, -f.rule.rule.priority))
    limited = [f for f in fires if f.matched and (f.rule.once_per or f.rule.cooldown)]
    state = tx.limit_state(list({limit_key(f) for f in limited if f.entity is not None}))
    rows: list[dict[str, Any]] = []
    traces: list[Trace] = []
    fired: list[tuple[str, str, str, str, str]] = []
    for fire in fires:
        rule = fire.rule
        at = utc_text(fire.at)
        decision, detail, keys = "no_match", None, []
        if fire.error:
            decision, detail = "error", f"evaluation failed: {fire.error}"
        if fire.matched:
            decision, detail = "fired", None
            if rule.once_per or rule.cooldown:
                blocked = blocked_by_limit(fire, state)
                if blocked:
                    decision, detail = "blocked_by_limit", blocked
                else:
                    state[limit_key(fire)] = at
                    fired.append((*limit_key(fire), at))
        if decision == "fired":
            for index, (call, params) in enumerate(rule.actions):
                key = f"{rule.ruleset}/{rule.id}/{fire.contact_id}/{fire.occurrence}/{index}"
                due = fire.at + duration_to_timedelta(call.after) if call.after else fire.at
                keys.append(key)
                rows.append(
                    {
                        "key": key,
                        "ruleset": rule.ruleset,
                        "version": rule.version,
                        "content_hash": rule.content_hash,
                        "rule": rule.id,
                        "contact_id": fire.contact_id,
                        "action": call.action,
                        "params": params,
                        "priority": rule.rule.priority,
                        "depth": fire.depth,
                        "due_at": utc_text(due),
                        "created_at": recorded_at,
                        "entity": fire.subject or fire.entity or None,
                    }
                )
        traces.append(
            Trace(
                contact_id=fire.contact_id,
                ruleset=rule.ruleset,
                version=rule.version,
                content_hash=rule.content_hash,
                rule=rule.id,
                occurrence=fire.occurrence,
                trigger=fire.trigger,
                decision=decision,
                detail=detail,
                tree=fire.tree,
                actions=keys,
                at=at,
            )
        )
    added = tx.enqueue(rows)
    tx.record_fires(fired)
    tx.add_traces(traces, recorded_at=recorded_at)
    return added


def limit_key(fire: Fire) -> tuple[str, str, str, str]:
    return (fire.rule.ruleset, fire.rule.id, fire.contact_id, fire.entity or "")


def blocked_by_limit(fire: Fire, state: dict[tuple, str]) -> str | None:
    """Why ``fire`` may not fire, given the last fires in ``state``; None if it may."""
    rule = fire.rule
    if fire.entity is None:
        return f"the limit's entity ({rule.once_per}) is missing for this occurrence"
    last = state.get(limit_key(fire))
    if last is None:
        return None
    per = "" if not fire.entity else f" for {rule.once_per} {fire.entity}"
    if rule.cooldown is None:
        return f"fires once{per}; last fired on {last[:19]}Z"
    elapsed = abs(fire.at - datetime.fromisoformat(last))
    if elapsed < rule.cooldown:
        return f"cooldown of {rule.cooldown}{per}; last fired on {last[:19]}Z"
    return None
