"""The built-in computed facts: values derived from a contact, its history and the clock.

Each is ``compute(ctx, **args)`` over a :class:`clm_engine.types.FactContext`, registered like
any plugin's. The compiler computes each at most once per context (``ctx.cache``). A function
may carry a ``check_args(args)`` attribute that raises ``ValueError`` for unusable ``args``:
the ruleset validator calls it when the ruleset loads.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ..conditions.values import parse_duration, to_datetime
from ..hooks import hookimpl
from ..types import MISSING, FactContext

_DAY = timedelta(days=1)


def events_count(ctx: FactContext, type: str, within: Any = None) -> Any:
    """How many events of ``type`` the contact has, in the last ``within`` if given."""
    if ctx.count_events is None:
        return MISSING
    since = ctx.now - parse_duration(within) if within is not None else None
    return ctx.count_events(type, since)


def _check_events_count(args: dict[str, Any]) -> None:
    kind = args.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValueError('needs "type": the event type to count, like {"type": "page.viewed"}')
    if args.get("within") is not None:
        parse_duration(args["within"])


events_count.check_args = _check_events_count  # type: ignore[attr-defined]  # check_args: the documented optional attribute of a compute function


def _days_since(ctx: FactContext, value: Any) -> Any:
    """Whole days from ``value`` (a date) to now, rounded down; MISSING if it is not a date."""
    moment = to_datetime(value)
    if moment is None:
        return MISSING
    now = to_datetime(ctx.now)
    if now is None:
        return MISSING
    return (now - moment) // _DAY


def days_since_signup(ctx: FactContext) -> Any:
    """Whole days since the contact was created (``contact.created_at``)."""
    return _days_since(ctx, ctx.contact.created_at)


def days_since_last_order(ctx: FactContext) -> Any:
    """Whole days since the last purchase (``contact.metrics.last_order_at``)."""
    return _days_since(ctx, ctx.contact.metrics.get("last_order_at"))


def days_since_last_event(ctx: FactContext) -> Any:
    """Whole days since the contact's latest event (``contact.last_event_at``), the engine's
    own included: an email sent restarts it. For inactivity use ``days_since_last_active``."""
    return _days_since(ctx, ctx.contact.last_event_at)


def days_since_last_active(ctx: FactContext) -> Any:
    """Whole days since the contact last did something (``contact.metrics.last_active_at``:
    the latest event from outside the engine; what the engine emitted does not count)."""
    return _days_since(ctx, ctx.contact.metrics.get("last_active_at"))


@hookimpl
def register_facts(register: Callable[..., None]) -> None:
    register(
        "events.count",
        events_count,
        type="number",
        description=(
            'Events of one type: args {"type": "page.viewed", "within": "P30D"} '
            "(within optional: all time without it)"
        ),
    )
    register(
        "contact.days_since_signup",
        days_since_signup,
        type="number",
        description="Whole days since contact.created_at",
    )
    register(
        "contact.days_since_last_order",
        days_since_last_order,
        type="number",
        description="Whole days since contact.metrics.last_order_at",
    )
    register(
        "contact.days_since_last_event",
        days_since_last_event,
        type="number",
        description="Whole days since contact.last_event_at (the engine's own events too)",
    )
    register(
        "contact.days_since_last_active",
        days_since_last_active,
        type="number",
        description=(
            "Whole days since contact.metrics.last_active_at (the latest event from outside "
            "the engine)"
        ),
    )
