"""A plugin with its own tables, documents and an external action: what the plugin issues
(email, referral, warranty) build on, exercised here without them.

* ``invite.accepted`` events: an event handler records who invited whom (``credit_invites``);
  ``voucher.issued`` events: a voucher with an expiry date (``credit_vouchers``).
* ``credits.granted_total`` and ``credits.invited`` facts read those tables through
  ``ctx.db``; ``voucher.expires_at`` maps voucher ids to dates (an anchor per voucher).
* ``credits.grant`` (internal) writes a ledger row through ``ctx.db``, emits an event for the
  inviter and enqueues a reminder; ``credits.notify`` (external) "sends" to ``OUTSIDE``.
* ``tier`` documents name the amounts a grant may use.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlite_utils.migrations import Migrations

from clm_engine import hookimpl
from clm_engine.types import MISSING

migrations = Migrations("credits_plugin")

#: What the "outside world" received from credits.notify, and how it should behave.
OUTSIDE: list[dict[str, Any]] = []
BEHAVIOUR: dict[str, Any] = {"fail": None, "db_path": None, "lock_free": None}
CALLS: dict[str, int] = {"handler": 0, "grant": 0}
POLICY_SAW: list[dict[str, Any]] = []


@migrations()
def m001_tables(db):
    db.execute("CREATE TABLE credit_invites (invitee TEXT PRIMARY KEY, inviter TEXT, at TEXT)")
    db.execute(
        "CREATE TABLE credit_ledger (id INTEGER PRIMARY KEY, contact_id TEXT, amount INTEGER, "
        "key TEXT UNIQUE)"
    )
    db.execute(
        "CREATE TABLE credit_vouchers (id TEXT PRIMARY KEY, contact_id TEXT, expires_at TEXT)"
    )


@hookimpl
def register_migrations(register):
    register(migrations)


def on_invite(db, contact, event):
    CALLS["handler"] += 1
    inviter = event.properties.get("inviter")
    db.execute(
        "INSERT INTO credit_invites (invitee, inviter, at) VALUES (?, ?, ?) "
        "ON CONFLICT (invitee) DO NOTHING",
        [contact.id, inviter, event.occurred_at.isoformat()],
    )
    if not isinstance(inviter, str):  # after the write: its rollback is what a test checks
        raise ValueError(f"invite.accepted needs a string 'inviter' (got {inviter!r})")


def on_voucher(db, contact, event):
    db.execute(
        "INSERT INTO credit_vouchers (id, contact_id, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
        [event.properties["voucher"], contact.id, event.properties["expires_at"]],
    )


@hookimpl
def register_event_handlers(register):
    register("invite.accepted", on_invite, name="credits.invite")
    register("voucher.issued", on_voucher, name="credits.voucher")


def granted_total(ctx):
    if ctx.db is None:
        return MISSING
    row = ctx.db.execute(
        "SELECT coalesce(sum(amount), 0) FROM credit_ledger WHERE contact_id = ?", [ctx.contact.id]
    ).fetchone()
    return row[0]


def invited(ctx):
    if ctx.db is None:
        return MISSING
    return ctx.db.execute(
        "SELECT count(*) FROM credit_invites WHERE inviter = ?", [ctx.contact.id]
    ).fetchone()[0]


def invited_by(ctx):
    if ctx.db is None:
        return MISSING
    row = ctx.db.execute(
        "SELECT inviter FROM credit_invites WHERE invitee = ?", [ctx.contact.id]
    ).fetchone()
    return row[0] if row else MISSING


def voucher_expiry(ctx):
    if ctx.db is None:
        return MISSING
    rows = ctx.db.execute(
        "SELECT id, expires_at FROM credit_vouchers WHERE contact_id = ?", [ctx.contact.id]
    )
    return dict(rows.fetchall())


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
    ctx.db.execute(
        "INSERT INTO credit_ledger (contact_id, amount, key) VALUES (?, ?, ?)",
        [ctx.contact.id, amount, ctx.key],
    )
    if params.fail_first and ctx.attempt == 1:
        raise RuntimeError("the first attempt fails after writing")
    inviter = ctx.db.execute(
        "SELECT inviter FROM credit_invites WHERE invitee = ?", [ctx.contact.id]
    ).fetchone()
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
    OUTSIDE.append({"key": ctx.key, "message": params.message, "entity": ctx.entity, "db": ctx.db})
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
def dispatch_policy(action, entity, key, db, ruleset, rule):
    POLICY_SAW.append(
        {"action": action, "entity": entity, "key": key, "db": db is not None, "rule": rule}
    )
