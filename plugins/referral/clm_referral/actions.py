"""The plugin's actions: ``referral.code``, ``referral.reward``, ``referral.approve`` and
``referral.reverse``.

All are internal: they write the plugin's tables through ``ctx.tables``, in the dispatch
write transaction, which commits together with the outbox row being marked done. A retry rolls
the writes back first, so a ledger entry happens exactly once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clm_engine import Name, utc_text
from clm_engine.money import format_minor, to_minor

from . import ledger
from .attribution import attribution_of, ensure_code
from .codes import display_code
from .fraud import Claim, FraudSettings, run_checks

if TYPE_CHECKING:
    from clm_engine import ActionContext, Tables

Amount = str | int


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError(
            f'write the amount as a decimal string such as "{value:.2f}", not the number '
            f"{value!r}: binary floating point cannot hold cents exactly"
        )
    return value


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodeParams(_Params):
    rotate: bool = Field(
        default=False, description="Retire the contact's code and issue a new one."
    )


class RewardParams(_Params):
    kind: Name = Field(
        default="referral",
        description="What the reward is for (onboarding, first-purchase ...): one reward per "
        "referred contact and kind, whatever retries or replays happen.",
    )
    amount: Amount = Field(description='The referrer\'s credit, a decimal string ("50.00").')
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, like USD.")
    referred_amount: Amount | None = Field(
        default=None, description="Also credit the referred contact this much."
    )
    approve_after_days: int = Field(
        default=14,
        ge=0,
        description="Approve automatically this many days after it was earned, unless held "
        "for review or reversed first.",
    )
    monthly_cap: int | None = Field(
        default=10, ge=1, description="Hold rewards past this many per referrer per month."
    )
    burst_count: int | None = Field(
        default=5, ge=2, description="Hold when this many referred signups of one referrer..."
    )
    burst_hours: int = Field(default=24, ge=1, description="... come within this many hours.")

    _no_floats = field_validator("amount", "referred_amount", mode="before")(_no_float)

    @model_validator(mode="after")
    def _amounts_are_exact(self) -> RewardParams:
        for amount in (self.amount, self.referred_amount):
            if amount is not None and to_minor(amount, self.currency) <= 0:
                raise ValueError(f"a reward must be more than zero (got {amount!r})")
        return self


class ApproveParams(_Params):
    reward: str = Field(pattern=r"^rw-[0-9a-f]{12}$", description="The reward's id.")


class ReverseParams(_Params):
    kind: Name | None = Field(
        default=None, description="Only rewards of this kind (default: every kind)."
    )
    within_days: int = Field(
        default=30,
        ge=0,
        description="Only rewards earned at most this many days before the event.",
    )
    reason: str = Field(default="refund", min_length=1, max_length=200)
    states: list[Literal["pending", "approved", "redeemed"]] = Field(
        default=["pending", "approved", "redeemed"],
        description="Which states may be clawed back.",
    )


def _tables(ctx: ActionContext) -> Tables:
    tables: Tables | None = getattr(ctx, "tables", None)
    if tables is None:
        raise RuntimeError("referral actions need the engine's write transaction (ctx.tables)")
    return tables


def effective_time(ctx: ActionContext) -> datetime:
    """When the action's cause happened: the outbox row's due time (the triggering event's
    time for an immediate rule), never later than now. Rewards are dated by it, so windows
    (approval delay, refund window, monthly caps) follow the customer's time line, not the
    moment a worker got to the row."""
    return min(ctx.due_at or ctx.now, ctx.now)


def _email(ctx: ActionContext, contact_id: str) -> str | None:
    contact = ctx.contact_of(contact_id)
    return contact.email if contact is not None else None


def issue_code(ctx: ActionContext, params: CodeParams) -> dict[str, Any]:
    """Give the contact a referral code (idempotent: the same code unless ``rotate``)."""
    code, created = ensure_code(
        _tables(ctx), ctx.contact.id, at=utc_text(effective_time(ctx)), rotate=params.rotate
    )
    if created:
        ctx.emit("referral.code_issued", {"code": display_code(code)})
    return {"code": display_code(code), "created": created}


def reward(ctx: ActionContext, params: RewardParams) -> dict[str, Any]:
    """Credit the referrer (and optionally the referred contact) for this referred contact.

    Runs on the referred contact. Fraud checks run once; a flagged reward is held pending
    with its reasons and never approved automatically. An unflagged one gets a follow-up
    ``referral.approve`` due ``approve_after_days`` after it was earned.
    """
    tables = _tables(ctx)
    referred = ctx.contact
    attribution = attribution_of(tables, referred.id)
    if attribution is None:
        return {"skipped": f"{referred.id} was not referred by anyone"}
    referrer = attribution["referrer_contact_id"]
    earned = effective_time(ctx)
    settings = FraudSettings(params.monthly_cap, params.burst_count, params.burst_hours)
    amounts = {"referrer": to_minor(params.amount, params.currency)}
    if params.referred_amount is not None:
        amounts["referred"] = to_minor(params.referred_amount, params.currency)
    claim = Claim(
        referrer_id=referrer,
        referred_id=referred.id,
        role="referrer",
        kind=params.kind,
        amount_minor=amounts["referrer"],
        currency=params.currency,
        at=earned,
        referrer_email=_email(ctx, referrer),
        referred_email=referred.email,
        attributed_at=attribution["attributed_at"],
        settings=settings,
    )
    granted, existing = [], []
    reasons: list[str] | None = None
    approve_at = earned + timedelta(days=params.approve_after_days)
    for role, amount in amounts.items():
        grant = ledger.Grant(
            referred_contact_id=referred.id,
            referrer_contact_id=referrer,
            role=role,
            kind=params.kind,
            amount_minor=amount,
            currency=params.currency,
            earned_at=utc_text(earned),
            created_at=utc_text(ctx.now),
            approve_after=utc_text(approve_at),
            action_key=ctx.key,
            ruleset=ctx.ruleset,
            rule=ctx.rule,
        )
        if ledger.get_reward(tables, grant.id) is not None:
            existing.append(grant.id)
            continue
        if reasons is None:  # only for a reward that is really new
            reasons = run_checks(claim, tables, ctx.registry)
        grant.held_reasons = list(reasons)
        if not ledger.grant(tables, grant, actor=f"rule {ctx.ruleset}/{ctx.rule}"):
            existing.append(grant.id)
            continue
        granted.append(grant)
        if not grant.held_reasons:
            ctx.enqueue(
                "referral.approve",
                {"reward": grant.id},
                due_at=approve_at,
                occurrence=f"approve-{grant.id}",
            )
        properties = {
            "reward_id": grant.id,
            "role": role,
            "kind": params.kind,
            "referred_id": referred.id,
            "referrer_id": referrer,
            "amount_minor": amount,
            "currency": params.currency,
            "held": bool(grant.held_reasons),
            "reasons": grant.held_reasons,
        }
        ctx.emit("referral.rewarded", properties, contact_id=grant.beneficiary)
    if not granted:
        return {"skipped": f"already rewarded for this referral ({', '.join(existing)})"}
    return {
        "rewards": [
            {
                "id": g.id,
                "to": g.beneficiary,
                "amount": format_minor(g.amount_minor, g.currency),
                "held": g.held_reasons,
            }
            for g in granted
        ]
    }


def approve(ctx: ActionContext, params: ApproveParams) -> dict[str, Any]:
    """The automatic approval of an unflagged reward, when its waiting period is over."""
    tables = _tables(ctx)
    row = ledger.get_reward(tables, params.reward)
    if row is None:
        return {"skipped": f"no reward {params.reward} (forgotten?)"}
    if row["held_reasons"]:
        return {"skipped": f"held for review: {'; '.join(row['held_reasons'])}"}
    if row["state"] != "pending":
        return {"skipped": f"reward is {row['state']}"}
    ledger.transition(tables, params.reward, "approve", at=utc_text(ctx.now), actor="auto-approval")
    return {"approved": params.reward}


def reverse(ctx: ActionContext, params: ReverseParams) -> dict[str, Any]:
    """Claw back the rewards earned for this (referred) contact, e.g. on a refund within N
    days of the reward. Each reward is reversed once; the referrer hears of it through a
    ``referral.reversed`` event."""
    tables = _tables(ctx)
    at = effective_time(ctx)
    earliest = utc_text(at - timedelta(days=params.within_days))
    reversed_ = []
    for row in tables["referral_rewards"].rows(
        {"referred_contact_id": ctx.contact.id, "earned_at": ("between", (earliest, utc_text(at)))},
        columns=["id"],
        order_by=["id"],
    ):
        current = ledger.get_reward(tables, row["id"])
        if current is None or current["state"] not in params.states:
            continue
        if params.kind is not None and current["kind"] != params.kind:
            continue
        ledger.transition(
            tables,
            row["id"],
            "reverse",
            at=utc_text(ctx.now),
            actor=f"rule {ctx.ruleset}/{ctx.rule}",
            reason=params.reason,
        )
        reversed_.append(row["id"])
        ctx.emit(
            "referral.reversed",
            {"reward_id": row["id"], "referred_id": ctx.contact.id, "reason": params.reason},
            contact_id=current["beneficiary_contact_id"],
        )
    if not reversed_:
        days = params.within_days
        return {"skipped": f"no reward of {ctx.contact.id} to reverse within {days} days"}
    return {"reversed": reversed_}
