"""Loaded rulesets, compiled and indexed by what triggers them.

A ``RuleBook`` is built once per load of the rulesets: conditions are compiled (one evaluator
per ruleset and trigger, so a fact several rules read is loaded once per contact), action
parameters are validated into their final form, and rules are indexed so that an event only
touches the rules that listen to its type.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .errors import RulesetError
from .experiments import KIND as EXPERIMENT_KIND
from .models import (
    DEFAULT_STAGES,
    ActionCall,
    All,
    Condition,
    EventTrigger,
    RecurringTrigger,
    RelativeTrigger,
    Rule,
    StageTrigger,
    duration_to_timedelta,
)

if TYPE_CHECKING:
    from .conditions import CompiledConditions, ConditionCompiler
    from .conditions.facts import FactPlan
    from .experiments.compiled import CompiledExperiment
    from .plugins import ActionSpec
    from .rulesets import LoadedRuleset


@dataclass(frozen=True)
class CompiledRule:
    """One enabled rule, ready to run."""

    ruleset: str
    version: int
    content_hash: str
    rule: Rule
    condition: Condition | None  # the trigger's filter and the rule's ``if``, together
    actions: tuple[tuple[ActionCall, dict[str, Any]], ...]  # each call with validated params
    compiler: ConditionCompiler  # the ruleset's (its segments): explains this rule's decisions
    trace_all: bool
    once_per: str | None
    cooldown: timedelta | None
    #: For a relative-time rule: its anchor fact, planned once (asked on every ingested event).
    anchor: FactPlan | None = None
    #: Every action is pure (a function of the contact) and due at once: the rule's decisions
    #: are part of the contact's state, and a late event that re-judges them recomputes them.
    recomputable: bool = False
    #: Per action (by index): its ``unless`` and that condition compiled with the ruleset's
    #: compiler, judged again when the delayed action falls due (None: nothing to re-check).
    rechecks: tuple[tuple[Condition, CompiledConditions] | None, ...] = ()
    #: The rule's A/B split, if it declares one: each arm's actions (docs/experiments.md).
    experiment: CompiledExperiment | None = None

    @property
    def id(self) -> str:
        return self.rule.id

    def trigger_text(self) -> str:
        when = self.rule.when
        if isinstance(when, EventTrigger):
            return f"{when.event} event" + (" (filtered)" if when.where else "")
        if isinstance(when, StageTrigger):
            change = when.stage_changed
            return f"stage change from {change.from_ or 'any'} to {change.to or 'any'}"
        if isinstance(when, RecurringTrigger):
            zone = "the contact's timezone" if when.timezone == "contact" else when.timezone
            return f"every {when.every} on {when.on} at {when.at} ({zone})"
        if isinstance(when, RelativeTrigger):
            side = "before" if when.before else "after"
            span = f"{when.days} days" + (f" {when.hours} hours" if when.hours else "")
            return f"{span} {side} {when.anchor}"
        return f"schedule {when.schedule} ({when.timezone})"

    def matches_stage_change(self, before: str | None, after: str | None) -> bool:
        change = self.rule.when.stage_changed  # type: ignore[union-attr]  # only called for stage_changed rules
        return _among(before, change.from_) and _among(after, change.to)


def _among(stage: str | None, allowed: str | list[str] | None) -> bool:
    if allowed is None:
        return True
    return stage in ([allowed] if isinstance(allowed, str) else allowed)


@dataclass
class RuleGroup:
    """Rules evaluated together over one context: one compiled evaluator for all of them."""

    rules: list[CompiledRule]
    evaluator: CompiledConditions


@dataclass
class RuleBook:
    stages: tuple[str, ...] = DEFAULT_STAGES
    rulesets: list[LoadedRuleset] = field(default_factory=list)
    by_event: dict[str, list[RuleGroup]] = field(default_factory=dict)
    on_stage_change: list[RuleGroup] = field(default_factory=list)
    relative: list[CompiledRule] = field(default_factory=list)  # before/after/every date
    scheduled: list[CompiledRule] = field(default_factory=list)  # cron
    rules: dict[tuple[str, str], CompiledRule] = field(default_factory=dict)
    disabled: dict[tuple[str, str], Rule] = field(default_factory=dict)
    #: Plugin documents loaded with the rulesets (sequences, catalogues): kind -> name -> model.
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Some rule has an internal action that is not pure (it writes a plugin's tables), so a
    #: fold that fails must be able to take its writes back (a savepoint per contact).
    writes_inline: bool = False
    #: Some rule has a limit (``once_per``, ``cooldown``): ingestion reads the batch's
    #: contacts' recorded fires in one query, not one per contact.
    limited: bool = False

    @property
    def empty(self) -> bool:
        return not self.rules

    @classmethod
    def build(
        cls,
        loaded: Sequence[LoadedRuleset],
        *,
        operators: dict[str, Any],
        facts: dict[str, Any],
        actions: dict[str, ActionSpec],
        documents: dict[str, dict[str, Any]] | None = None,
    ) -> RuleBook:
        from .conditions import ConditionCompiler
        from .conditions.facts import plan_fact

        stages = next((tuple(r.ruleset.stages) for r in loaded if r.ruleset.stages), DEFAULT_STAGES)
        book = cls(stages=stages, rulesets=list(loaded), documents=dict(documents or {}))
        event_rules: dict[tuple[str, str], list[CompiledRule]] = defaultdict(list)
        stage_rules: dict[str, list[CompiledRule]] = defaultdict(list)
        compilers: dict[str, ConditionCompiler] = {}
        for item in loaded:
            ruleset = item.ruleset
            compiler = compilers[ruleset.ruleset] = ConditionCompiler(
                operators=operators, facts=facts, segments=ruleset.segments, stages=stages
            )
            for rule in ruleset.rules:
                if not rule.enabled:
                    book.disabled[(ruleset.ruleset, rule.id)] = rule
                    continue
                compiled = CompiledRule(
                    ruleset=ruleset.ruleset,
                    version=ruleset.version,
                    content_hash=item.content_hash,
                    rule=rule,
                    condition=_combined(rule),
                    actions=tuple((call, _params(call, actions)) for call in rule.then),
                    compiler=compiler,
                    trace_all=ruleset.trace == "all",
                    once_per=rule.limit.once_per if rule.limit else None,
                    cooldown=(
                        duration_to_timedelta(rule.limit.cooldown)
                        if rule.limit and rule.limit.cooldown
                        else None
                    ),
                    anchor=(
                        plan_fact(rule.when.anchor, None, facts)
                        if isinstance(rule.when, RelativeTrigger | RecurringTrigger)
                        else None
                    ),
                    recomputable=all(
                        _pure(call, actions) and call.after is None for call in rule.then
                    ),
                    rechecks=tuple(
                        (call.unless, compiler.compile([call.unless]))
                        if call.unless is not None
                        else None
                        for call in rule.then
                    ),
                    experiment=_experiment(rule, ruleset.ruleset, ruleset.version, actions),
                )
                if compiled.experiment is not None:
                    # Exposures are rows written as decisions are taken: a failed fold must
                    # take them back, like a plugin's inline writes.
                    book.writes_inline = True
                    book.documents.setdefault(EXPERIMENT_KIND, {})[compiled.experiment.name] = (
                        compiled.experiment
                    )
                book.rules[(ruleset.ruleset, rule.id)] = compiled
                book.limited = book.limited or bool(compiled.once_per or compiled.cooldown)
                book.writes_inline = book.writes_inline or any(
                    _writes(call, actions) for call in rule.then
                )
                if isinstance(rule.when, EventTrigger):
                    event_rules[(rule.when.event, ruleset.ruleset)].append(compiled)
                elif isinstance(rule.when, StageTrigger):
                    stage_rules[ruleset.ruleset].append(compiled)
                elif isinstance(rule.when, RelativeTrigger | RecurringTrigger):
                    book.relative.append(compiled)
                else:
                    book.scheduled.append(compiled)
        _document_experiments(book, operators, facts, stages)
        for (event_type, ruleset_name), rules in event_rules.items():
            group = RuleGroup(rules, compilers[ruleset_name].compile([r.condition for r in rules]))
            book.by_event.setdefault(event_type, []).append(group)
        for ruleset_name, rules in stage_rules.items():
            book.on_stage_change.append(
                RuleGroup(rules, compilers[ruleset_name].compile([r.condition for r in rules]))
            )
        return book


def _combined(rule: Rule) -> Condition | None:
    where = rule.when.where if isinstance(rule.when, EventTrigger) else None
    if where is not None and rule.if_ is not None:
        return All(all=[where, rule.if_])
    return where if where is not None else rule.if_


def _writes(call: ActionCall, actions: dict[str, ActionSpec]) -> bool:
    spec = actions.get(call.action)
    return spec is not None and not spec.external and not spec.pure


def _pure(call: ActionCall, actions: dict[str, ActionSpec]) -> bool:
    spec = actions.get(call.action)
    return spec is not None and spec.pure


def _document_experiments(
    book: RuleBook, operators: dict[str, Any], facts: dict[str, Any], stages: tuple[str, ...]
) -> None:
    """The experiments plugin documents declare (a drip step's), through their
    ``clm_experiments()`` method: ``(source, experiment, receives)`` triples."""
    from .conditions import ConditionCompiler
    from .experiments.compiled import CompiledExperiment

    found = book.documents.setdefault(EXPERIMENT_KIND, {})
    for kind, documents in list(book.documents.items()):
        if kind == EXPERIMENT_KIND:
            continue
        for name, document in documents.items():
            declared = getattr(document, "clm_experiments", None)
            if not callable(declared):
                continue
            for source, spec, receives in declared():
                if spec.name in found:
                    other = found[spec.name]
                    raise RulesetError(
                        f"experiment {spec.name!r} is declared by {kind} {name!r} ({source}) "
                        f"and by {other.ruleset} ({other.rule}): experiment names are unique"
                    )
                compiler = ConditionCompiler(
                    operators=operators, facts=facts, segments={}, stages=stages
                )
                found[spec.name] = CompiledExperiment(
                    spec,
                    f"{kind} {name}",
                    source,
                    0,
                    {arm.name: () for arm in spec.arms},
                    compiler=compiler,
                    receives=receives,
                )
    if not found:
        del book.documents[EXPERIMENT_KIND]


def _experiment(
    rule: Rule, ruleset: str, version: int, actions: dict[str, ActionSpec]
) -> CompiledExperiment | None:
    """The rule's experiment with each arm's actions validated (a holdout's: none)."""
    from .experiments.compiled import CompiledExperiment, merged_with

    spec = rule.experiment
    if spec is None:
        return None
    by_arm: dict[str, tuple[tuple[ActionCall, dict[str, Any]], ...]] = {}
    for arm in spec.arms:
        if arm.holdout:
            by_arm[arm.name] = ()
            continue
        calls = [c.model_copy(update={"with_": merged_with(c, arm)}) for c in rule.then]
        by_arm[arm.name] = tuple((call, _params(call, actions)) for call in calls)
    return CompiledExperiment(spec, ruleset, rule.id, version, by_arm)


def _params(call: ActionCall, actions: dict[str, ActionSpec]) -> dict[str, Any]:
    spec = actions.get(call.action)
    if spec is None:  # validation reports it with a location; this guards direct use
        raise RulesetError(f"unknown action {call.action!r}")
    params: dict[str, Any] = spec.params.model_validate(call.with_).model_dump(mode="json")
    return params
