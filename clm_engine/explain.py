"""Answers to "why did (or didn't) this contact get this?", from traces, the outbox and rules.

``explain`` reads what was recorded; ``check`` evaluates now, without writing anything (a dry
run). Both return plain data (JSON-able dicts); the CLI draws them as trees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ClmError
from .evaluation import EventCounter, Fire, FireLog, limit_entity
from .models import Contact, EventTrigger, RelativeTrigger, StageTrigger, utc_text
from .rules import CompiledRule
from .types import FactContext

if TYPE_CHECKING:
    from .engine import Engine


def explain(
    engine: Engine,
    contact_id: str,
    *,
    rule: str | None = None,
    ruleset: str | None = None,
    limit: int = 20,
) -> dict:
    """Per rule (of ``ruleset``, or only ``rule``): its latest ``limit`` decisions for the
    contact, each with its condition trace and what became of its actions; or why it has none."""
    contact = engine.contact(contact_id)
    if contact is None:
        raise ClmError(f"no contact {contact_id!r}")
    traces = [
        t
        for t in engine.store.traces(contact_id, rule=rule, limit=limit)
        if ruleset in (None, t.ruleset)
    ]
    actions = engine.store.actions_by_key([k for t in traces for k in t.actions])
    # Follow-ups an action enqueued (a drip's next steps) have keys under their parent's.
    planned = [r for r in engine.store.actions_for(contact_id) if r.key not in actions]
    by_rule: dict[tuple[str, str], dict[str, Any]] = {}
    for (set_name, rule_id), compiled in engine.rulebook.rules.items():
        if rule in (None, rule_id) and ruleset in (None, set_name):
            by_rule[(set_name, rule_id)] = _rule_header(compiled)
    for (set_name, rule_id), disabled in engine.rulebook.disabled.items():
        if rule in (None, rule_id) and ruleset in (None, set_name):
            by_rule[(set_name, rule_id)] = {
                "ruleset": set_name,
                "rule": rule_id,
                "description": disabled.description,
                "trigger": "",
                "decisions": [],
                "not_evaluated": "the rule is disabled",
            }
    for trace in traces:
        entry = by_rule.setdefault(
            (trace.ruleset, trace.rule),
            {
                "ruleset": trace.ruleset,
                "rule": trace.rule,
                "description": "",
                "trigger": trace.trigger,
                "decisions": [],
                "note": "this rule is not in the rulesets loaded now",
            },
        )
        if len(entry["decisions"]) >= limit:
            continue
        entry["decisions"].append(
            {
                "at": trace.at[:19] + "Z",
                "occurrence": trace.occurrence,
                "trigger": trace.trigger,
                "decision": trace.decision,
                "detail": trace.detail,
                "version": trace.version,
                "content_hash": trace.content_hash[:12],
                "conditions": trace.tree,
                "actions": [
                    {
                        **_action(actions.get(key), key),
                        "follow_ups": [
                            _action(r, r.key) for r in planned if r.key.startswith(key + "/")
                        ],
                    }
                    for key in trace.actions
                ],
            }
        )
    if rule is not None and not by_rule:
        known = sorted({r for _, r in engine.rulebook.rules})
        raise ClmError(f"no rule {rule!r} in the loaded rulesets (rules: {', '.join(known)})")
    if ruleset is not None and not by_rule:
        raise ClmError(f"no ruleset {ruleset!r} is loaded")
    for (_, _), entry in by_rule.items():
        if not entry["decisions"] and "not_evaluated" not in entry:
            compiled = engine.rulebook.rules.get((entry["ruleset"], entry["rule"]))
            entry["not_evaluated"] = _why_not(engine, contact, compiled)
    return {"contact": contact.id, "stage": contact.stage, "rules": list(by_rule.values())}


def _rule_header(compiled: CompiledRule) -> dict[str, Any]:
    return {
        "ruleset": compiled.ruleset,
        "rule": compiled.id,
        "version": compiled.version,
        "description": compiled.rule.description,
        "trigger": compiled.trigger_text(),
        "decisions": [],
    }


def _action(row: Any, key: str) -> dict[str, Any]:
    if row is None:
        return {"key": key, "status": "unknown (not in the outbox)"}
    return {
        "key": key,
        "action": row.action,
        "params": row.params,
        "status": row.status,
        "due_at": row.due_at[:19] + "Z",
        "attempts": row.attempts,
        "note": row.note,
    }


def _why_not(engine: Engine, contact: Contact, compiled: CompiledRule | None) -> str:
    if compiled is None:
        return "not in the loaded rulesets"
    when = compiled.rule.when
    if isinstance(when, EventTrigger):
        last = engine.store.last_event(contact.id, when.event)
        if last is None:
            return f"not evaluated: the trigger never came (no {when.event} event for this contact)"
        return (
            f"no decision recorded: no match on its {when.event} events (latest "
            f'{utc_text(last.occurred_at)[:10]}); "trace": "all" in the ruleset records non-matches'
        )
    if isinstance(when, StageTrigger):
        return f"not evaluated: the trigger never came ({compiled.trigger_text()})"
    if isinstance(when, RelativeTrigger):
        anchors = engine.store.anchors_of(contact.id, compiled.ruleset, compiled.id)
        if not anchors:
            return f"not scheduled: the contact has no {when.anchor}"
        parts = []
        for entity, anchor_at, fire_at, status, note in anchors:
            which = f"{entity}: " if entity else ""
            if status == "pending":
                parts.append(f"{which}fires at {fire_at[:16]}Z ({when.anchor} is {anchor_at[:10]})")
            else:
                parts.append(f"{which}{status} at {fire_at[:16]}Z" + (f" ({note})" if note else ""))
        return "; ".join(parts)
    last = engine.store.read().schedule_slot(compiled.ruleset, compiled.id, when.timezone)
    if when.timezone == "contact":
        last = engine.store.read().schedule_slot(compiled.ruleset, compiled.id, contact.timezone)
    if last is None:
        return "not run yet: its clock starts the first time the engine ticks with this rule"
    return f"no match on its slots (the latest ran {last[:16]}Z)"


def check(engine: Engine, contact_id: str, *, ruleset: str | None = None) -> dict:
    """What each rule would decide for the contact now, changing nothing (a dry run).

    Event rules are judged as if the contact's latest event of their type happened again;
    stage-change and time rules are judged on the contact's state as it is.
    """
    contact = engine.contact(contact_id)
    if contact is None:
        raise ClmError(f"no contact {contact_id!r}")
    now = engine.clock.now()
    reader = engine.store.read()
    results = []
    for (ruleset_name, _), compiled in engine.rulebook.rules.items():
        if ruleset not in (None, ruleset_name):
            continue
        when = compiled.rule.when
        event = (
            engine.store.last_event(contact.id, when.event)
            if isinstance(when, EventTrigger)
            else None
        )
        if isinstance(when, EventTrigger) and event is None:
            results.append(
                {
                    **_rule_header(compiled),
                    "would_fire": False,
                    "why": f"no {when.event} event to judge it on",
                }
            )
            continue
        ctx = FactContext(
            contact=contact,
            now=event.occurred_at if event else now,
            event=event,
            count_events=EventCounter(reader, contact.id),
            stages=engine.rulebook.stages,
            db=reader.db,
            tables=reader.tables,
            documents=engine.rulebook.documents,
        )
        tree = compiled.compiler.explain(compiled.condition, ctx) if compiled.condition else None
        hit = tree is None or bool(tree["result"])
        why = "conditions hold" if hit else "conditions do not hold"
        if hit and (compiled.once_per or compiled.cooldown):
            # The same limit check the engine makes when it settles a fire.
            fire = Fire(
                compiled,
                contact.id,
                "dry-run",
                "",
                ctx.now,
                True,
                tree,
                limit_entity(compiled, ctx),
                0,
            )
            blocked = FireLog(reader).blocked(fire)
            if blocked:
                hit, why = False, f"blocked by limit: {blocked}"
        results.append(
            {
                **_rule_header(compiled),
                "would_fire": hit,
                "why": why,
                "conditions": tree,
                "actions": [c.action for c, _ in compiled.actions] if hit else [],
            }
        )
    if ruleset is not None and not results:
        raise ClmError(f"no ruleset {ruleset!r} is loaded")
    return {"contact": contact.id, "stage": contact.stage, "rules": results}
