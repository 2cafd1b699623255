"""Answers to "why did (or didn't) this contact get this?", from traces, the outbox and rules.

``explain`` reads what was recorded; ``check`` evaluates now, without writing anything (a dry
run). Both return plain data (JSON-able dicts); the CLI draws them as trees.

A trace records the values its rule's condition read, not the condition tree: ``explain``
rebuilds the tree (each condition, its operator and value, the value seen, its result) from
the ruleset version the trace names, loaded from the store if it is not the one loaded now.
Traces written before that keep their tree, shown as recorded. A decision whose trace was
pruned (``clm prune``) is shown from its outbox rows, and says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .conditions import ConditionCompiler
from .errors import ClmError
from .evaluation import EventCounter, Fire, FireLog, limit_entity, unescape_key_part
from .models import (
    Condition,
    Contact,
    EventTrigger,
    RecurringTrigger,
    RelativeTrigger,
    Ruleset,
    StageTrigger,
    utc_text,
)
from .rules import CompiledRule, _combined
from .store import Trace
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
) -> dict[str, Any]:
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
    timelines = engine.action_timelines([*actions.values(), *planned])
    rebuild = _Rebuilder(engine)
    pruned_before = engine.store.traces_pruned_before()
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
                "conditions": rebuild.conditions(trace),
                "actions": [
                    {
                        **_action(actions.get(key), key, timelines),
                        "follow_ups": [
                            _action(r, r.key, timelines)
                            for r in planned
                            if r.key.startswith(key + "/")
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
    if pruned_before is not None:
        _add_pruned(by_rule, planned, pruned_before, rule, ruleset, limit, timelines)
    for (_, _), entry in by_rule.items():
        if not entry["decisions"] and "not_evaluated" not in entry:
            found = engine.rulebook.rules.get((entry["ruleset"], entry["rule"]))
            entry["not_evaluated"] = _why_not(engine, contact, found)
    for (set_name, rule_id), entry in by_rule.items():
        upcoming = _next_occurrences(
            engine, contact, engine.rulebook.rules.get((set_name, rule_id))
        )
        if upcoming:
            entry["next"] = upcoming
            if pruned_before is not None:
                entry["not_evaluated"] += (
                    f" (traces of decisions before {pruned_before[:10]} were pruned)"
                )
    return {
        "contact": contact.id,
        "stage": contact.stage,
        "rules": list(by_rule.values()),
        "health": health_parts(engine, contact.id),
    }


class _Rebuilder:
    """The condition tree of each trace, rebuilt from the values it recorded and the ruleset
    version it names (the one loaded, or an earlier one from the store)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.versions: dict[tuple[str, str], tuple[ConditionCompiler, Ruleset] | str] = {}

    def conditions(self, trace: Trace) -> Any:
        if trace.seen is None:
            return trace.tree  # recorded whole (before m009), or no condition
        try:
            found = self._rule(trace)
            if isinstance(found, str):
                raise ValueError(found)
            compiler, condition = found
            ctx = FactContext(
                contact=Contact.model_construct(id=trace.contact_id),
                now=datetime.fromisoformat(trace.at),
                stages=compiler.stages,
            )
            return compiler.rebuild(condition, trace.seen, ctx)
        except Exception as error:  # an old version the plugins loaded now cannot prepare
            return {
                "error": f"the conditions cannot be rebuilt: {error}",
                "seen": trace.seen,
                "result": trace.decision in ("fired", "blocked_by_limit"),
            }

    def _rule(self, trace: Trace) -> tuple[ConditionCompiler, Condition | None] | str:
        compiled = self.engine.rulebook.rules.get((trace.ruleset, trace.rule))
        if compiled is not None and compiled.content_hash == trace.content_hash:
            return compiled.compiler, compiled.condition
        key = (trace.ruleset, trace.content_hash)
        if key not in self.versions:
            self.versions[key] = self._load(*key, trace.version)
        version = self.versions[key]
        if isinstance(version, str):
            return version
        compiler, ruleset = version
        rule = next((r for r in ruleset.rules if r.id == trace.rule), None)
        if rule is None:
            return f"ruleset {trace.ruleset!r} v{trace.version} has no rule {trace.rule!r}"
        return compiler, _combined(rule)

    def _load(self, name: str, content_hash: str, version: int) -> tuple[Any, Ruleset] | str:
        source = self.engine.store.read().ruleset_source(name, content_hash)
        if source is None:
            return f"ruleset {name!r} v{version} ({content_hash[:12]}) is not in the store"
        ruleset = Ruleset.model_validate_json(source)
        engine = self.engine
        compiler = ConditionCompiler(
            operators=engine.operators,
            facts=engine.facts,
            segments=ruleset.segments,
            stages=tuple(ruleset.stages) if ruleset.stages else engine.rulebook.stages,
        )
        return compiler, ruleset


