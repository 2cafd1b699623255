"""A plugin with its own tables, documents and an external action: what the plugin issues
(email, referral, warranty) build on, exercised here without them.

* ``invite.accepted`` events: an event handler records who invited whom (``credit_invites``);
  ``voucher.issued`` events: a voucher with an expiry date (``credit_vouchers``).
* ``credits.granted_total`` and ``credits.invited`` facts read those tables through
  ``ctx.tables``; ``voucher.expires_at`` maps voucher ids to dates (an anchor per voucher).
* ``credits.grant`` (internal) writes a ledger row through ``ctx.tables``, emits an event for the
  inviter and enqueues a reminder; ``credits.notify`` (external) "sends" to ``OUTSIDE``.
* ``tier`` documents name the amounts a grant may use.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from clm_engine import Column, Table, hookimpl
from clm_engine.types import MISSING

#: What the "outside world" received from credits.notify, and how it should behave.
OUTSIDE: list[dict[str, Any]] = []
BEHAVIOUR: dict[str, Any] = {"fail": None, "db_path": None, "lock_free": None}
CALLS: dict[str, int] = {"handler": 0, "grant": 0}
POLICY_SAW: list[dict[str, Any]] = []


TABLES = (
    Table(
        "credit_invites",
        columns=(Column("invitee", "text"), Column("inviter", "text"), Column("at", "text")),
        primary_key=("invitee",),
    ),
    Table(
        "credit_ledger",
        columns=(
            Column("id", "integer", auto_increment=True),
            Column("contact_id", "text"),
            Column("amount", "integer"),
            Column("key", "text"),
        ),
        primary_key=("id",),
        unique=(("key",),),
    ),
    Table(
        "credit_vouchers",
        columns=(Column("id", "text"), Column("contact_id", "text"), Column("expires_at", "text")),
        primary_key=("id",),
    ),
)


@hookimpl
def register_tables(register):
    for table in TABLES:
        register(table)


def on_invite(tables, contact, event):
    CALLS["handler"] += 1
    inviter = event.properties.get("inviter")
    tables["credit_invites"].insert(
        {"invitee": contact.id, "inviter": str(inviter), "at": event.occurred_at.isoformat()},
        on_conflict="ignore",
    )
    if not isinstance(inviter, str):  # after the write: its rollback is what a test checks
        raise ValueError(f"invite.accepted needs a string 'inviter' (got {inviter!r})")


def on_voucher(tables, contact, event):
    tables["credit_vouchers"].upsert(
        {
            "id": event.properties["voucher"],
            "contact_id": contact.id,
            "expires_at": event.properties["expires_at"],
        }
    )


@hookimpl
def register_event_handlers(register):
    register("invite.accepted", on_invite, name="credits.invite")
    register("voucher.issued", on_voucher, name="credits.voucher")


def granted_total(ctx):
    if ctx.tables is None:
        return MISSING
    [total] = ctx.tables["credit_ledger"].aggregate({"contact_id": ctx.contact.id}, sums=["amount"])
    return total["amount"]


def invited(ctx):
    if ctx.tables is None:
        return MISSING
    return ctx.tables["credit_invites"].count({"inviter": ctx.contact.id})


def invited_by(ctx):
    if ctx.tables is None:
        return MISSING
    row = ctx.tables["credit_invites"].one({"invitee": ctx.contact.id}, columns=["inviter"])
    return row["inviter"] if row else MISSING


def voucher_expiry(ctx):
    if ctx.tables is None:
        return MISSING
    rows = ctx.tables["credit_vouchers"].rows({"contact_id": ctx.contact.id})
    return {row["id"]: row["expires_at"] for row in rows}


@hookimpl
def register_facts(register):
    register("credits.granted_total", granted_total)
    register("credits.invited", invited)
    register("credits.invited_by", invited_by)
    register("voucher.expires_at", voucher_expiry)


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: str
    amount: int


def check_tier(document: Tier, context) -> list[tuple[str, str]]:
    return [] if document.amount > 0 else [("/amount", "a tier's amount must be positive")]


@hookimpl
def register_documents(register):
    register("tier", Tier, check=check_tier, description="An amount a grant can give.")


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: str
    fail_first: bool = False

    @classmethod
    def check_references(cls, params: Grant, documents) -> list[str]:
        tiers = documents.get("tier", {})
        if params.tier in tiers:
            return []
        return [f"no tier {params.tier!r}; known: {', '.join(sorted(tiers)) or 'none'}"]


def grant(ctx, params: Grant):
    CALLS["grant"] += 1
    amount = ctx.documents["tier"][params.tier].amount
    ctx.tables["credit_ledger"].insert(
        {"contact_id": ctx.contact.id, "amount": amount, "key": ctx.key}
    )
    if params.fail_first and ctx.attempt == 1:
        raise RuntimeError("the first attempt fails after writing")
    found = ctx.tables["credit_invites"].one({"invitee": ctx.contact.id}, columns=["inviter"])
    inviter = [found["inviter"]] if found else None
    if inviter:
        ctx.emit("credits.thanked", {"for": ctx.contact.id}, contact_id=inviter[0])
    ctx.enqueue(
        "credits.notify",
        {"message": f"you got {amount}"},
        due_at=ctx.now + timedelta(days=2),
        occurrence="reminder",
    )
    inviter_contact = ctx.contact_of(inviter[0]) if inviter else None
    return {
        "granted": amount,
        "due_at": ctx.due_at.isoformat(),
        "inviter_signed_up": inviter_contact.created_at.isoformat() if inviter_contact else None,
    }


class Notify(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str


def notify(ctx, params: Notify):
    if BEHAVIOUR["db_path"] is not None:  # is the write lock free while we "send"?
        other = sqlite3.connect(BEHAVIOUR["db_path"], timeout=0.2)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            BEHAVIOUR["lock_free"] = True
        except sqlite3.OperationalError:
            BEHAVIOUR["lock_free"] = False
        finally:
            other.close()
    fail = BEHAVIOUR["fail"]
    if fail == "temporary":
        raise ConnectionError("451 try again later")
    OUTSIDE.append(
        {"key": ctx.key, "message": params.message, "entity": ctx.entity, "tables": ctx.tables}
    )
    if fail == "permanent":
        ctx.emit("credits.undeliverable", {"reason": "550 no such user"})
        return {"failed": "550 no such user"}
    ctx.emit("credits.notified", {"message": params.message})
    return {"sent": True}


@hookimpl
def register_actions(register):
    register("credits.grant", grant, Grant)
    register("credits.notify", notify, Notify, external=True)


@hookimpl
def dispatch_policy(action, entity, key, tables, ruleset, rule):
    POLICY_SAW.append(
        {"action": action, "entity": entity, "key": key, "tables": tables is not None, "rule": rule}
    )
