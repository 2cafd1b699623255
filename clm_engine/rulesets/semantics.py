"""Checks that need the registered plugins or the stage model: the last step of validation.

By now the ruleset has the right shape (JSON Schema) and types (pydantic). What remains is
whether the names in it mean something: actions and their parameters, operators and their
values, facts, stages, segments, cron expressions, timezones. Each check returns issues with
pointers; none stops at the first problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import ValidationError

from ..experiments.checks import check_experiment
from ..models import (
    All,
    AnyOf,
    Condition,
    EventTrigger,
    FactRef,
    Leaf,
    Not,
    RecurringTrigger,
    RelativeTrigger,
    Rule,
    Ruleset,
    ScheduleTrigger,
    StageTrigger,
)
from .fact_paths import SEGMENT, FactPaths, Scope, stage_names_in
from .goals import goal_issues
from .problems import Issue, did_you_mean, join, pointer, quoted_list
from .pydantic_errors import pydantic_issues

#: Leaves whose value names stages, when compared with these operators.
STAGE_FACTS = frozenset({"contact.stage", "transition.from", "transition.to"})
STAGE_VALUE_OPS = frozenset({"eq", "ne", "in", "not_in"})

#: Crontab counts Sunday as 0 (and 7), APScheduler 3 counts Monday as 0: names mean one thing.
CRON_DAYS = {
    "0": "SUN",
    "1": "MON",
    "2": "TUE",
    "3": "WED",
    "4": "THU",
    "5": "FRI",
    "6": "SAT",
    "7": "SUN",
}


@dataclass(frozen=True)
class Registries:
    """What plugins registered: the names a ruleset may use."""

    actions: Mapping[str, Any]
    operators: Mapping[str, Any]
    facts: Mapping[str, Any]


def check_ruleset(ruleset: Ruleset, registries: Registries, stages: Sequence[str]) -> list[Issue]:
    """Every semantic issue in one ruleset, given the stage model all rulesets share."""
    paths = FactPaths(registries.facts)
    issues = _stage_list(ruleset) + _duplicate_ids(ruleset)
    for index, rule in enumerate(ruleset.rules):
        base = pointer("rules", index)
        issues += _trigger(rule, base + "/when", stages, paths, registries.facts)
        issues += _actions(rule, base, registries.actions, stages)
        issues += check_experiment(rule, base, registries.actions, action_params)
        if rule.limit is not None and rule.limit.once_per is not None:
            issues += paths.check_once_per(
                rule.limit.once_per, scope_of(rule), base + "/limit/once_per"
            )
        if rule.goal is not None:
            issues += goal_issues(rule.goal, base + "/goal")
    checker = _ConditionChecker(ruleset, registries, stages)
    for condition, where, scope in conditions_of(ruleset):
        issues += checker.check(condition, where, scope)
    return issues


#: What a goal's ``where`` sees: the goal event (``clm_engine.rulesets.goals``).
GOAL = Scope("a goal's where", event=True)


def scope_of(rule: Rule) -> Scope:
    """What the conditions of ``rule`` can see, by its trigger."""
    when = rule.when
    if isinstance(when, EventTrigger):
        return Scope("an event rule", event=True)
    if isinstance(when, StageTrigger):
        return Scope("a stage_changed rule", event=True, transition=True)
    if isinstance(when, ScheduleTrigger):
        return Scope("a schedule rule (it runs over contacts, with no event)")
    return Scope("a relative-time rule (it runs over contacts, with no event)")


def conditions_of(ruleset: Ruleset) -> Iterator[tuple[Condition, str, Scope]]:
    """Every condition tree in a ruleset, with its pointer and what it can see."""
    for name, segment in ruleset.segments.items():
        yield segment, pointer("segments", name), SEGMENT
    for index, rule in enumerate(ruleset.rules):
        scope = scope_of(rule)
        if isinstance(rule.when, EventTrigger) and rule.when.where is not None:
            yield rule.when.where, pointer("rules", index, "when", "where"), scope
        if rule.if_ is not None:
            yield rule.if_, pointer("rules", index, "if"), scope
        for position, call in enumerate(rule.then):
            if call.unless is not None:
                yield call.unless, pointer("rules", index, "then", position, "unless"), scope
        if rule.experiment is not None and rule.experiment.goal.where is not None:
            where = pointer("rules", index, "experiment", "goal", "where")
            yield rule.experiment.goal.where, where, GOAL
        if rule.goal is not None and rule.goal.where is not None:
            yield rule.goal.where, pointer("rules", index, "goal", "where"), GOAL


# -- the ruleset's own lists -------------------------------------------------------------------


def _stage_list(ruleset: Ruleset) -> list[Issue]:
    issues = []
    seen: dict[str, int] = {}
    for index, stage in enumerate(ruleset.stages or ()):
        if stage in seen:
            issues.append(
                Issue(
                    pointer("stages", index),
                    f"stage {stage!r} is listed twice (also at /stages/{seen[stage]})",
                )
            )
        seen.setdefault(stage, index)
    return issues


def _duplicate_ids(ruleset: Ruleset) -> list[Issue]:
    issues = []
    first: dict[str, int] = {}
    for index, rule in enumerate(ruleset.rules):
        seen = first.setdefault(rule.id, index)
        if seen != index:
            issues.append(
                Issue(
                    pointer("rules", index, "id"),
                    f"duplicate rule id {rule.id!r} (also at /rules/{seen}/id)",
                    hint="rule ids are unique within a ruleset: traces and limits are kept by id",
                )
            )
    return issues


# -- triggers ----------------------------------------------------------------------------------


def _trigger(
    rule: Rule,
    where: str,
    stages: Sequence[str],
    paths: FactPaths,
    facts: Mapping[str, Any],
) -> list[Issue]:
    when = rule.when
    if isinstance(when, StageTrigger):
        issues = []
        for key, value in (("from", when.stage_changed.from_), ("to", when.stage_changed.to)):
            names = [value] if isinstance(value, str) else list(value or ())
            for index, name in enumerate(names):
                at = f"{where}/stage_changed/{key}" + (
                    "" if isinstance(value, str) else f"/{index}"
                )
                issues += unknown_stage(name, stages, at)
        return issues
    if isinstance(when, ScheduleTrigger):
        return _schedule(when, where)
    if isinstance(when, RecurringTrigger):
        return (
            paths.check_anchor(when.on, f"{where}/on")
            or _anchor_type(when.on, facts, f"{where}/on")
        ) + _timezone(when.timezone, f"{where}/timezone")
    if isinstance(when, RelativeTrigger):
        key = "before" if when.before is not None else "after"
        anchor = getattr(when, key)
        return paths.check_anchor(anchor, f"{where}/{key}") or _anchor_type(
            anchor, facts, f"{where}/{key}"
        )
    return []


#: What a computed fact must hold to anchor a relative-time trigger.
ANCHOR_TYPES = frozenset({"time", "dates", "any"})


def _anchor_type(path: str, facts: Mapping[str, Any], where: str) -> list[Issue]:
    """A computed fact that declares a type other than a time (or dates by entity) cannot
    anchor ``before`` / ``after``."""
    spec = facts.get(path)
    declared = getattr(spec, "type", "any")
    if spec is None or declared in ANCHOR_TYPES:
        return []
    return [
        Issue(
            where,
            f"{path!r} is not a date (its type is {declared!r}): before/after/on need a date fact",
            hint="a computed fact of type 'time' or 'dates' (a date per entity), or "
            "contact.created_at, contact.metrics.<name>_at, contact.attributes.<name>",
        )
    ]


def unknown_stage(name: str, stages: Sequence[str], where: str) -> list[Issue]:
    if name in stages:
        return []
    return [
        Issue(
            where,
            f"unknown stage {name!r}{did_you_mean(name, stages)}",
            hint=f"the stages are {quoted_list(stages, conjunction='and')}",
        )
    ]


def _timezone(name: str, where: str) -> list[Issue]:
    """A trigger's ``timezone``: "UTC", "contact" or an IANA name."""
    if name in ("UTC", "contact") or _zone(name) is not None:
        return []
    suggestion = did_you_mean(name, _timezone_names(), cutoff=0.7)
    return [
        Issue(
            where,
            f"unknown timezone {name!r}{suggestion}",
            hint='use "UTC", "contact" (each contact\'s own) or an IANA name like "Europe/Paris"',
        )
    ]


