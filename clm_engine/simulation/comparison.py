"""Comparing two versions of the rulesets over the same history: what changes, and for whom."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..registry import Registry
from .replay import RulesetPaths, opened, replay, ruleset_paths, validate
from .report import SimulationResult
from .window import Window, aware, check_step, check_window


@dataclass
class Comparison:
    """Two versions of the rulesets over the same history: what changes, rule by rule.

    ``rules`` holds one dict per rule of either version, those that behave differently first
    (largest change first): ``status`` (``added``, ``removed``, ``differs``, ``same``),
    ``definition`` (``modified``, ``unchanged``, ``added``, ``removed``), fires and contacts on
    each side, ``delta``, ``by_week`` (``{week: {"old": n, "new": m}}``), and the contacts
    treated differently: ``only_old`` (the rule fired for them with the old rulesets only),
    ``only_new``, and ``count_changed`` (fired on both sides, a different number of times).
    """

    old: SimulationResult
    new: SimulationResult
    rules: list[dict[str, Any]]
    rulesets: list[dict[str, Any]]

    @property
    def contacts_affected(self) -> set[str]:
        """Every contact that at least one rule treats differently."""
        found: set[str] = set()
        for rule in self.rules:
            found.update(rule["only_old"], rule["only_new"], rule["count_changed"])
        return found

    def summary(self) -> dict[str, int]:
        counts = Counter(rule["status"] for rule in self.rules)
        return {
            "rules_differ": counts["differs"],
            "rules_same": counts["same"],
            "rules_added": counts["added"],
            "rules_removed": counts["removed"],
            "contacts_affected": len(self.contacts_affected),
            "fired_old": self.old.fired,
            "fired_new": self.new.fired,
        }

    def as_dict(self, *, limit: int | None = None) -> dict[str, Any]:
        """JSON-able; ``limit`` caps each contact list (``None``: every id)."""
        rules = []
        for rule in self.rules:
            shown = dict(rule)
            for key in ("only_old", "only_new", "count_changed"):
                shown[f"{key}_count"] = len(rule[key])
                shown[key] = rule[key] if limit is None else rule[key][:limit]
            rules.append(shown)
        actions = sorted(set(self.old.actions) | set(self.new.actions))
        return {
            "from": self.old.as_dict(contacts=False)["from"],
            "to": self.old.as_dict(contacts=False)["to"],
            "summary": self.summary(),
            "rulesets": self.rulesets,
            "actions": {
                status: {
                    "old": self.old.actions.get(status, 0),
                    "new": self.new.actions.get(status, 0),
                }
                for status in actions
            },
            "weeks": self.old.weeks,
            "partial_weeks": self.old.partial_weeks,
            "rules": rules,
            "old": self.old.as_dict(contacts=False),
            "new": self.new.as_dict(contacts=False),
        }


def compare(
    old: RulesetPaths,
    new: RulesetPaths,
    events: Any,
    *,
    start: datetime,
    end: datetime,
    db: str | os.PathLike[str] | None = None,
    step: timedelta = timedelta(hours=1),
    keep: str | os.PathLike[str] | None = None,
    progress: Callable[[str, datetime], None] | None = None,
    registry: Registry | None = None,
) -> Comparison:
    """Simulate ``old`` and ``new`` rulesets over the same history, each in its own scratch
    store, and say per rule what differs. Both are validated before either runs, and the
    history is read and sorted once. ``keep`` leaves ``old.db`` and ``new.db`` in that
    directory."""
    start, end = aware(start), aware(end)
    check_window(start, end)
    check_step(step)
    old_paths, new_paths = ruleset_paths(old), ruleset_paths(new)
    registry = Registry() if registry is None else registry
    validate(old_paths, registry)
    validate(new_paths, registry)
    results = []
    with opened(events) as history:
        for side, paths in (("old", old_paths), ("new", new_paths)):
            report = None if progress is None else (lambda at, side=side: progress(side, at))
            window: Window = {"start": start, "end": end, "step": step, "db": db, "keep": keep}
            results.append(
                replay(
                    paths, history, **window, name=f"{side}.db", progress=report, registry=registry
                )
            )
    return _diff(*results)


def _diff(old: SimulationResult, new: SimulationResult) -> Comparison:
    rules = []
    for key in sorted(set(old.per_rule) | set(new.per_rule)):
        before, after = old.per_rule.get(key), new.per_rule.get(key)
        old_ids = old.contacts_by_rule.get(key, set())
        new_ids = new.contacts_by_rule.get(key, set())
        old_fires = old.fires_by_contact.get(key, Counter())
        new_fires = new.fires_by_contact.get(key, Counter())
        fired_old = before["fired"] if before else 0
        fired_new = after["fired"] if after else 0
        if before is None:
            status = definition = "added"
        elif after is None:
            status = definition = "removed"
        else:
            definition = "unchanged" if before["definition"] == after["definition"] else "modified"
            same = old_fires == new_fires and before["actions"] == after["actions"]
            status = "same" if same else "differs"
        weeks: dict[str, dict[str, int]] = {}
        for week in old.weeks:
            pair = {
                "old": before["by_week"].get(week, 0) if before else 0,
                "new": after["by_week"].get(week, 0) if after else 0,
            }
            if pair["old"] or pair["new"]:
                weeks[week] = pair
        rules.append(
            {
                "rule": key,
                "status": status,
                "definition": definition,
                "trigger": (after or before or {}).get("trigger", ""),
                "enabled": {
                    "old": before["enabled"] if before else None,
                    "new": after["enabled"] if after else None,
                },
                "fired": {"old": fired_old, "new": fired_new},
                "delta": fired_new - fired_old,
                "delta_pct": (
                    round(100 * (fired_new - fired_old) / fired_old, 1) if fired_old else None
                ),
                "contacts": {"old": len(old_ids), "new": len(new_ids)},
                "actions": {
                    "old": before["actions"] if before else {},
                    "new": after["actions"] if after else {},
                },
                "by_week": weeks,
                "only_old": sorted(old_ids - new_ids),
                "only_new": sorted(new_ids - old_ids),
                "count_changed": sorted(
                    cid for cid in old_ids & new_ids if old_fires[cid] != new_fires[cid]
                ),
            }
        )
    order = {"removed": 0, "added": 1, "differs": 2, "same": 3}
    rules.sort(key=lambda r: (order[r["status"]], -abs(r["delta"]), r["rule"]))
    return Comparison(old, new, rules, _ruleset_changes(old.rulesets, new.rulesets))


def _ruleset_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ruleset name: versions and whether the content changed (and if the version did not)."""
    before = {r["ruleset"]: r for r in old}
    after = {r["ruleset"]: r for r in new}
    changes = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None or b is None:
            state = "added" if a is None else "removed"
        elif a["content_hash"] == b["content_hash"]:
            state = "same"
        else:
            state = "changed"
        changes.append(
            {
                "ruleset": name,
                "state": state,
                "old_version": a["version"] if a else None,
                "new_version": b["version"] if b else None,
                "version_not_bumped": bool(
                    state == "changed" and a and b and a["version"] >= b["version"]
                ),
            }
        )
    return changes
