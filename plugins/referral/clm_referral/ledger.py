"""The reward ledger: double entry, immutable, states derived from entries.

Every function writes through the ``sqlite_utils.Database`` it is given and never commits:
the caller owns the transaction (the dispatch transaction of an action, an event handler's
ingest transaction, or a CLI command's write transaction), so a ledger change lands together
with whatever caused it, or not at all.

Accounts, and what a posting does (debit > 0, credit < 0 in ``referral_lines``):

=========  ====================================  =====================================
entry      debit                                 credit
=========  ====================================  =====================================
credit     ``referral_expense``                  ``contact:<id>:pending``
approve    ``contact:<id>:pending``              ``contact:<id>:available``
reject     ``contact:<id>:pending``              ``referral_expense``
reverse    ``contact:<id>:pending|available``    ``referral_expense``
redeem     ``contact:<id>:available``            ``payouts``
=========  ====================================  =====================================

A contact's balance on an account is what the house owes them there: minus the sum of its
lines. A clawback after redemption takes ``available`` below zero: a debt that later rewards
pay off first.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite_utils

EXPENSE = "referral_expense"
PAYOUTS = "payouts"
STATES = ("pending", "approved", "rejected", "reversed", "redeemed")

#: What each kind of entry needs the reward's state to be, and the state it leads to.
TRANSITIONS = {
    "approve": ({"pending"}, "approved"),
    "reject": ({"pending"}, "rejected"),
    "reverse": ({"pending", "approved", "redeemed"}, "reversed"),
    "redeem": ({"approved"}, "redeemed"),
}


class LedgerError(ValueError):
    """A ledger operation that the reward's state does not allow (with the reason)."""


def account(contact_id: str, part: str) -> str:
    return f"contact:{contact_id}:{part}"


def reward_id(referred_contact_id: str, kind: str, role: str) -> str:
    """The reward's id, derived from what makes it unique: the same grant has the same id."""
    digest = hashlib.sha256(f"{referred_contact_id}\x1f{kind}\x1f{role}".encode()).hexdigest()
    return f"rw-{digest[:12]}"


@dataclass
class Grant:
    """A reward to grant: the beneficiary earns ``amount_minor`` for referral of ``referred``."""

    referred_contact_id: str
    referrer_contact_id: str
    role: str  # 'referrer' or 'referred'
    kind: str
    amount_minor: int
    currency: str
    earned_at: str  # utc_text
    created_at: str  # utc_text
    approve_after: str | None = None  # None: held (held_reasons) or manual approval only
    held_reasons: list[str] = field(default_factory=list)
    action_key: str | None = None
    ruleset: str | None = None
    rule: str | None = None

    @property
    def beneficiary(self) -> str:
        return self.referrer_contact_id if self.role == "referrer" else self.referred_contact_id

    @property
    def id(self) -> str:
        return reward_id(self.referred_contact_id, self.kind, self.role)


def post(
    db: sqlite_utils.Database,
    *,
    key: str,
    reward: str,
    kind: str,
    state: str,
    at: str,
    actor: str,
    reason: str | None,
    lines: list[tuple[str, str | None, int, str]],
) -> int:
    """Write one balanced entry: ``lines`` are (account, contact id, amount, currency)."""
    totals: dict[str, int] = defaultdict(int)
    for _, _, amount, currency in lines:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise LedgerError(f"ledger amounts are integers of minor units (got {amount!r})")
        totals[currency] += amount
    if any(totals.values()):
        raise LedgerError(f"an entry must balance; this one is off by {dict(totals)}")
    cursor = db.execute(
        "INSERT INTO referral_entries (key, reward_id, kind, state, at, actor, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [key, reward, kind, state, at, actor, reason],
    )
    seq = cursor.lastrowid
    assert seq is not None  # an INSERT sets it
    db.conn.executemany(
        "INSERT INTO referral_lines (entry_seq, account, contact_id, amount_minor, currency) "
        "VALUES (?, ?, ?, ?, ?)",
        [(seq, acct, contact, amount, currency) for acct, contact, amount, currency in lines],
    )
    return seq


def grant(db: sqlite_utils.Database, g: Grant, *, actor: str) -> bool:
    """Record a reward and credit it as pending; False (nothing written) if it exists already.

    The unique key (referred contact, kind, role) is what makes rewards exactly once: a
    replayed event, a retried action or a second worker finds the row and writes nothing.
    """
    cursor = db.execute(
        """
        INSERT INTO referral_rewards (
            id, referred_contact_id, referrer_contact_id, beneficiary_contact_id, role, kind,
            amount_minor, currency, earned_at, approve_after, held_reasons, action_key,
            ruleset, rule, created_at
        ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (referred_contact_id, kind, role) DO NOTHING
        """,
        [
            g.id,
            g.referred_contact_id,
            g.referrer_contact_id,
            g.beneficiary,
            g.role,
            g.kind,
            g.amount_minor,
            g.currency,
            g.earned_at,
            None if g.held_reasons else g.approve_after,
            json.dumps(g.held_reasons),
            g.action_key,
            g.ruleset,
            g.rule,
            g.created_at,
        ],
    )
    if cursor.rowcount == 0:
        return False
    reason = "held for review: " + "; ".join(g.held_reasons) if g.held_reasons else None
    post(
        db,
        key=f"{g.id}/credit",
        reward=g.id,
        kind="credit",
        state="pending",
        at=g.created_at,
        actor=actor,
        reason=reason,
        lines=[
            (EXPENSE, None, g.amount_minor, g.currency),
            (account(g.beneficiary, "pending"), g.beneficiary, -g.amount_minor, g.currency),
        ],
    )
    return True


