"""Which fact paths exist, and where each may be used.

A fact path names a value a condition reads:

- ``contact.<field>`` for the contact's own fields, and ``contact.<map>.<key>`` for its maps
  (``attributes``, ``metrics``, ``scores``, ``consent``); taken from the ``Contact`` model so a
  new field is known at once;
- ``event.<field>`` / ``event.properties.<key>``: the triggering event, so only where there is
  one (event rules and their ``where``, and ``stage_changed`` rules, whose change an event
  caused);
- ``transition.from`` / ``transition.to``: only in ``stage_changed`` rules;
- ``now``;
- a computed fact a plugin registered (``events.count``), by its exact name.

Anything else is a typo, and the check says which known path it is closest to.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from ..experiments import ARM_FACT, alias_of
from ..models import Contact, Event
from .problems import Issue, closest, did_you_mean, quoted_list

NOW = "now"


def _fields(model: type[BaseModel]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(plain fields, map fields that need a key, date fields) of a model."""
    plain, maps, dates = [], [], []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        members = typing.get_args(annotation) if is_union else (annotation,)
        origins = {typing.get_origin(m) or m for m in members}
        if dict in origins:
            maps.append(name)
        else:
            plain.append(name)
            if any(_is_datetime(m) for m in origins):
                dates.append(name)
    return tuple(plain), tuple(maps), tuple(dates)


def _is_datetime(annotation: Any) -> bool:
    # pydantic's AwareDatetime is a marker class, not a datetime subclass.
    return isinstance(annotation, type) and (
        issubclass(annotation, datetime) or annotation.__name__.endswith("Datetime")
    )


CONTACT_FIELDS, CONTACT_MAPS, CONTACT_DATES = _fields(Contact)
EVENT_FIELDS, EVENT_MAPS, _ = _fields(Event)
TRANSITION_FIELDS = ("from", "to")


@dataclass(frozen=True)
class Scope:
    """What a condition can see where it is written."""

    where: str  # "this segment", "a schedule rule" ...: for messages
    event: bool = False
    transition: bool = False


SEGMENT = Scope("a segment (segments describe contacts, with no event at hand)")


