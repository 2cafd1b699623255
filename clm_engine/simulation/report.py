"""What a simulation found: the result, counted from the scratch store, per rule and week.

The numbers come from the store itself (traces and outbox rows written during the run), so
they are what the engine decided, not an estimate.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from ..engine import Engine
from ..models import (
    EventTrigger,
    RecurringTrigger,
    RelativeTrigger,
    Rule,
    ScheduleTrigger,
    StageTrigger,
    duration_to_timedelta,
)
from ..rules import CompiledRule
from .window import ONE_TICK

_STATUS_ORDER = ("done", "simulated", "skipped", "vetoed", "dead", "pending")


@dataclass
class SimulationResult:
    """What the rulesets did over the history, per rule and in total.

    ``per_rule`` maps ``"ruleset/rule"`` to a dict: ``fired`` (decisions that fired),
    ``contacts`` (distinct contacts they fired for), ``by_week`` (fires per ISO week of the
    occurrence), ``blocked`` (matched but stopped by a limit), ``errors``, ``actions`` (outbox
    rows by final status: ``done``, ``simulated`` for external actions recorded and not run,
    ``skipped``, ``vetoed``, ``dead``, ``pending`` when due after the end), ``actions_by_week``
    (rows that ran, per ISO week of when they were due) and what the rule is: ``ruleset``,
    ``rule``, ``trigger``, ``enabled``, ``definition`` (a hash of the rule's JSON, to tell a
    changed rule from an unchanged one). Every loaded rule has an entry, fired or not.
    """

    start: datetime
    end: datetime
    step: timedelta
    per_rule: dict[str, dict[str, Any]]
    contacts_by_rule: dict[str, set[str]]
    fires_by_contact: dict[str, Counter[str]]
    weeks: list[str]
    partial_weeks: list[str]
    events: dict[str, int]
    rejected: list[tuple[int, str]]
    actions: dict[str, int]
    rulesets: list[dict[str, Any]]
    scheduler_counts: dict[str, int]
    ticks: int
    duration_seconds: float
    notes: list[str] = field(default_factory=list)
    dispatch_notes: list[str] = field(default_factory=list)
    db: str | None = None
    kept: str | None = None
    #: Per experiment the rules declare: its arms over the run (``experiments.backtest``).
    experiments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def skipped_events(self) -> int:
        """Events outside ``[start, end)``: read, and ignored."""
        return self.events["skipped_before"] + self.events["skipped_after"]

    @property
    def days(self) -> float:
        return (self.end - self.start) / timedelta(days=1)

    @property
    def days_per_second(self) -> float:
        return self.days / self.duration_seconds if self.duration_seconds else float("inf")

    @property
    def fired(self) -> int:
        return sum(entry["fired"] for entry in self.per_rule.values())

    def as_dict(self, *, contacts: bool = True) -> dict[str, Any]:
        """JSON-able; with ``contacts``, the ids each rule fired for (sorted) are included."""
        answer: dict[str, Any] = {
            "from": self.start.isoformat().replace("+00:00", "Z"),
            "to": self.end.isoformat().replace("+00:00", "Z"),
            "step_seconds": int(self.step.total_seconds()),
            "days": round(self.days, 3),
            "duration_seconds": round(self.duration_seconds, 3),
            "days_per_second": round(self.days_per_second, 2),
            "db": self.db,
            "kept": self.kept,
            "rulesets": self.rulesets,
            "events": self.events | {"skipped": self.skipped_events},
            "rejected": [{"line": line, "error": error} for line, error in self.rejected[:100]],
            "weeks": self.weeks,
            "partial_weeks": self.partial_weeks,
            "totals": {
                "fired": self.fired,
                "contacts": len(set().union(*self.contacts_by_rule.values())),
                "by_week": {
                    week: sum(e["by_week"].get(week, 0) for e in self.per_rule.values())
                    for week in self.weeks
                },
                "actions": self.actions,
            },
            "per_rule": self.per_rule,
            "scheduler": {"ticks": self.ticks, **self.scheduler_counts},
            "notes": self.notes,
            "dispatch_notes": self.dispatch_notes[:100],
            "experiments": self.experiments,
        }
        if contacts:
            answer["contacts_by_rule"] = {
                rule: sorted(ids) for rule, ids in self.contacts_by_rule.items()
            }
        return answer


def count_results(
    engine: Engine, base: tuple[int, int]
) -> tuple[dict[str, dict[str, Any]], dict[str, Counter[str]], dict[str, int]]:
    """Per rule, from the traces and outbox rows the run wrote (not those it copied): the
    entries, each rule's fires by contact, and the outbox rows by status in all."""
    per_rule = {key: rule_entry(*value) for key, value in loaded_rules(engine).items()}
    fires: dict[str, Counter[str]] = defaultdict(Counter)

    def entry(ruleset: str, rule: str) -> dict[str, Any]:
        key = f"{ruleset}/{rule}"
        found = per_rule.get(key)
        if found is None:  # a rule of a ruleset the copied store knows, not loaded now
            found = per_rule[key] = rule_entry(ruleset, rule, None, enabled=False)
        return found

    base_trace, base_outbox = base
    for ruleset, rule, decision, contact_id, day in engine.store.read().decisions_since(base_trace):
        item = entry(ruleset, rule)
        if decision == "fired":
            item["fired"] += 1
            week = week_of_day(day)
            item["by_week"][week] = item["by_week"].get(week, 0) + 1
            fires[f"{ruleset}/{rule}"][contact_id] += 1
        elif decision == "blocked_by_limit":
            item["blocked"] += 1
        elif decision == "error":
            item["errors"] += 1
    totals: Counter[str] = Counter()
    for ruleset, rule, status, day, count in engine.store.read().actions_since(base_outbox):
        item = entry(ruleset, rule)
        item["actions"][status] = item["actions"].get(status, 0) + count
        totals[status] += count
        if status != "pending":
            week = week_of_day(day)
            item["actions_by_week"][week] = item["actions_by_week"].get(week, 0) + count
    for key, item in per_rule.items():
        item["contacts"] = len(fires.get(key, ()))
        item["by_week"] = dict(sorted(item["by_week"].items()))
        item["actions_by_week"] = dict(sorted(item["actions_by_week"].items()))
        item["actions"] = ordered_statuses(item["actions"])
    return (
        dict(sorted(per_rule.items())),
        {key: fires.get(key, Counter()) for key in sorted(per_rule)},
        ordered_statuses(dict(totals)),
    )


