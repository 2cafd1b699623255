"""Conversion goals (``clm_engine.models.Goal``) read for the store: the goal event's type, its
window in days, the revenue property and the ``where`` filter as a plain tree the store turns
into SQL, so conversions are counted by one aggregate query, not event by event in Python.

Shared by what measures goals: the conversions and revenue ``clm report`` attributes to each
rule that declares a ``goal`` (``clm_engine.analytics``), and experiments, whose goal has the
same shape. A goal's ``where`` may test ``event.properties.*`` with the operators listed in
:data:`OPERATORS`; anything else is a ruleset error with its JSON pointer
(:func:`goal_issues`, run by the semantic checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from ..models import All, AnyOf, Condition, FactRef, Goal, Leaf, Not, duration_to_timedelta
from .problems import Issue

#: The operators a goal's ``where`` may use (they have one meaning in SQL and in Python).
OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "exists")
_PREFIX = "event.properties."


@dataclass(frozen=True)
class Test:
    """One test of a property of the goal event: ``path`` (dotted, under ``properties``)."""

    path: str
    op: str
    value: Any


@dataclass(frozen=True)
class Group:
    """``all`` / ``any`` of several filters, or ``not`` of one (``parts`` has one)."""

    kind: str
    parts: tuple[Filter, ...]


Filter = Union[Test, Group]  # noqa: UP007  # a runtime alias: dataclasses above refer to it


@dataclass(frozen=True)
class GoalQuery:
    """A goal as the store counts it."""

    event: str
    within_days: float
    revenue: str | None
    where: Filter | None

    @property
    def description(self) -> str:
        text = f"{self.event} within {self.within_days:g} days of the first exposure"
        if self.where is not None:
            text += " (filtered)"
        return text + (f"; revenue: {self.revenue}" if self.revenue else "")


def goal_query(goal: Goal) -> GoalQuery:
    """``goal`` for the store; the goal must have passed :func:`goal_issues`."""
    return GoalQuery(
        event=goal.event,
        within_days=duration_to_timedelta(goal.within).total_seconds() / 86400,
        revenue=goal.revenue.removeprefix(_PREFIX) if goal.revenue else None,
        where=None if goal.where is None else _filter(goal.where),
    )


def _filter(condition: Condition) -> Filter:
    if isinstance(condition, All):
        return Group("all", tuple(_filter(c) for c in condition.all))
    if isinstance(condition, AnyOf):
        return Group("any", tuple(_filter(c) for c in condition.any))
    if isinstance(condition, Not):
        return Group("not", (_filter(condition.not_),))
    assert condition.fact is not None
    value = condition.value
    if condition.op == "exists" and value is None:
        value = True
    return Test(condition.fact.removeprefix(_PREFIX), condition.op, value)


def goal_issues(goal: Goal, base: str) -> list[Issue]:
    """What a goal's ``where`` says that the store cannot count, each at its pointer under
    ``base`` (the goal's own pointer)."""
    if goal.where is None:
        return []
    return list(_issues(goal.where, base + "/where"))


def _issues(condition: Condition, where: str) -> Sequence[Issue]:
    if isinstance(condition, All):
        return [i for n, c in enumerate(condition.all) for i in _issues(c, f"{where}/all/{n}")]
    if isinstance(condition, AnyOf):
        return [i for n, c in enumerate(condition.any) for i in _issues(c, f"{where}/any/{n}")]
    if isinstance(condition, Not):
        return _issues(condition.not_, f"{where}/not")
    return _leaf_issues(condition, where)


def _leaf_issues(leaf: Leaf, where: str) -> list[Issue]:
    issues = []
    if leaf.fact is None or not leaf.fact.startswith(_PREFIX):
        issues.append(
            Issue(
                where + "/fact",
                f"a goal's where tests the goal event's properties, not {leaf.fact!r}",
                hint='write a fact like "event.properties.amount"',
            )
        )
    if leaf.op not in OPERATORS:
        issues.append(
            Issue(
                where + "/op",
                f"a goal's where cannot use {leaf.op!r}",
                hint=f"use one of {', '.join(OPERATORS)}",
            )
        )
        return issues
    value = leaf.value
    if isinstance(value, FactRef):
        issues.append(Issue(where + "/value", "a goal's where compares with values, not facts"))
    elif leaf.op in ("in", "not_in"):
        if not isinstance(value, list) or not value or not _one_kind(value):
            issues.append(
                Issue(
                    where + "/value",
                    f"{leaf.op} takes a non-empty list of numbers or of texts, got {value!r}",
                )
            )
    elif leaf.op == "exists":
        if value is not None and not isinstance(value, bool):
            issues.append(Issue(where + "/value", f"exists takes true or false, got {value!r}"))
    elif leaf.op in ("eq", "ne"):
        if not _scalar(value):
            issues.append(
                Issue(where + "/value", f"{leaf.op} takes a number, text or boolean here")
            )
    elif isinstance(value, bool) or not isinstance(value, int | float):
        issues.append(Issue(where + "/value", f"{leaf.op} takes a number here"))
    return issues


def _scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _one_kind(values: list[Any]) -> bool:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return numbers or all(isinstance(v, str) for v in values)