def _add_pruned(
    by_rule: dict[tuple[str, str], dict[str, Any]],
    rows: list[Any],
    before: str,
    rule: str | None,
    ruleset: str | None,
    limit: int,
    timelines: dict[int, list[dict[str, Any]]],
) -> None:
    """The decisions whose trace was pruned, from their outbox rows (which stay: their keys
    make each decision happen once), newest first, after the rule's traced decisions.

    ``rows`` are the contact's outbox rows that no trace read here names. A rule with fewer
    than ``limit`` traces had all of them read (the store returns up to ``limit`` per rule),
    so its decisions among ``rows`` have no trace any more."""
    decisions: dict[str, list[Any]] = {}
    for row in rows:
        parts = row.key.split("/")
        if len(parts) == 5:  # a decision's own action (follow-ups have longer keys)
            decisions.setdefault("/".join(parts[:4]), []).append(row)
    newest_first = sorted(decisions.items(), key=lambda item: min(r.due_at for r in item[1]))
    for prefix, group in reversed(newest_first):
        first = group[0]
        if rule not in (None, first.rule) or ruleset not in (None, first.ruleset):
            continue
        entry = by_rule.setdefault(
            (first.ruleset, first.rule),
            {
                "ruleset": first.ruleset,
                "rule": first.rule,
                "description": "",
                "trigger": "",
                "decisions": [],
                "note": "this rule is not in the rulesets loaded now",
            },
        )
        if len(entry["decisions"]) >= limit:
            continue
        entry.pop("not_evaluated", None)
        entry["decisions"].append(
            {
                "at": min(r.due_at for r in group)[:19] + "Z",
                "occurrence": unescape_key_part(prefix.split("/")[3]),
                "trigger": "(trace pruned)",
                "decision": "fired",
                "detail": f"its trace was pruned (traces of decisions before {before[:10]} are "
                "removed by clm prune); its actions are below",
                "version": first.version,
                "content_hash": first.content_hash[:12],
                "conditions": None,
                "pruned": True,
                "actions": [{**_action(r, r.key, timelines), "follow_ups": []} for r in group],
            }
        )


def _next_occurrences(engine: Engine, contact: Contact, compiled: CompiledRule | None) -> str:
    """A recurring rule's next anniversary, as the contact lives it: "next 2027-03-14 09:00
    Europe/Paris" (an empty text for other rules, or when none is pending)."""
    if compiled is None or not isinstance(compiled.rule.when, RecurringTrigger):
        return ""
    when = compiled.rule.when
    zone = contact.timezone if when.timezone == "contact" else when.timezone
    parts = []
    for entity, _, fire_at, status, _ in engine.store.anchors_of(
        contact.id, compiled.ruleset, compiled.id
    ):
        if status == "pending":
            local = datetime.fromisoformat(fire_at).astimezone(ZoneInfo(zone))
            parts.append(f"{entity + ': ' if entity else ''}next {local:%Y-%m-%d %H:%M} {zone}")
    return "; ".join(parts)


def _rule_header(compiled: CompiledRule) -> dict[str, Any]:
    return {
        "ruleset": compiled.ruleset,
        "rule": compiled.id,
        "version": compiled.version,
        "description": compiled.rule.description,
        "trigger": compiled.trigger_text(),
        "decisions": [],
    }


def _action(row: Any, key: str, timelines: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """An outbox row as explain shows it: a finished row says when it finished (its
    ``due_at`` is then the time it was due, not the end of a send's lease), and every row
    carries its history (``Engine.action_timelines``)."""
    if row is None:
        return {"key": key, "status": "unknown (not in the outbox)"}
    history = timelines.get(row.seq, [])
    finished = row.status != "pending" and len(history) > 1
    return {
        "key": key,
        "action": row.action,
        "params": row.params,
        "status": row.status,
        "due_at": history[-1]["due_at"] if finished else row.due_at[:19] + "Z",
        "finished_at": row.finished_at[:19] + "Z" if row.finished_at else None,
        "attempts": row.attempts,
        "note": row.note,
        "history": history,
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
    if isinstance(when, RecurringTrigger):
        upcoming = _next_occurrences(engine, contact, compiled)
        return upcoming or f"not scheduled: the contact has no {when.on} (or no later one)"
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
    zone = contact.timezone if when.timezone == "contact" else when.timezone
    slot = engine.store.read().schedule_slot(compiled.ruleset, compiled.id, zone)
    if slot is None:
        return "not run yet: its clock starts the first time the engine ticks with this rule"
    return f"no match on its slots (the latest ran {slot[:16]}Z)"


def check(engine: Engine, contact_id: str, *, ruleset: str | None = None) -> dict[str, Any]:
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
                None,
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


def health_parts(engine: Engine, contact_id: str) -> dict[str, Any]:
    """The contact's health score now (``contact.health.score``) and the parts it is made of:
    each part's value, score and weight, by the health definition loaded beside the rulesets
    (the shipped default without one)."""
    from .analytics.health import definition_in, health_of
    from .store.analytics_dialect import analytics_db

    definition = definition_in(engine.rulebook.documents)
    health = health_of(analytics_db(engine.store), contact_id, definition, engine.clock.now())
    return {"definition": definition.health, **health.as_dict()}