def ruleset_list(engine: Engine) -> list[dict[str, Any]]:
    """The loaded rulesets: name, version, content hash and file."""
    return [
        {
            "ruleset": item.ruleset.ruleset,
            "version": item.ruleset.version,
            "content_hash": item.content_hash,
            "path": item.path,
        }
        for item in engine.rulebook.rulesets
    ]


@lru_cache(maxsize=4096)
def week_of_day(day: str) -> str:
    """The ISO week (``2026-W19``) of a ``YYYY-MM-DD`` day: a cache, since days repeat a lot."""
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year}-W{week:02d}"


def weeks_of(start: datetime, end: datetime) -> tuple[list[str], list[str]]:
    """Every ISO week that ``[start, end)`` touches, and those it only partly covers."""
    last = end - ONE_TICK
    monday = (start - timedelta(days=start.weekday())).date()
    weeks, partial = [], []
    while monday <= last.date():
        label = week_of_day(monday.isoformat())
        week_start = datetime.combine(monday, datetime.min.time(), UTC)
        if week_start < start or week_start + timedelta(days=7) > end:
            partial.append(label)
        weeks.append(label)
        monday += timedelta(days=7)
    return weeks, partial


def ordered_statuses(counts: Mapping[str, int]) -> dict[str, int]:
    rank = {name: n for n, name in enumerate(_STATUS_ORDER)}
    return dict(sorted(counts.items(), key=lambda item: (rank.get(item[0], 99), item[0])))


def loaded_rules(engine: Engine) -> dict[str, tuple[str, str, Rule | None]]:
    found: dict[str, tuple[str, str, Rule | None]] = {}
    for (ruleset, rule_id), compiled in engine.rulebook.rules.items():
        found[f"{ruleset}/{rule_id}"] = (ruleset, rule_id, compiled.rule)
    for (ruleset, rule_id), rule in engine.rulebook.disabled.items():
        found[f"{ruleset}/{rule_id}"] = (ruleset, rule_id, rule)
    return found


def rule_entry(
    ruleset: str, rule_id: str, rule: Rule | None, *, enabled: bool | None = None
) -> dict[str, Any]:
    definition = None
    if rule is not None:
        dumped = rule.model_dump(mode="json", by_alias=True, exclude_none=True)
        definition = hashlib.sha256(
            json.dumps(dumped, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:16]
    return {
        "ruleset": ruleset,
        "rule": rule_id,
        "trigger": _trigger_text(rule) if rule is not None else "",
        "enabled": rule.enabled if rule is not None else bool(enabled),
        "definition": definition,
        "fired": 0,
        "contacts": 0,
        "blocked": 0,
        "errors": 0,
        "by_week": {},
        "actions": {},
        "actions_by_week": {},
    }


def _trigger_text(rule: Rule) -> str:
    when = rule.when
    if isinstance(when, EventTrigger):
        return f"{when.event} event" + (" (filtered)" if when.where else "")
    if isinstance(when, StageTrigger):
        change = when.stage_changed
        return f"stage change {change.from_ or 'any'} -> {change.to or 'any'}"
    if isinstance(when, ScheduleTrigger):
        return f"schedule {when.schedule} ({when.timezone})"
    if isinstance(when, RecurringTrigger):
        return f"every {when.every} on {when.on} at {when.at} ({when.timezone})"
    days, hours = when.days, when.hours
    span = " ".join(
        part for part in (f"{days}d" if days else "", f"{hours}h" if hours else "") if part
    )
    if when.before is not None:
        return f"{span or '0d'} before {when.before}"
    return f"{span or '0d'} after {when.after}"


def step_notes(timed: list[CompiledRule], step: timedelta) -> list[str]:
    """Where the step is too coarse to be exact, and what to do about it.

    Schedules are exact whatever the step (the clock stops at each slot), but an anchor runs
    at the first step at or after its fire time, so a ``stale_after`` shorter than the step
    could make the engine skip it as stale, which a live engine, ticking every few seconds,
    would not do.
    """
    notes = []
    for compiled in timed:
        when = compiled.rule.when
        stale = when.stale_after if isinstance(when, RelativeTrigger | RecurringTrigger) else None
        if stale is not None and duration_to_timedelta(stale) < step:
            notes.append(
                f"{compiled.ruleset}/{compiled.id} skips fire times older than "
                f"{duration_to_timedelta(stale)}, less than the step ({step}): some fires "
                "may be skipped as stale; use a smaller --step"
            )
    return notes