def _schedule(trigger: ScheduleTrigger, where: str) -> list[Issue]:
    from apscheduler.triggers.cron import CronTrigger

    issues = _timezone(trigger.timezone, f"{where}/timezone")
    zone = (
        (_zone(trigger.timezone) or ZoneInfo("UTC"))
        if trigger.timezone not in ("UTC", "contact")
        else ZoneInfo("UTC")
    )
    expression = trigger.schedule
    fields = expression.split()
    if len(fields) == 5 and re.search(r"(?<![/\d])\d", fields[4]):
        named = re.sub(r"(?<![/\d])[0-7](?!\d)", lambda m: CRON_DAYS[m.group()], fields[4])
        issues.append(
            Issue(
                f"{where}/schedule",
                f"write the day of week as names, not numbers: found {fields[4]!r}",
                hint=f"in crontab, {fields[4]!r} is {named!r} (0 and 7 are Sunday); APScheduler "
                "counts 0 as Monday, so numbers would run on the wrong day",
            )
        )
        return issues
    try:
        CronTrigger.from_crontab(expression, timezone=zone)
    except Exception as error:  # apscheduler raises ValueError, and others for odd input
        issues.append(
            Issue(
                f"{where}/schedule",
                f"not a valid cron expression {expression!r}: {error}",
                hint="five fields: minute hour day-of-month month day-of-week, "
                'e.g. "0 9 * * MON-FRI"',
            )
        )
    return issues


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@lru_cache(maxsize=1)
def _timezone_names() -> tuple[str, ...]:
    return tuple(sorted(available_timezones()))