def get_reward(db: sqlite_utils.Database, reward: str) -> dict[str, Any] | None:
    """A reward with its current ``state`` (that of its latest entry) and ``held_reasons``."""
    rows = list(
        db.query(
            "SELECT r.*, (SELECT state FROM referral_entries e WHERE e.reward_id = r.id "
            "ORDER BY seq DESC LIMIT 1) AS state FROM referral_rewards r WHERE r.id = ?",
            [reward],
        )
    )
    if not rows:
        return None
    row = rows[0]
    row["held_reasons"] = json.loads(row["held_reasons"])
    return row


def transition(
    db: sqlite_utils.Database,
    reward: str,
    kind: str,
    *,
    at: str,
    actor: str,
    reason: str | None = None,
    review: bool = False,
) -> dict[str, Any]:
    """Move a reward to its next state with a new entry; returns the reward as it now is.

    Raises :class:`LedgerError` when the state does not allow it, and for an automatic
    approval of a reward held for review: only a reviewer (``review=True``) approves those.
    """
    row = get_reward(db, reward)
    if row is None:
        raise LedgerError(f"no reward {reward!r}")
    allowed, new_state = TRANSITIONS[kind]
    if row["state"] not in allowed:
        raise LedgerError(f"reward {reward} is {row['state']}: it cannot be {_past(kind)}")
    if kind == "approve" and row["held_reasons"] and not review:
        raise LedgerError(
            f"reward {reward} is held for review ({'; '.join(row['held_reasons'])}): "
            "only a reviewer approves it"
        )
    who, amount, currency = row["beneficiary_contact_id"], row["amount_minor"], row["currency"]
    source = "pending" if row["state"] == "pending" else "available"
    if kind == "approve":
        moves = [(account(who, "pending"), who, amount), (account(who, "available"), who, -amount)]
    elif kind in ("reject", "reverse"):
        moves = [(account(who, source), who, amount), (EXPENSE, None, -amount)]
    else:  # redeem
        moves = [(account(who, "available"), who, amount), (PAYOUTS, None, -amount)]
    post(
        db,
        key=f"{reward}/{kind}",
        reward=reward,
        kind=kind,
        state=new_state,
        at=at,
        actor=actor,
        reason=reason,
        lines=[(acct, contact, value, currency) for acct, contact, value in moves],
    )
    row["state"] = new_state
    return row


def _past(kind: str) -> str:
    return {"approve": "approved", "reject": "rejected", "reverse": "reversed"}.get(
        kind, "redeemed"
    )


def balances(db: sqlite_utils.Database, contact_id: str) -> dict[str, dict[str, int]]:
    """``{currency: {"pending": n, "available": n}}`` in minor units, summed from the lines."""
    found: dict[str, dict[str, int]] = {}
    for row in db.query(
        "SELECT account, currency, -SUM(amount_minor) AS balance FROM referral_lines "
        "WHERE contact_id = ? GROUP BY account, currency ORDER BY currency, account",
        [contact_id],
    ):
        part = row["account"].rsplit(":", 1)[-1]
        found.setdefault(row["currency"], {"pending": 0, "available": 0})[part] = row["balance"]
    return found


def entries(db: sqlite_utils.Database, contact_id: str) -> list[dict[str, Any]]:
    """Every entry touching a contact's rewards (as beneficiary), oldest first, with lines."""
    result = []
    for row in db.query(
        "SELECT e.seq, e.reward_id, e.kind, e.state, e.at, e.actor, e.reason, r.role, "
        "r.kind AS reward_kind, r.referred_contact_id, r.referrer_contact_id "
        "FROM referral_entries e JOIN referral_rewards r ON r.id = e.reward_id "
        "WHERE r.beneficiary_contact_id = ? ORDER BY e.seq",
        [contact_id],
    ):
        row["lines"] = list(
            db.query(
                "SELECT account, amount_minor, currency FROM referral_lines "
                "WHERE entry_seq = ? ORDER BY id",
                [row["seq"]],
            )
        )
        result.append(row)
    return result


def rewards(
    db: sqlite_utils.Database, *, state: str | None = None, held: bool | None = None
) -> list[dict[str, Any]]:
    """Rewards with their current state, oldest first; filtered by state and held-ness."""
    rows = []
    for row in db.query(
        "SELECT r.*, (SELECT state FROM referral_entries e WHERE e.reward_id = r.id "
        "ORDER BY seq DESC LIMIT 1) AS state FROM referral_rewards r "
        "ORDER BY r.created_at, r.id"
    ):
        row["held_reasons"] = json.loads(row["held_reasons"])
        if state is not None and row["state"] != state:
            continue
        if held is not None and bool(row["held_reasons"]) != held:
            continue
        rows.append(row)
    return rows


def check_balanced(db: sqlite_utils.Database) -> dict[str, int]:
    """Currencies whose lines do not sum to zero (empty when the books balance)."""
    return {
        row["currency"]: row["total"]
        for row in db.query(
            "SELECT currency, SUM(amount_minor) AS total FROM referral_lines GROUP BY currency"
        )
        if row["total"]
    }
