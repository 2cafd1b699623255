"""Facts for conditions: how much a contact refers, how well, and what they are owed.

Each reads the plugin's tables through ``ctx.db`` (read only) and is ``MISSING`` where there
is no database (a pure in-memory evaluation). The query functions take a database directly,
for the CLI, the report and tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clm_engine import MISSING, utc_text

from .ledger import balances

if TYPE_CHECKING:
    import sqlite_utils

    from clm_engine import FactContext

#: A referral is successful when its referrer reward is not held, rejected or reversed, as
#: of a moment (``?2``): rewards earned by then, in the state their entries gave them by then.
_SUCCESSFUL = """
SELECT COUNT(DISTINCT r.referred_contact_id) FROM referral_rewards r
WHERE r.referrer_contact_id = ?1 AND r.role = 'referrer' AND r.earned_at <= ?2 AND (
    SELECT e.state FROM referral_entries e WHERE e.reward_id = r.id AND e.at <= ?2
    ORDER BY e.seq DESC LIMIT 1
) IN ('approved', 'redeemed', CASE WHEN r.held_reasons = '[]' THEN 'pending' END)
"""

#: Facts answer as of the moment they are asked about (``ctx.now``: an event's time), not as of
#: the last row written: a late event re-judges a contact's history, and must not see rewards
#: that came after the event it judges.
_END_OF_TIME = "9999"


def referral_count(db: sqlite_utils.Database, contact_id: str, as_of: str = _END_OF_TIME) -> int:
    (count,) = db.execute(
        "SELECT COUNT(*) FROM referral_attributions WHERE referrer_contact_id = ? "
        "AND coalesce(attributed_at, '') <= ?",
        [contact_id, as_of],
    ).fetchone()
    return int(count)


def successful_count(db: sqlite_utils.Database, contact_id: str, as_of: str = _END_OF_TIME) -> int:
    (count,) = db.execute(_SUCCESSFUL, [contact_id, as_of]).fetchone()
    return int(count)


def balance(
    db: sqlite_utils.Database, contact_id: str, currency: str | None = None, part: str = "available"
) -> Any:
    """The contact's balance in minor units; MISSING with several currencies and none asked."""
    found = balances(db, contact_id)
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


def _db(ctx: FactContext) -> Any:
    return getattr(ctx, "db", None)


def fact_count(ctx: FactContext) -> Any:
    """How many contacts this contact referred (attributions, whatever became of them)."""
    db = _db(ctx)
    return MISSING if db is None else referral_count(db, ctx.contact.id, utc_text(ctx.now))


def fact_referred_by(ctx: FactContext) -> Any:
    """Who referred this contact (their contact id), as attribution recorded it; MISSING if
    nobody did."""
    db = _db(ctx)
    if db is None:
        return MISSING
    row = db.execute(
        "SELECT referrer_contact_id FROM referral_attributions WHERE referred_contact_id = ?",
        [ctx.contact.id],
    ).fetchone()
    return row[0] if row else MISSING


def fact_successful(ctx: FactContext) -> Any:
    """Referred contacts that earned this contact a reward not held, rejected or reversed."""
    db = _db(ctx)
    return MISSING if db is None else successful_count(db, ctx.contact.id, utc_text(ctx.now))


def fact_balance(ctx: FactContext, currency: str | None = None, part: str = "available") -> Any:
    """Referral credit in minor units: ``available`` (default), ``pending`` or ``total``."""
    db = _db(ctx)
    return MISSING if db is None else balance(db, ctx.contact.id, currency, part)


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


fact_balance.check_args = _check_balance_args  # type: ignore[attr-defined]