# -- actions -----------------------------------------------------------------------------------


def _actions(
    rule: Rule, base: str, actions: Mapping[str, Any], stages: Sequence[str]
) -> list[Issue]:
    issues = []
    for index, call in enumerate(rule.then):
        where = f"{base}/then/{index}"
        spec = actions.get(call.action)
        if spec is None:
            known = sorted(actions)
            issues.append(
                Issue(
                    f"{where}/action",
                    f"unknown action {call.action!r}{did_you_mean(call.action, known)}",
                    hint=f"registered actions: {', '.join(known)} (clm plugins lists them)"
                    if known
                    else "no plugin registers any action",
                )
            )
            continue
        if call.unless is not None and call.after is None:
            issues.append(
                Issue(
                    f"{where}/unless",
                    "'unless' is judged when a delayed action falls due, and this action has "
                    "no 'after'",
                    hint="give the action an 'after' delay, or put the condition in the rule's "
                    "'if' (inside a 'not')",
                    at_key=True,
                )
            )
        found = action_params(spec, call.action, call.with_, f"{where}/with")
        issues += found
        stage = call.with_.get("stage")
        at = f"{where}/with/stage"
        if isinstance(stage, str) and all(i.pointer != at for i in found):
            issues += unknown_stage(stage, stages, at)
    return issues


def action_params(spec: Any, name: str, params: dict[str, Any], where: str) -> list[Issue]:
    """Issues with an action's ``with``, checked by the action's own pydantic model."""
    model = spec.params
    known = [field.alias or key for key, field in model.model_fields.items()]
    try:
        model.model_validate(params)
    except ValidationError as error:
        issues = pydantic_issues(error, params, base=where, noun="parameter", known=known)
        takes = f"{name} takes {quoted_list(known, conjunction='and')}" if known else None
        return [
            Issue(
                i.pointer,
                f"{i.message} (action {name!r})",
                i.hint or (takes if i.message.startswith("unknown parameter") else None),
                i.at_key,
            )
            for i in issues
        ]
    except Exception as error:  # a plugin's validator may raise anything
        return [Issue(where, f"action {name!r} could not check its parameters: {error!r}")]
    return []


# -- conditions --------------------------------------------------------------------------------


class _ConditionChecker:
    """Operators, values, facts, args and segments (ConditionCompiler), plus what needs the
    rule: whether a fact exists where it is used, and stage names compared with eq/in."""

    def __init__(self, ruleset: Ruleset, registries: Registries, stages: Sequence[str]) -> None:
        self.stages = stages
        self.paths = FactPaths(registries.facts)
        self.compiler: Any = None
        self.compiler_error: Exception | None = None
        try:
            self.compiler = _compiler(ruleset, registries, stages)
        except Exception as error:  # a plugin's operator may raise anything while compiling
            self.compiler_error = error

    def check(self, condition: Condition, where: str, scope: Scope) -> list[Issue]:
        issues = self._compiled(condition, where)
        flagged = {issue.pointer for issue in issues}
        for leaf, at in leaves(condition, where):
            issues += [i for i in self._leaf(leaf, at, scope) if i.pointer not in flagged]
        return issues

    def _compiled(self, condition: Condition, where: str) -> list[Issue]:
        if self.compiler_error is not None:
            return [Issue(where, f"could not check this condition: {self.compiler_error!r}")]
        try:
            found = self.compiler.check(condition)
        except Exception as error:  # a plugin's operator may raise anything in prepare()
            return [Issue(where, f"could not check this condition: {error!r}")]
        return [Issue(join(where, relative), message) for relative, message in found]

    def _leaf(self, leaf: Leaf, where: str, scope: Scope) -> list[Issue]:
        issues = []
        if leaf.fact is not None:
            issues += self.paths.check_scope(leaf.fact, scope, f"{where}/fact")
        if isinstance(leaf.value, FactRef):
            issues += self.paths.check_scope(leaf.value.fact, scope, f"{where}/value/fact")
        elif leaf.fact in STAGE_FACTS and leaf.op in STAGE_VALUE_OPS:
            for relative, name in stage_names_in(leaf.value):
                issues += unknown_stage(name, self.stages, f"{where}/value{relative}")
        return issues


