"""The plugin's actions: ``loyalty.earn``, ``loyalty.redeem``, ``loyalty.adjust``, and the
follow-ups they enqueue, ``loyalty.expire`` and ``loyalty.review_tier``.

All are internal: they write the ledger through ``ctx.tables`` in the transaction that marks
the action done (inline while the triggering event is ingested, or at dispatch), so an entry
is written exactly once. Each entry's key is the action's outbox key: a replayed or
re-ingested event makes no new decision, and were the same action run twice, the unique key
would write nothing the second time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clm_engine import Name, utc_text
from clm_engine.money import to_minor

from . import tiers
from .ledger import MAX_POINTS, Refused, Writer
from .programme import Programme, check_reference, resolve

if TYPE_CHECKING:
    from clm_engine import ActionContext, Event, Tables

Points = int


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    programme: Name | None = Field(
        default=None, description="The programme (a loyalty document); the only one if absent."
    )

    @classmethod
    def check_references(cls, params: _Params, documents: dict[str, Any]) -> list[str]:
        return check_reference(params.programme, documents)


class EarnParams(_Params):
    """``{"points": 50}`` for every trigger, or ``{"points": 1, "per": "1.00", "currency":
    "USD"}``: one point per whole 1.00 of the event's ``amount`` (rounded down)."""

    points: int = Field(
        default=1, ge=1, le=1_000_000, description="Points (per 'per' of money, if given)."
    )
    per: str | int | None = Field(
        default=None, description='Earn per this much money of the event ("1.00").'
    )
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="The money's ISO 4217 code (with per)."
    )
    amount_property: str = Field(
        default="amount", min_length=1, max_length=100, description="Where the event has it."
    )
    qualifying: bool = Field(default=True, description="Whether the points count for tiers.")
    reason: str = Field(default="", max_length=200)

    @field_validator("per", mode="before")
    @classmethod
    def _no_float(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError(f'write "per" as a decimal string such as "{value:.2f}"')
        return value

    @model_validator(mode="after")
    def _per_needs_currency(self) -> EarnParams:
        if (self.per is None) != (self.currency is None):
            raise ValueError('"per" and "currency" go together: "per": "1.00", "currency": "USD"')
        if self.per is not None and to_minor(self.per, self.currency or "USD") <= 0:
            raise ValueError(f'"per" must be more than zero (got {self.per!r})')
        return self


class SpendParams(_Params):
    points: int | None = Field(default=None, ge=1, le=MAX_POINTS, description="How many points.")
    points_property: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Or: the event property that says how many.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SpendParams:
        if (self.points is None) == (self.points_property is None):
            raise ValueError('give exactly one of "points" or "points_property"')
        return self


class RedeemParams(SpendParams):
    reason: str = Field(default="redemption", min_length=1, max_length=200)


class AdjustParams(_Params):
    """A correction by ops or a goodwill gesture: ``points`` may be negative (never below the
    balance); positive points are a lot of their own, expiring like earned points."""

    points: int | None = Field(default=None, description="Points to add (> 0) or take (< 0).")
    points_property: str | None = Field(default=None, min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=200, description="Why: kept in the ledger.")
    qualifying: bool = Field(default=False, description="Whether added points count for tiers.")

    @model_validator(mode="after")
    def _one_source(self) -> AdjustParams:
        if (self.points is None) == (self.points_property is None):
            raise ValueError('give exactly one of "points" or "points_property"')
        if self.points is not None and (self.points == 0 or abs(self.points) > MAX_POINTS):
            raise ValueError(f"an adjustment is a non-zero number of points (got {self.points})")
        return self


class ExpireParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    programme: Name
    lot: str = Field(min_length=1, max_length=2000)


class ReviewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    programme: Name

    @classmethod
    def check_references(cls, params: ReviewParams, documents: dict[str, Any]) -> list[str]:
        return check_reference(params.programme, documents)


# -- helpers ---------------------------------------------------------------------------------


def _tables(ctx: ActionContext) -> Tables:
    tables: Tables | None = getattr(ctx, "tables", None)
    if tables is None:
        raise RuntimeError("loyalty actions need the engine's write transaction (ctx.tables)")
    return tables


def effective_time(ctx: ActionContext) -> datetime:
    """When the action's cause happened (its due time), never later than now: entries, expiry
    and windows follow the customer's time line, not the moment a worker got to the row."""
    return min(ctx.due_at or ctx.now, ctx.now)


def _plus(at: str, delta: timedelta) -> datetime | None:
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")) + delta
    except OverflowError:
        return None  # past year 9999: never, as far as a calendar goes


def _writer(ctx: ActionContext, prog: Programme) -> Writer:
    return Writer(_tables(ctx), ctx.contact.id, prog.loyalty, source=f"{ctx.ruleset}/{ctx.rule}")


def _event_id(ctx: ActionContext) -> str | None:
    return ctx.event.id if ctx.event is not None else None


def _announce(ctx: ActionContext, writer: Writer, before: int) -> None:
    """Events for the expiries a writer made (``loyalty.points_expired``): rules can tell the
    customer, and the contact's history shows it."""
    for row in writer.written[before:]:
        if row["kind"] == "expire":
            ctx.emit(
                "loyalty.points_expired",
                {"programme": row["programme"], "points": -row["points"], "lot": row["lot_key"]},
            )


def _points_from_event(event: Event | None, prop: str) -> int:
    if event is None:
        raise ValueError(f"no triggering event to read {prop!r} from")
    value = event.properties.get(prop)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_POINTS:
        raise ValueError(
            f"the event's {prop!r} must be a whole number of points from 1 to {MAX_POINTS:,} "
            f"(got {value!r})"
        )
    return value


def points_for(params: EarnParams, event: Event | None) -> int:
    """The points an earn gives; ``ValueError`` with the reason it gives none."""
    if params.per is None or params.currency is None:
        return params.points
    if event is None:
        raise ValueError("no triggering event to read an amount from")
    value = event.properties.get(params.amount_property)
    currency = event.properties.get("currency")
    if currency is not None and currency != params.currency:
        raise ValueError(
            f"the event's amount is in {currency!r}; this rule earns on {params.currency}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"the event's {params.amount_property!r} is not an amount (got {value!r})")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise ValueError(
            f"the event's {params.amount_property!r} is not an amount ({value!r})"
        ) from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(f"no points for an amount of {value!r}")
    units = int(amount // Decimal(str(params.per)))
    points = units * params.points
    if points <= 0:
        raise ValueError(f"{value} is less than {params.per} {params.currency}: no points")
    if points > MAX_POINTS:
        raise ValueError(f"{points:,} points is more than one entry holds ({MAX_POINTS:,})")
    return points


def _after_tier_change(ctx: ActionContext, prog: Programme, change: tiers.Change | None) -> None:
    if change is None:
        return
    ctx.emit("loyalty.tier_changed", change.event)
    if change.row["tier"] != prog.base_tier:
        held_until = _plus(change.row["at"], prog.hold)
        if held_until is not None:  # when the hold ends, the tier is judged again
            ctx.enqueue(
                "loyalty.review_tier",
                {"programme": prog.loyalty},
                due_at=held_until,
                occurrence="tier-hold",
            )


# -- the actions -----------------------------------------------------------------------------


def earn(ctx: ActionContext, params: EarnParams) -> dict[str, Any]:
    """Credit points for the triggering event: a lot that expires by the programme's terms,
    a tier upgrade if qualifying points cross a threshold, milestones reached."""
    prog = resolve(ctx.documents, params.programme)
    try:
        points = points_for(params, ctx.event)
    except ValueError as error:
        return {"skipped": str(error)}
    tables, at = _tables(ctx), effective_time(ctx)
    writer = _writer(ctx, prog)
    if writer.exists(ctx.key):
        return {"skipped": "earned already for this decision"}
    writer.expire_due(at)
    expires = at + prog.expiry if prog.expiry is not None else None
    row = writer.post(
        key=ctx.key,
        kind="earn",
        points=points,
        at=at,
        expires_at=expires,
        qualifying=params.qualifying,
        event_id=_event_id(ctx),
        reason=params.reason or None,
    )
    if row is None:
        return {"skipped": "earned already for this decision"}
    _announce(ctx, writer, 0)
    if row["expires_at"] is not None:
        ctx.enqueue(
            "loyalty.expire",
            {"programme": prog.loyalty, "lot": row["key"]},
            due_at=datetime.fromisoformat(row["expires_at"].replace("Z", "+00:00")),
            occurrence="expire",
        )
    result: dict[str, Any] = {"earned": points, "balance": writer.book.balance}
    if prog.tiers:
        change, note = tiers.judge(
            tables, prog, ctx.contact.id, writer.rows, at=row["at"], key=ctx.key, downgrade=False
        )
        _after_tier_change(ctx, prog, change)
        result["tier"] = note
        window_ends = _plus(row["at"], prog.window)
        if params.qualifying and window_ends is not None:  # these points stop counting then
            ctx.enqueue(
                "loyalty.review_tier",
                {"programme": prog.loyalty},
                due_at=window_ends,
                occurrence="tier-window",
            )
    for name in tiers.reached_milestones(
        tables, prog, ctx.contact.id, writer.book, at=row["at"], key=ctx.key
    ):
        ctx.emit(
            "loyalty.milestone",
            {
                "programme": prog.loyalty,
                "milestone": name,
                "earns": writer.book.earns,
                "lifetime_points": writer.book.earned,
            },
        )
        result.setdefault("milestones", []).append(name)
    return result


def _spend(
    ctx: ActionContext, prog: Programme, kind: str, points: int, reason: str
) -> dict[str, Any]:
    writer = _writer(ctx, prog)
    if writer.exists(ctx.key):
        return {"skipped": f"{kind} done already for this decision"}
    try:
        row = writer.spend(
            key=ctx.key,
            kind=kind,
            points=points,
            at=effective_time(ctx),
            event_id=_event_id(ctx),
            reason=reason,
        )
    except Refused as refusal:
        _announce(ctx, writer, 0)
        ctx.emit(
            "loyalty.redeem_refused" if kind == "redeem" else "loyalty.adjust_refused",
            {
                "programme": prog.loyalty,
                "points": points,
                "balance": writer.book.balance,
                "reason": reason,
            },
        )
        return {"skipped": f"refused: {refusal}"}
    _announce(ctx, writer, 0)
    if row is None:
        return {"skipped": f"{kind} done already for this decision"}
    if kind == "redeem":
        ctx.emit(
            "loyalty.redeemed",
            {"programme": prog.loyalty, "points": points, "balance": writer.book.balance},
        )
        return {"redeemed": points, "balance": writer.book.balance}
    return {"adjusted": -points, "balance": writer.book.balance}


def redeem(ctx: ActionContext, params: RedeemParams) -> dict[str, Any]:
    """Take points for a reward; refused (nothing taken, ``loyalty.redeem_refused`` emitted)
    beyond the balance."""
    prog = resolve(ctx.documents, params.programme)
    try:
        points = params.points or _points_from_event(ctx.event, params.points_property or "")
    except ValueError as error:
        return {"skipped": str(error)}
    return _spend(ctx, prog, "redeem", points, params.reason)


def adjust(ctx: ActionContext, params: AdjustParams) -> dict[str, Any]:
    """Add or take points, with a reason; a take beyond the balance is refused."""
    prog = resolve(ctx.documents, params.programme)
    if params.points is not None:
        points = params.points
    else:
        if ctx.event is None:
            return {"skipped": f"no triggering event to read {params.points_property!r} from"}
        value = ctx.event.properties.get(params.points_property or "")
        if isinstance(value, bool) or not isinstance(value, int) or value == 0:
            return {
                "skipped": f"the event's {params.points_property!r} is not a whole, "
                f"non-zero number of points (got {value!r})"
            }
        if abs(value) > MAX_POINTS:
            return {"skipped": f"{value:,} points is more than one entry holds"}
        points = value
    if points < 0:
        return _spend(ctx, prog, "adjust", -points, params.reason)
    writer, at = _writer(ctx, prog), effective_time(ctx)
    if writer.exists(ctx.key):
        return {"skipped": "adjusted already for this decision"}
    writer.expire_due(at)
    row = writer.post(
        key=ctx.key,
        kind="adjust",
        points=points,
        at=at,
        expires_at=at + prog.expiry if prog.expiry is not None else None,
        qualifying=params.qualifying,
        event_id=_event_id(ctx),
        reason=params.reason,
    )
    _announce(ctx, writer, 0)
    if row is None:
        return {"skipped": "adjusted already for this decision"}
    if row["expires_at"] is not None:
        ctx.enqueue(
            "loyalty.expire",
            {"programme": prog.loyalty, "lot": row["key"]},
            due_at=datetime.fromisoformat(row["expires_at"].replace("Z", "+00:00")),
            occurrence="expire",
        )
    if params.qualifying and prog.tiers:
        change, _ = tiers.judge(
            _tables(ctx),
            prog,
            ctx.contact.id,
            writer.rows,
            at=row["at"],
            key=ctx.key,
            downgrade=False,
        )
        _after_tier_change(ctx, prog, change)
    return {"adjusted": points, "balance": writer.book.balance}


def expire(ctx: ActionContext, params: ExpireParams) -> dict[str, Any]:
    """When a lot's expiry comes: what is left of it (and of any other lot due) expires."""
    writer = Writer(_tables(ctx), ctx.contact.id, params.programme, source="expiry")
    done = writer.expire_due(effective_time(ctx))
    _announce(ctx, writer, 0)
    if not done:
        return {"skipped": "nothing left of the lot to expire (spent, or expired already)"}
    return {"expired": sum(-row["points"] for row in done), "balance": writer.book.balance}


def review_tier(ctx: ActionContext, params: ReviewParams) -> dict[str, Any]:
    """Judge the contact's tier again (qualifying points fell, or a hold ended): down by the
    programme's downgrade rules, or up."""
    prog = resolve(ctx.documents, params.programme)
    writer = _writer(ctx, prog)
    change, note = tiers.judge(
        _tables(ctx),
        prog,
        ctx.contact.id,
        writer.rows,
        at=utc_text(effective_time(ctx)),
        key=ctx.key,
        downgrade=True,
    )
    _after_tier_change(ctx, prog, change)
    return {"tier": note} if change is not None else {"skipped": note}
