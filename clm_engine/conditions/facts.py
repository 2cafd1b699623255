"""Where a fact path's value comes from, decided once when a condition is prepared.

A path is planned into a :class:`FactPlan` (which part of the context, which keys), so that
the interpreter (:func:`resolve`) and the code generator read facts the same way. Anything not
present (a missing key, a ``None`` on the way, no event) is ``MISSING``.

Scores are the one contact map not read as stored: ``contact.scores.<name>`` (and the whole
``contact.scores``) is the score decayed to ``ctx.now`` by its half-life (see
:mod:`clm_engine.scores`), because the stored value is the score as of its last change.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ..plugins import FactSpec
from ..rulesets.problems import did_you_mean
from ..scores import current_score, current_scores
from ..types import MISSING, FactContext

#: Contact fields that hold one value (or a list, for tags).
CONTACT_VALUES = (
    "id",
    "email",
    "stage",
    "timezone",
    "tags",
    "created_at",
    "updated_at",
    "last_event_at",
)
#: Contact fields that hold a mapping, read further with dotted keys.
CONTACT_MAPPINGS = ("attributes", "metrics", "scores", "consent")
EVENT_VALUES = ("id", "type", "contact_id", "occurred_at")
TRANSITION_KEYS = ("from", "to")

_UNSET = object()


@dataclass(frozen=True)
class FactPlan:
    """How to read one fact.

    ``kind`` is one of ``contact`` (``field`` is a contact field, ``keys`` read into it),
    ``score`` (``contact.scores`` or one score, ``keys`` empty or its name: decayed to now),
    ``event`` (``field`` an event field or ``properties``), ``transition``, ``now``,
    ``computed`` (a plugin's fact, with its ``args``) or ``unknown`` (always MISSING).
    """

    path: str
    kind: str
    field: str = ""
    keys: tuple[str, ...] = ()
    spec: FactSpec | None = None
    args: tuple[tuple[str, Any], ...] = ()
    cache_key: tuple[Any, ...] | None = None
    problem: str | None = None

    @property
    def identity(self) -> tuple[Any, ...]:
        """Two plans with one identity always read the same value from a context."""
        return (self.path, self.cache_key)


def freeze(value: Any) -> Any:
    """A hashable form of a JSON value, for cache keys."""
    if isinstance(value, dict):
        return ("{}", tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("[]", tuple(freeze(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return (type(value).__name__, value)


def plan_fact(path: str, args: dict[str, Any] | None, facts: dict[str, FactSpec]) -> FactPlan:
    """Where ``path`` is read from; ``problem`` says why it can never have a value."""
    spec = facts.get(path)
    if spec is not None:
        frozen = tuple(sorted((args or {}).items()))
        key = ("fact", path, freeze(dict(frozen)))
        return FactPlan(path, "computed", spec=spec, args=frozen, cache_key=key)
    parts = path.split(".") if isinstance(path, str) else [""]
    root, rest = parts[0], parts[1:]
    problem = None
    if args:
        problem = f"only computed facts take args, and {path!r} is not one"
    if root == "contact" and rest:
        field, keys = rest[0], tuple(rest[1:])
        if field == "scores" and len(keys) <= 1:
            return FactPlan(path, "score", field, keys, problem=problem)
        if field in CONTACT_MAPPINGS:
            return FactPlan(path, "contact", field, keys, problem=problem)
        if field in CONTACT_VALUES and not keys:
            return FactPlan(path, "contact", field, problem=problem)
        if field in CONTACT_VALUES:
            problem = f"contact.{field} has no parts to read: {path!r} never has a value"
        else:
            fields = CONTACT_VALUES + CONTACT_MAPPINGS
            problem = (
                f"a contact has no field {field!r}{did_you_mean(field, fields)}"
                f" (custom data lives under contact.attributes.{field})"
            )
    elif root == "event" and rest:
        field, keys = rest[0], tuple(rest[1:])
        if field == "properties":
            return FactPlan(path, "event", field, keys, problem=problem)
        if field in EVENT_VALUES and not keys:
            return FactPlan(path, "event", field, problem=problem)
        problem = (
            f"an event has no field {field!r}{did_you_mean(field, (*EVENT_VALUES, 'properties'))}"
            f" (its data lives under event.properties.{field})"
        )
    elif root == "transition" and len(rest) == 1 and rest[0] in TRANSITION_KEYS:
        return FactPlan(path, "transition", rest[0], problem=problem)
    elif root == "now" and not rest:
        return FactPlan(path, "now", problem=problem)
    elif root == "transition":
        problem = "a stage transition has only 'transition.from' and 'transition.to'"
    else:
        known = sorted(facts)
        problem = (
            f"unknown fact {path!r}{did_you_mean(path, known)}: facts start with 'contact.', "
            "'event.' or 'transition.', or are 'now' or a computed fact"
            + (f" ({', '.join(known)})" if known else "")
        )
    return FactPlan(path, "unknown", problem=problem)


#: The declared type of each contact field that holds one value.
CONTACT_VALUE_TYPES = {
    "id": "text",
    "email": "text",
    "stage": "text",
    "timezone": "text",
    "tags": "list",
    "created_at": "time",
    "updated_at": "time",
    "last_event_at": "time",
}
#: The core reducers' metrics (``clm_engine.builtins.reducers``, ``clm_engine.scores``). Any
#: other metric whose name ends in ``_at`` is a time; the rest are not declared ("any").
METRIC_TYPES = {
    "events_count": "number",
    "orders_count": "number",
    "total_spent": "number",
    "average_order_value": "number",
    "emails_opened": "number",
    "emails_clicked": "number",
    "tickets_count": "number",
    "nps_score": "number",
    "nps_category": "text",
    "open_tickets": "list",
    "closed_tickets": "list",
    "scores_changed_at": "mapping",
    "score_half_lives": "mapping",
}
EVENT_VALUE_TYPES = {
    "id": "text",
    "type": "text",
    "contact_id": "text",
    "occurred_at": "time",
}


def fact_type(plan: FactPlan) -> str:
    """The declared type of a planned fact (a ``clm_engine.plugins.FactType``); ``"any"``
    where nothing is known (attributes, event properties, a plugin's undeclared fact)."""
    kind, keys = plan.kind, plan.keys
    if kind == "computed":
        return plan.spec.type if plan.spec is not None else "any"
    if kind == "score":
        return "number" if keys else "mapping"
    if kind == "contact":
        if plan.field in CONTACT_VALUE_TYPES:
            return CONTACT_VALUE_TYPES[plan.field]
        if not keys:
            return "mapping"
        if len(keys) > 1:
            return "any"
        if plan.field == "consent":
            return "boolean"
        if plan.field == "metrics":
            declared = METRIC_TYPES.get(keys[0])
            if declared is not None:
                return declared
            return "time" if keys[0].endswith("_at") else "any"
        if plan.field == "scores":
            return "number"
        return "any"
    if kind == "event":
        if plan.field == "properties":
            return "any" if keys else "mapping"
        return EVENT_VALUE_TYPES.get(plan.field, "any")
    if kind == "transition":
        return "text"
    if kind == "now":
        return "time"
    return "any"


def check_args(plan: FactPlan) -> str | None:
    """Why a computed fact's args are unusable, or None. Uses ``compute.check_args`` if any."""
    spec = plan.spec
    if spec is None:
        return None
    args = dict(plan.args)
    checker = getattr(spec.compute, "check_args", None)
    if callable(checker):
        try:
            checker(args)
        except ValueError as error:
            return f"{plan.path}: {error}"
    try:
        inspect.signature(spec.compute).bind(None, **args)
    except TypeError as error:
        return f"{plan.path}: {error}"
    except ValueError:  # no signature to inspect (a builtin): nothing more to check
        pass
    return None


def _walk(value: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if type(value) is not dict:
            return MISSING
        value = value.get(key, MISSING)
    return value


def load_computed(plan: FactPlan, ctx: FactContext) -> Any:
    """A computed fact's value, computed at most once per context (kept in ``ctx.cache``)."""
    cache = ctx.cache
    value = cache.get(plan.cache_key, _UNSET)
    if value is _UNSET:
        value = cache[plan.cache_key] = plan.spec.compute(ctx, **dict(plan.args))  # type: ignore[union-attr]  # a plan reaching here has a spec: prepare rejects unknown facts
    return value


def resolve(plan: FactPlan, ctx: FactContext) -> Any:
    """The fact's value in ``ctx``, or MISSING. The reference the generated code must match."""
    kind = plan.kind
    if kind == "contact":
        value = getattr(ctx.contact, plan.field)
        return _walk(value, plan.keys) if plan.keys else value
    if kind == "score":
        if plan.keys:
            return current_score(ctx.contact, plan.keys[0], ctx.now)
        return current_scores(ctx.contact, ctx.now)
    if kind == "event":
        event = ctx.event
        if event is None:
            return MISSING
        value = getattr(event, plan.field)
        return _walk(value, plan.keys) if plan.keys else value
    if kind == "transition":
        transition = ctx.transition
        return transition.get(plan.field, MISSING) if type(transition) is dict else MISSING
    if kind == "now":
        return ctx.now
    if kind == "computed":
        return load_computed(plan, ctx)
    return MISSING
