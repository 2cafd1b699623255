"""What a decision saw, recorded compactly; the condition trace rebuilt from it on demand.

A trace used to hold the whole explained condition tree, built by the explain interpreter on
every fire: that cost more than the compiled match itself, and stored each ruleset's
structure again in every trace. A trace now holds only the values the condition read
(``seen``): fact key -> value, for the facts that were present. ``clm explain`` prepares the
condition of the ruleset version the trace names and runs the same interpreter over those
values (:func:`clm_engine.conditions.explain.explain_node` with a reader), which gives the
tree it would have recorded (see ``docs/architecture.md``, "Traces").

The format of ``seen`` (JSON), chosen so that the values come back as the evaluation had
them (a date stays a date: ``eq`` on a date and on its text differ):

* a fact's key is its path (``contact.metrics.orders_count``); a computed fact with args adds
  them as compact JSON with sorted keys (``events.count{"type":"purchase","within":"P30D"}``);
* a missing fact has no key (a ``null`` value is a fact that is there and null);
* a value JSON keeps as it is (text, a number, true/false/null, a list of such) is stored as
  it is; any other is a one-key object saying what it is: ``{"dt": "2026-11-02T10:00:00+00:00"}``
  (a datetime), ``{"date": ...}``, ``{"m": {...}}`` (a mapping JSON keeps), ``{"f": "nan"}``
  (NaN, infinities), and, holding values encoded the same way, ``{"l": [...]}`` (a list),
  ``{"t": [...]}`` (a tuple), ``{"d": [[key, value], ...]}`` (a mapping), ``{"set": [...]}``;
  ``{"td": seconds}`` for a duration, and ``{"r": ...}`` (its JSON form, not read back as it
  was) for anything else a plugin's fact may return.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from typing import Any

from ..types import MISSING, FactContext
from .facts import FactPlan, resolve
from .prepare import Node, PGroup, PLeaf, PNot, PSegment
from .values import to_json

_SCALARS = frozenset({str, int, bool, type(None)})
_LOSSY = object()


def fact_key(plan: FactPlan) -> str:
    """The key of a fact in ``seen``: its path, with its args if it has any."""
    if not plan.args:
        return plan.path
    args = json.dumps(dict(plan.args), sort_keys=True, separators=(",", ":"), default=str)
    return plan.path + args


def readers(root: Node) -> tuple[tuple[str, FactPlan], ...]:
    """(key, plan) of every fact a prepared condition reads, segments and ``{"fact"}`` values
    included, each once, in the order they first appear."""
    found: dict[str, FactPlan] = {}
    segments: set[int] = set()

    def walk(node: Node) -> None:
        if isinstance(node, PGroup):
            for child in node.children:
                walk(child)
        elif isinstance(node, PNot):
            walk(node.child)
        elif isinstance(node, PSegment):
            if node.body is not None and id(node.body) not in segments:
                segments.add(id(node.body))
                walk(node.body)
        elif isinstance(node, PLeaf):
            found.setdefault(fact_key(node.fact), node.fact)
            if node.ref is not None:
                found.setdefault(fact_key(node.ref), node.ref)

    walk(root)
    return tuple(found.items())


def record(plans: tuple[tuple[str, FactPlan], ...], ctx: FactContext) -> dict[str, Any]:
    """``seen`` for one decision: the value of each fact in ``plans``, encoded at once (a
    contact's lists change as the fold goes on; the record keeps what the rule saw)."""
    seen: dict[str, Any] = {}
    for key, plan in plans:
        value = resolve(plan, ctx)
        if type(value) in _SCALARS:  # the common case, first
            seen[key] = value
        elif value is not MISSING:
            seen[key] = encode(value)
    return seen


def pick(reads: tuple[tuple[str, int], ...], values: tuple[Any, ...]) -> dict[str, Any]:
    """``seen`` from the values a compiled reader loaded: ``reads`` is (key, index) per fact."""
    seen: dict[str, Any] = {}
    for key, index in reads:
        value = values[index]
        if type(value) in _SCALARS:
            seen[key] = value
        elif value is not MISSING:
            seen[key] = encode(value)
    return seen


def encode(value: Any) -> Any:
    """A value as JSON that ``decode`` turns back into it (a fresh copy: nothing shared)."""
    plain = _plain(value)
    if plain is not _LOSSY and type(plain) is not dict:
        return plain
    if plain is not _LOSSY:
        return {"m": plain}
    if isinstance(value, datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, list):
        return {"l": [encode(item) for item in value]}
    if isinstance(value, tuple):
        return {"t": [encode(item) for item in value]}
    if isinstance(value, dict):
        return {"d": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, set | frozenset):
        return {"set": [encode(item) for item in value]}
    if isinstance(value, timedelta):
        return {"td": value.total_seconds()}
    return {"r": to_json(value)}


def _plain(value: Any) -> Any:
    """A copy of ``value`` if JSON keeps it exactly (text, finite numbers, booleans, null,
    lists and text-keyed mappings of such), else ``_LOSSY``."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is float:
        return value if math.isfinite(value) else _LOSSY
    if kind is list:
        items = []
        for item in value:
            copy = _plain(item)
            if copy is _LOSSY:
                return _LOSSY
            items.append(copy)
        return items
    if kind is dict:
        mapping = {}
        for key, item in value.items():
            copy = _plain(item)
            if type(key) is not str or copy is _LOSSY:
                return _LOSSY
            mapping[key] = copy
        return mapping
    return _LOSSY


def decode(value: Any) -> Any:
    """The value ``encode`` was given (but for ``{"r": ...}``, which stays its JSON form)."""
    if type(value) is not dict:
        return value
    ((kind, body),) = value.items()
    if kind == "m":
        return body
    if kind == "dt":
        return datetime.fromisoformat(body)
    if kind == "date":
        return date.fromisoformat(body)
    if kind == "f":
        return float(body)
    if kind == "l":
        return [decode(item) for item in body]
    if kind == "t":
        return tuple(decode(item) for item in body)
    if kind == "d":
        return {decode(k): decode(v) for k, v in body}
    if kind == "set":
        return {decode(item) for item in body}
    if kind == "td":
        return timedelta(seconds=body)
    return body


def reader(seen: dict[str, Any]) -> Any:
    """A fact reader over the values a decision recorded, for the explain interpreter."""

    def read(plan: FactPlan, _ctx: FactContext) -> Any:
        key = fact_key(plan)
        return decode(seen[key]) if key in seen else MISSING

    return read
