"""Facts for conditions: a contact's points, tier and lifetime points in a programme.

Each reads the plugin's tables through ``ctx.tables`` (read only) as of ``ctx.now`` (the
moment judged: an event's time), so a late event's re-judgement never sees points from after
it. ``MISSING`` where there is no store, or no programme can be told (none loaded, or several
and the leaf's ``args`` name none). Every fact takes ``{"programme": "<name>"}`` in ``args``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from clm_engine import MISSING, utc_text

from . import ledger, tiers
from .programme import Programme, resolve

if TYPE_CHECKING:
    from clm_engine import FactContext, Tables


def _scope(ctx: FactContext, programme: str | None) -> tuple[Tables, Programme] | None:
    tables: Tables | None = getattr(ctx, "tables", None)
    if tables is None:
        return None
    try:
        return tables, resolve(ctx.documents, programme)
    except ValueError:
        return None


def fact_balance(ctx: FactContext, programme: str | None = None) -> Any:
    """Points the contact can spend now (expired lots left out, swept or not)."""
    scope = _scope(ctx, programme)
    if scope is None:
        return MISSING
    tables, prog = scope
    now = utc_text(ctx.now)
    return ledger.book_of(tables, ctx.contact.id, prog.loyalty, as_of=now).available(now)


def fact_lifetime(ctx: FactContext, programme: str | None = None) -> Any:
    """Points the contact ever earned (earns and positive adjustments), spent or not."""
    scope = _scope(ctx, programme)
    if scope is None:
        return MISSING
    tables, prog = scope
    return ledger.book_of(tables, ctx.contact.id, prog.loyalty, as_of=utc_text(ctx.now)).earned


def fact_qualifying(ctx: FactContext, programme: str | None = None) -> Any:
    """Points that count for tiers now: qualifying points earned within the window."""
    scope = _scope(ctx, programme)
    if scope is None:
        return MISSING
    tables, prog = scope
    now = utc_text(ctx.now)
    return tiers.qualifying(prog, ledger.entries(tables, ctx.contact.id, prog.loyalty), now)


def fact_tier(ctx: FactContext, programme: str | None = None) -> Any:
    """The contact's tier's name (the base tier until they reach another); MISSING for a
    programme without tiers."""
    scope = _scope(ctx, programme)
    if scope is None:
        return MISSING
    tables, prog = scope
    tier = tiers.tier_of(tables, prog, ctx.contact.id, utc_text(ctx.now))
    return MISSING if tier is None else tier


def fact_expiring(ctx: FactContext, programme: str | None = None, days: int = 30) -> Any:
    """Points that expire within ``days`` days (30 unless ``args`` say), unless spent first."""
    scope = _scope(ctx, programme)
    if scope is None:
        return MISSING
    tables, prog = scope
    now = utc_text(ctx.now)
    book = ledger.book_of(tables, ctx.contact.id, prog.loyalty, as_of=now)
    return book.expiring(now, utc_text(ctx.now + timedelta(days=days)))


def _check(args: dict[str, Any], *, days: bool = False) -> None:
    allowed = {"programme", "days"} if days else {"programme"}
    unknown = set(args) - allowed
    if unknown:
        raise ValueError(f"unknown args {sorted(unknown)}; this fact takes {sorted(allowed)}")
    programme = args.get("programme")
    if programme is not None and not (isinstance(programme, str) and programme):
        raise ValueError(f'"programme" is a programme\'s name (got {programme!r})')
    if days and "days" in args:
        value = args["days"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 36500:
            raise ValueError(f'"days" is a whole number of days from 1 to 36500 (got {value!r})')


for _fact in (fact_balance, fact_lifetime, fact_qualifying, fact_tier):
    _fact.check_args = _check  # type: ignore[attr-defined]  # a function attribute the core reads
fact_expiring.check_args = lambda args: _check(args, days=True)  # type: ignore[attr-defined]  # as above

#: (name, compute, type) of every fact, for ``register_facts``.
FACTS = (
    ("contact.loyalty.balance", fact_balance, "number"),
    ("contact.loyalty.lifetime_points", fact_lifetime, "number"),
    ("contact.loyalty.qualifying_points", fact_qualifying, "number"),
    ("contact.loyalty.tier", fact_tier, "text"),
    ("contact.loyalty.points_expiring", fact_expiring, "number"),
)
