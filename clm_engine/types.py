"""Small types that plugins, conditions, actions and the engine share.

Kept apart from ``models.py`` (pydantic data) because these are runtime contracts: what a fact
function, an operator or an action receives, and what a dispatch policy may answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .models import Contact, Event


class _Missing:
    """The value of a fact that is not there: not ``None`` (which is a value), not an error.

    Comparisons against it are false; ``exists`` is false and ``is_null`` is true.
    """

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass
class FactContext:
    """What a condition is evaluated over: one contact, at one moment, for one occurrence.

    ``event`` is the triggering event (``None`` for schedules and relative-time triggers);
    ``transition`` is ``{"from": ..., "to": ...}`` for stage-change triggers. ``count_events``
    answers ``events.count`` (the engine supplies it, backed by the store). ``cache`` holds
    computed facts already loaded for this context, so a fact used by several rules is loaded
    once per contact.
    """

    contact: Contact
    now: datetime
    event: Event | None = None
    transition: dict[str, str | None] | None = None
    count_events: Callable[[str, datetime | None], int] | None = None
    stages: tuple[str, ...] = ()
    cache: dict[Any, Any] = field(default_factory=dict)
    #: For a rule timed on a plugin's entity (a product's warranty end): that entity's id, so
    #: the plugin's facts (``product.has_service_agreement``) know which one is meant.
    entity: str | None = None


@dataclass(frozen=True)
class Veto:
    """A dispatch policy's answer: do not run this action, for this reason (it is recorded)."""

    reason: str


@dataclass(frozen=True)
class Defer:
    """A dispatch policy's answer: not now; try again at ``until`` (never a silent skip)."""

    until: datetime
    reason: str


@dataclass
class ActionContext:
    """What an action's ``run(ctx, params)`` receives when it is dispatched.

    ``emit(type, properties)`` records an event about the contact; the engine applies it (its
    reducers, and any rules it triggers) in the same transaction that marks the action done,
    so an internal effect happens exactly once. The emitted event's id derives from ``key``.
    """

    contact: Contact
    key: str
    now: datetime
    ruleset: str
    rule: str
    stages: tuple[str, ...] = ()
    emitted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def emit(self, type: str, properties: dict[str, Any] | None = None) -> None:
        self.emitted.append((type, dict(properties or {})))
