"""Facts for conditions: how much a contact refers, how well, and what they are owed.

Each reads the plugin's tables through ``ctx.tables`` (read only) and is ``MISSING`` where
there are none (a pure in-memory evaluation). The query functions take the tables directly,
for the CLI, the report and tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clm_engine import MISSING, utc_text

from .ledger import balances, states

if TYPE_CHECKING:
    from clm_engine import FactContext, Tables

#: Facts answer as of the moment they are asked about (``ctx.now``: an event's time), not as of
#: the last row written: a late event re-judges a contact's history, and must not see rewards
#: that came after the event it judges. ``None``: as of now (the CLI, the report).


def referral_count(tables: Tables, contact_id: str, as_of: str | None = None) -> int:
    """Attributions to ``contact_id`` made by ``as_of`` (an attribution with no time counts)."""
    attributions = tables["referral_attributions"]
    if as_of is None:
        return attributions.count({"referrer_contact_id": contact_id})
    dated = attributions.count({"referrer_contact_id": contact_id, "attributed_at": ("<=", as_of)})
    return dated + attributions.count({"referrer_contact_id": contact_id, "attributed_at": None})


def successful_count(tables: Tables, contact_id: str, as_of: str | None = None) -> int:
    """Referred contacts whose referrer reward (earned by ``as_of``) is, by then, approved,
    redeemed, or pending and not held."""
    where: dict[str, Any] = {"referrer_contact_id": contact_id, "role": "referrer"}
    if as_of is not None:
        where["earned_at"] = ("<=", as_of)
    rows = tables["referral_rewards"].rows(
        where, columns=["id", "referred_contact_id", "held_reasons"]
    )
    current = states(tables, [row["id"] for row in rows], as_of=as_of) if rows else {}
    successful = set()
    for row in rows:
        state = current.get(row["id"])
        if state in ("approved", "redeemed") or (state == "pending" and not row["held_reasons"]):
            successful.add(row["referred_contact_id"])
    return len(successful)


def balance(
    tables: Tables, contact_id: str, currency: str | None = None, part: str = "available"
) -> Any:
    """The contact's balance in minor units; MISSING with several currencies and none asked."""
    found = balances(tables, contact_id)
    if currency is None:
        if len(found) > 1:
            return MISSING
        if not found:
            return 0
        currency = next(iter(found))
    amounts = found.get(currency, {"pending": 0, "available": 0})
    if part == "total":
        return amounts["pending"] + amounts["available"]
    return amounts[part]


def _tables(ctx: FactContext) -> Tables | None:
    tables: Tables | None = getattr(ctx, "tables", None)
    return tables


def fact_count(ctx: FactContext) -> Any:
    """How many contacts this contact referred (attributions, whatever became of them)."""
    tables = _tables(ctx)
    return MISSING if tables is None else referral_count(tables, ctx.contact.id, utc_text(ctx.now))


def fact_referred_by(ctx: FactContext) -> Any:
    """Who referred this contact (their contact id), as attribution recorded it; MISSING if
    nobody did."""
    tables = _tables(ctx)
    if tables is None:
        return MISSING
    row = tables["referral_attributions"].one(
        {"referred_contact_id": ctx.contact.id}, columns=["referrer_contact_id"]
    )
    return row["referrer_contact_id"] if row else MISSING


def fact_successful(ctx: FactContext) -> Any:
    """Referred contacts that earned this contact a reward not held, rejected or reversed."""
    tables = _tables(ctx)
    if tables is None:
        return MISSING
    return successful_count(tables, ctx.contact.id, utc_text(ctx.now))


def fact_balance(ctx: FactContext, currency: str | None = None, part: str = "available") -> Any:
    """Referral credit in minor units: ``available`` (default), ``pending`` or ``total``."""
    tables = _tables(ctx)
    return MISSING if tables is None else balance(tables, ctx.contact.id, currency, part)


def _check_balance_args(args: dict[str, Any]) -> None:
    unknown = set(args) - {"currency", "part"}
    if unknown:
        raise ValueError(f"unknown args {sorted(unknown)}; referral.balance takes currency, part")
    currency = args.get("currency")
    if currency is not None and not (
        isinstance(currency, str) and len(currency) == 3 and currency.isupper()
    ):
        raise ValueError(f'"currency" is an ISO 4217 code like "USD" (got {currency!r})')
    if args.get("part", "available") not in ("available", "pending", "total"):
        raise ValueError('"part" is one of "available", "pending", "total"')


fact_balance.check_args = _check_balance_args  # type: ignore[attr-defined]  # check_args: the documented optional attribute of a compute function
