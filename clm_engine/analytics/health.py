"""The customer health score: a documented, editable weighted combination of parts (usage,
support tickets, NPS by default), each scored 0-100 over a window of days.

The definition is a JSON document (``{"health": "default", ...}``, ``health.json`` beside this
module is the shipped default): ops teams edit it, ``clm analytics validate`` and ``clm
validate`` check it with file, line, column and JSON pointer, and a copy kept beside the
rulesets is loaded with them and replaces the default (``ctx.documents["health"]``).

A part ``count``s the contact's events of its types in the window and scores
``100 x min(count / target, 1)`` (``better: "lower"``: ``100 x max(1 - count / target, 0)``),
or takes a ``value`` of the contact's state (``metrics.nps_score``: the latest NPS answer, kept
by the core's reducer), when its time (``at``, optional) is in the window, scaled from
``[low, high]`` to 0-100 and clamped. The score is the weighted mean of the parts that have
a value (a contact who never answered NPS is scored on usage and tickets alone);
``docs/metrics.md`` has the formulas. Computed by one aggregate query in the store
(``store.analytics.health_scores``), for every contact at once (the report) or for one
(``clm explain``). The fact
``contact.health.score`` computes the same from the contact as rules see it (its state and
``events.count`` over the history folded so far), so a rule judged inside a batch of events
sees the events before it in that batch; a test holds the two to the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ..conditions.values import parse_duration
from ..models import EventType, Name, utc_text
from ..store import analytics as sql
from ..types import FactContext
from .definitions import load_document

KIND = "health"
DEFAULT_PATH = Path(__file__).with_name("health.json")
Weight = Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
Bound = Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)]
#: A number (or, for ``at``, a time) in the contact's state: its metrics, attributes or scores.
StatePath = Annotated[str, Field(pattern=r"^(metrics|attributes|scores)(\.[A-Za-z0-9_-]+)+$")]


class HealthPart(BaseModel):
    """One part of the score."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    weight: Weight
    measure: Literal["count", "value"]
    events: Annotated[list[EventType], Field(min_length=1, max_length=50)] | None = None
    target: Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)] | None = None
    better: Literal["higher", "lower"] = "higher"
    fact: StatePath | None = None
    at: StatePath | None = None
    low: Bound = 0
    high: Bound = 10
    description: str = ""

    @model_validator(mode="after")
    def _measured(self) -> HealthPart:
        if self.measure == "count" and (self.target is None or not self.events):
            raise ValueError(
                'a "count" part needs the events it counts and a target: the count that scores 100'
            )
        if self.measure == "value":
            if self.fact is None:
                raise ValueError(
                    'a "value" part needs the contact\'s value it reads, e.g. "metrics.nps_score"'
                )
            if self.high <= self.low:
                raise ValueError(f"high ({self.high:g}) must be above low ({self.low:g})")
        return self


class HealthDefinition(BaseModel):
    """The whole document."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    health: Name
    description: str = ""
    window: Annotated[str, Field(pattern=r"^P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$")] = "P90D"
    parts: Annotated[list[HealthPart], Field(min_length=1, max_length=20)]

    @field_validator("window")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= timedelta(0):
            raise ValueError("the window must be longer than zero")
        return value

    @model_validator(mode="after")
    def _valid(self) -> HealthDefinition:
        names = [part.name for part in self.parts]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"part names are unique; named twice: {', '.join(doubled)}")
        return self

    @property
    def window_length(self) -> timedelta:
        return parse_duration(self.window)

    def store_parts(self) -> list[sql.HealthPartQuery]:
        return [
            sql.HealthPartQuery(
                measure=p.measure,
                events=tuple(p.events or ()),
                weight=p.weight,
                target=p.target or 1.0,
                lower_is_better=p.better == "lower",
                fact=p.fact,
                at=p.at,
                low=p.low,
                high=p.high,
            )
            for p in self.parts
        ]


def load_health(path: str | Path | None = None) -> HealthDefinition:
    """The definition in ``path`` (the shipped default without one); a
    :class:`DefinitionsError` listing every problem with its line if it is not valid."""
    return load_document(Path(path) if path is not None else DEFAULT_PATH, HealthDefinition)


_DEFAULT: list[HealthDefinition] = []


def definition_in(documents: Any, name: str = "default") -> HealthDefinition:
    """The definition ``name`` loaded beside the rulesets, else the shipped default."""
    loaded = (documents or {}).get(KIND, {})
    if name in loaded:
        found: HealthDefinition = loaded[name]
        return found
    if not _DEFAULT:
        _DEFAULT.append(load_health())
    return _DEFAULT[0]


@dataclass
class Health:
    """One contact's score and its parts (what ``clm explain`` shows)."""

    score: float | None
    window_from: str
    until: str
    parts: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "window": {"from": self.window_from, "until": self.until},
            "parts": self.parts,
        }