def _compiler(ruleset: Ruleset, registries: Registries, stages: Sequence[str]) -> Any:
    from ..conditions import ConditionCompiler  # imported late: it imports the plugins

    return ConditionCompiler(
        operators=dict(registries.operators),
        facts=dict(registries.facts),
        segments=ruleset.segments,
        stages=tuple(stages),
    )


def leaves(condition: Condition, where: str) -> Iterator[tuple[Leaf, str]]:
    """Every leaf of a condition tree, with its pointer."""
    if isinstance(condition, All):
        for index, child in enumerate(condition.all):
            yield from leaves(child, f"{where}/all/{index}")
    elif isinstance(condition, AnyOf):
        for index, child in enumerate(condition.any):
            yield from leaves(child, f"{where}/any/{index}")
    elif isinstance(condition, Not):
        yield from leaves(condition.not_, f"{where}/not")
    else:
        yield condition, where


# -- warnings: valid, but probably not what was meant ----------------------------------------


def warnings_of(ruleset: Ruleset) -> list[Issue]:
    """What is valid but likely wrong: for now, a window in a rule's ``if`` (or ``where``)
    that is judged when the rule fires while its actions wait.

    "On cart.updated, if no purchase within 4 hours, send after 4 hours" counts the purchases
    of the 4 hours *before* the cart event: ``if`` is judged when the event arrives. The
    action's ``unless`` is judged when it falls due, which is what such a rule means.
    """
    issues = []
    for index, rule in enumerate(ruleset.rules):
        delayed = [
            (position, call)
            for position, call in enumerate(rule.then)
            if call.after is not None and call.unless is None
        ]
        if not delayed:
            continue
        position, call = delayed[0]
        trigger = (
            f"its {rule.when.event} event arrives"
            if isinstance(rule.when, EventTrigger)
            else "the rule fires"
        )
        sources = []
        if isinstance(rule.when, EventTrigger) and rule.when.where is not None:
            sources.append((rule.when.where, pointer("rules", index, "when", "where")))
        if rule.if_ is not None:
            sources.append((rule.if_, pointer("rules", index, "if")))
        for condition, base in sources:
            for leaf, at in leaves(condition, base):
                window = _window_of(leaf)
                if window is None:
                    continue
                delay = call.after if isinstance(call.after, str) else _duration_text(call.after)
                issues.append(
                    Issue(
                        at,
                        f"this condition is judged when {trigger}, not when the action at "
                        f"/rules/{index}/then/{position} falls due ({delay} later): "
                        f"events.count of {window} looks back from the trigger, not forward",
                        hint="to check what happened during the wait, give the action an "
                        '"unless" (judged again when it falls due, e.g. {"fact": "events.count", '
                        '"args": {"type": "purchase", "within": "PT4H"}, "op": "gt", "value": 0})',
                    )
                )
    return issues


def _window_of(leaf: Leaf) -> str | None:
    """``'purchase' within PT4H`` when a leaf counts events over a window, else None."""
    if leaf.fact != "events.count" or not isinstance(leaf.args, dict):
        return None
    within = leaf.args.get("within")
    if within is None:
        return None
    shown = within if isinstance(within, str) else json_text(within)
    return f"{leaf.args.get('type')!r} within {shown}"


def _duration_text(duration: Any) -> str:
    parts = [
        f"{value} {name}"
        for name in ("weeks", "days", "hours", "minutes")
        if (value := getattr(duration, name, 0))
    ]
    return ", ".join(parts) or "0 minutes"


def json_text(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))