class FactPaths:
    """Checks fact paths against the built-in roots and the registered computed facts.

    It agrees with what ``clm_engine.conditions`` can read (a map without a key reads the
    whole map; a computed fact is matched by its exact name), and adds where a fact exists:
    an event fact needs an event, a transition fact a stage change.
    """

    def __init__(self, computed: Collection[str]) -> None:
        self.computed = frozenset(computed)

    def check(self, path: str, scope: Scope, where: str) -> list[Issue]:
        """Issues with ``path`` used in ``scope``; ``where`` is the pointer of the path."""
        if path == NOW or path in self.computed:
            return []
        if alias_of(path) is not None and ARM_FACT in self.computed:
            return []  # contact.experiments.<name>: the arm (docs/experiments.md)
        root, _, rest = path.partition(".")
        if root == "contact" and rest:
            return self._check_fields(path, rest, CONTACT_FIELDS, CONTACT_MAPS, where)
        if root == "event" and rest:
            return self.check_scope(path, scope, where) or self._check_fields(
                path, rest, EVENT_FIELDS, EVENT_MAPS, where
            )
        if root == "transition" and rest in TRANSITION_FIELDS:
            return self.check_scope(path, scope, where)
        return [
            Issue(
                where,
                f"unknown fact {path!r}{did_you_mean(path, self._candidates(path, scope))}",
                hint=self._known_hint(scope),
            )
        ]

    def check_scope(self, path: str, scope: Scope, where: str) -> list[Issue]:
        """An issue if ``path`` reads an event or a transition that ``scope`` does not have."""
        if path in self.computed:
            return []
        root = path.split(".", 1)[0]
        if root == "event" and not scope.event:
            return [
                Issue(
                    where,
                    f"{path!r} reads the triggering event, but there is no event in {scope.where}",
                    hint="event.* works in event rules (and their 'where') and in "
                    "stage_changed rules",
                )
            ]
        if root == "transition" and not scope.transition:
            return [
                Issue(
                    where,
                    f"{path!r} is only set in rules triggered by stage_changed, not in "
                    f"{scope.where}",
                )
            ]
        return []

    def _check_fields(
        self,
        path: str,
        rest: str,
        plain: tuple[str, ...],
        maps: tuple[str, ...],
        where: str,
    ) -> list[Issue]:
        root = path.split(".", 1)[0]
        field, _, key = rest.partition(".")
        if field in maps or (field in plain and not key):
            return []
        if field in plain:
            return [Issue(where, f"{root}.{field} has no parts: {path!r} is not a fact")]
        match = closest(field, list(plain) + list(maps))
        suggestion = ""
        if match:
            fixed = f"{root}.{match}" + (f".{key}" if key and match in maps else "")
            suggestion = f"; did you mean {fixed!r}?"
        return [
            Issue(
                where,
                f"unknown fact {path!r}{suggestion}",
                hint=f"{root} has the fields {quoted_list(plain, conjunction='and')} and the "
                f"maps {quoted_list([m + '.<name>' for m in maps], conjunction='and')}",
            )
        ]

    def _candidates(self, path: str, scope: Scope) -> list[str]:
        """Every known path shaped like ``path``: what "did you mean" compares it with."""
        parts = path.split(".")
        tail = ".".join(parts[2:]) or "x"
        found = [NOW, *sorted(self.computed)]
        found += [f"contact.{f}" for f in CONTACT_FIELDS]
        found += [f"contact.{m}.{tail}" for m in CONTACT_MAPS]
        if scope.event:
            found += [f"event.{f}" for f in EVENT_FIELDS]
            found += [f"event.{m}.{tail}" for m in EVENT_MAPS]
        if scope.transition:
            found += [f"transition.{f}" for f in TRANSITION_FIELDS]
        return found

    def _known_hint(self, scope: Scope) -> str:
        roots = ["contact.<field>"]
        if scope.event:
            roots.append("event.<field>")
        if scope.transition:
            roots.append("transition.from/to")
        roots.append("now")
        computed = sorted(self.computed)
        if computed:
            listed = ", ".join(computed[:12]) + (", ..." if len(computed) > 12 else "")
            roots.append(f"a computed fact ({listed})")
        return "facts here are " + ", ".join(roots)

    # -- special places --------------------------------------------------------------------

    def check_anchor(self, path: str, where: str) -> list[Issue]:
        """``before`` / ``after`` of a relative-time trigger, ``on`` of a recurring one: a date
        of the contact."""
        issues = self.check(path, Scope("a relative-time trigger"), where)
        if issues or path in self.computed:
            return issues
        field, _, key = path.removeprefix("contact.").partition(".")
        if path.startswith("contact.") and (
            field in CONTACT_DATES
            or (field == "attributes" and key)
            or (field == "metrics" and key.endswith("_at"))
        ):
            return []
        return [
            Issue(
                where,
                f"{path!r} is not a date: before/after/on need a date fact",
                hint="use "
                + ", ".join(f"contact.{d}" for d in CONTACT_DATES)
                + ", contact.metrics.<name>_at, contact.attributes.<name> or a computed date "
                "fact",
            )
        ]

    def check_once_per(self, path: str, scope: Scope, where: str) -> list[Issue]:
        """``limit.once_per``: ``"contact"`` or a fact under ``event.`` / ``contact.``."""
        if path == "contact":
            return []
        if not path.startswith(("event.", "contact.")):
            return [
                Issue(
                    where,
                    f"once_per is 'contact' or a fact under event. or contact., found {path!r}",
                    hint='e.g. "event.properties.product_id": once per contact and product',
                )
            ]
        return self.check(path, scope, where)


def stage_names_in(value: Any) -> list[tuple[str, str]]:
    """(relative pointer, name) of each stage name in a leaf value (a string or a list)."""
    if isinstance(value, str):
        return [("", value)]
    if isinstance(value, list):
        return [(f"/{i}", v) for i, v in enumerate(value) if isinstance(v, str)]
    return []
