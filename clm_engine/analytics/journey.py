"""The journey map's data: the loaded rulesets read as a diagram of stages, the rules that move
contacts between them (``stage.set``) and the touchpoints (emails, offers: any action that is
not the core's own state keeping) at each stage, with counts from the history.

Where a rule acts is read from the rule itself: a ``stage_changed`` trigger's ``to`` (it acts on
entering those stages), else a ``contact.stage`` test (``eq`` / ``in``) in its trigger filter or
``if``; a rule that names no stage acts at "any stage". Counts: a move's transitions are the
stage transitions whose recorded cause is that rule; a touchpoint's are the rule's fires (its
``fired`` traces, so traces pruned by ``clm prune`` are not counted). Both are aggregate queries
(``clm_engine.store.analytics``); the rules are walked in Python, never the contacts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from ..models import All, AnyOf, Condition, EventTrigger, Leaf, Not, Rule, Ruleset, StageTrigger
from ..store import analytics as sql

#: The core's own state-keeping actions: what a rule does to the contact's record, not a
#: touchpoint the contact sees.
STATE_ACTIONS = frozenset(
    {"stage.set", "score.add", "tag.add", "tag.remove", "attribute.set", "event.emit"}
)
ANY_STAGE = "any stage"
_CAUSE = re.compile(r"^rule (?P<rule>\S+) of ruleset (?P<ruleset>[^:\s]+)")


def journey_map(
    db: Any, rulesets: Sequence[Ruleset], stages: Sequence[str], *, until: str
) -> dict[str, Any]:
    """``{"stages": [...], "moves": [...], "touchpoints": [...]}``, each with its counts."""
    counts = {stage: (now, reached) for stage, now, reached in sql.stage_counts(db)}
    fires = {(rs, rule): (n, c) for rs, rule, n, c in sql.fires_by_rule(db, until=until)}
    moved: dict[tuple[str, str, str | None, str], int] = {}
    entries: dict[str, int] = {}
    for cause, before, after, n in sql.transitions_by_cause(db, until=until):
        found = _CAUSE.match(cause)
        if found is not None:
            key = (found["ruleset"], found["rule"], before, after)
            moved[key] = moved.get(key, 0) + n
        elif before is None:
            entries[after] = entries.get(after, 0) + n
    moves, touchpoints = [], []
    for ruleset in rulesets:
        for rule in ruleset.rules:
            where = stages_of(rule)
            fired, contacts = fires.get((ruleset.ruleset, rule.id), (0, 0))
            for call in rule.then:
                if call.action == "stage.set":
                    target = str(call.with_.get("stage", ""))
                    moves.append(
                        {
                            "ruleset": ruleset.ruleset,
                            "rule": rule.id,
                            "from": where or [ANY_STAGE],
                            "to": target,
                            "backward": bool(call.with_.get("backward", False)),
                            "transitions": sum(
                                n
                                for (rs, r, _, after), n in moved.items()
                                if (rs, r, after) == (ruleset.ruleset, rule.id, target)
                            ),
                        }
                    )
                elif call.action not in STATE_ACTIONS:
                    touchpoints.append(
                        {
                            "ruleset": ruleset.ruleset,
                            "rule": rule.id,
                            "action": call.action,
                            "what": _what(call.with_),
                            "stages": where or [ANY_STAGE],
                            "fires": fired,
                            "contacts": contacts,
                        }
                    )
    return {
        "stages": [
            {
                "stage": stage,
                "position": index,
                "contacts_now": counts.get(stage, (0, 0))[0],
                "reached": counts.get(stage, (0, 0))[1],
                "entered_first": entries.get(stage, 0),
            }
            for index, stage in enumerate(stages)
        ],
        "moves": moves,
        "touchpoints": touchpoints,
    }


def stages_of(rule: Rule) -> list[str]:
    """The stages a rule acts in, as the rule says them (empty: it does not say)."""
    when = rule.when
    if isinstance(when, StageTrigger) and when.stage_changed.to is not None:
        to = when.stage_changed.to
        return [to] if isinstance(to, str) else list(to)
    found: list[str] = []
    conditions = [rule.if_]
    if isinstance(when, EventTrigger):
        conditions.append(when.where)
    for condition in conditions:
        for leaf in _required_leaves(condition):
            if leaf.fact == "contact.stage" and leaf.op == "eq" and isinstance(leaf.value, str):
                found.append(leaf.value)
            elif leaf.fact == "contact.stage" and leaf.op == "in" and isinstance(leaf.value, list):
                found += [v for v in leaf.value if isinstance(v, str)]
    return list(dict.fromkeys(found))


def _required_leaves(condition: Condition | None) -> Iterator[Leaf]:
    """The leaves that must hold for ``condition`` to hold: under ``all``, not under ``any``
    or ``not`` (a stage named there is not where the rule acts)."""
    if condition is None or isinstance(condition, AnyOf | Not):
        return
    if isinstance(condition, All):
        for part in condition.all:
            yield from _required_leaves(part)
        return
    yield condition


def _what(params: dict[str, Any]) -> str:
    """A touchpoint's name for people: its template, offer or sequence, when it has one."""
    for key in ("template", "offer", "sequence", "subject", "name"):
        value = params.get(key)
        if isinstance(value, str) and value:
            return value
    return ""