def health_of(db: Any, contact_id: str, definition: HealthDefinition, now: datetime) -> Health:
    """The contact's health as of ``now``: its events in the window up to and including
    ``now`` (a rule on an NPS answer sees that answer)."""
    since = utc_text(now - definition.window_length)
    until = utc_text(now + timedelta(microseconds=1))
    rows = sql.health_scores(
        db, definition.store_parts(), since=since, until=until, contact_id=contact_id
    )
    raw = rows[0] if rows else (contact_id, *([None, None] * len(definition.parts)), None)
    parts = [
        {
            "name": part.name,
            "measure": part.measure,
            "weight": part.weight,
            "value": raw[1 + 2 * index],
            "score": _round(raw[2 + 2 * index]),
        }
        for index, part in enumerate(definition.parts)
    ]
    return Health(_round(raw[-1]), since, until, parts)


def health_summary(db: Any, definition: HealthDefinition, now: datetime) -> dict[str, Any]:
    """Every contact's score, summarised: count, mean, the mean of each part, and the
    distribution in ten bins of ten points."""
    since, until = utc_text(now - definition.window_length), utc_text(now)
    bins = sql.health_bins(db, definition.store_parts(), since=since, until=until)
    scored = sum(n for _, n, _, _ in bins)
    part_sums = [0.0] * len(definition.parts)
    part_counts = [0] * len(definition.parts)
    total = 0.0
    for _, _count, score_sum, parts in bins:
        total += score_sum
        for index, (part_sum, part_n) in enumerate(parts):
            part_sums[index] += part_sum
            part_counts[index] += part_n
    counts = {b: n for b, n, _, _ in bins}
    return {
        "definition": definition.health,
        "window": definition.window,
        "contacts": scored,
        "mean": round(total / scored, 1) if scored else None,
        "parts": [
            {
                "name": part.name,
                "weight": part.weight,
                "mean": round(part_sums[i] / part_counts[i], 1) if part_counts[i] else None,
                "contacts": part_counts[i],
            }
            for i, part in enumerate(definition.parts)
        ],
        "histogram": [
            {"from": 10 * b, "to": 10 * b + 10, "contacts": counts.get(b, 0)} for b in range(10)
        ],
    }


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def health_in_context(ctx: FactContext, definition: HealthDefinition) -> Health:
    """The same score as :func:`health_of`, from what a rule sees: the contact's state and
    ``ctx.count_events`` (the history folded so far, up to and including ``ctx.now``)."""
    assert ctx.count_events is not None
    since = ctx.now - definition.window_length
    since_text = utc_text(since)
    until_text = utc_text(ctx.now + timedelta(microseconds=1))
    state = {
        "metrics": ctx.contact.metrics,
        "attributes": ctx.contact.attributes,
        "scores": ctx.contact.scores,
    }
    parts, weighted, weights = [], 0.0, 0.0
    for part in definition.parts:
        value: Any
        score: float | None
        if part.measure == "count":
            value = sum(ctx.count_events(kind, since) for kind in part.events or ())
            share = min(value / (part.target or 1.0), 1.0)
            score = 100.0 * (1.0 - share) if part.better == "lower" else 100.0 * share
        else:
            value = _number(_lookup(state, part.fact or ""))
            if part.at is not None:
                at = _lookup(state, part.at)
                last = sql.last_second(until_text)
                if not isinstance(at, str) or not since_text[:19] <= at[:19] <= last:
                    value = None
            score = (
                None
                if value is None
                else 100.0 * max(0.0, min(1.0, (value - part.low) / (part.high - part.low)))
            )
        if score is not None:
            weighted += part.weight * score
            weights += part.weight
        parts.append(
            {
                "name": part.name,
                "measure": part.measure,
                "weight": part.weight,
                "value": value,
                "score": _round(score),
            }
        )
    total = _round(weighted / weights) if weights else None
    return Health(total, since_text, until_text, parts)


def _lookup(state: dict[str, Any], path: str) -> Any:
    value: Any = state
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
