"""The reward ledger: double entry, immutable, states derived from entries.

Every function works on the declared tables it is given (``tables``) and never commits:
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
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clm_engine import Tables

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
    tables: Tables,
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
    """Write one balanced entry: ``lines`` are (account, contact id, amount, currency).
    Returns the entry's ``seq``. A second entry with the same ``key`` is a ``StoreError``."""
    totals: dict[str, int] = defaultdict(int)
    for _, _, amount, currency in lines:
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise LedgerError(f"ledger amounts are integers of minor units (got {amount!r})")
        totals[currency] += amount
    if any(totals.values()):
        raise LedgerError(f"an entry must balance; this one is off by {dict(totals)}")
    seq = tables["referral_entries"].insert(
        {
            "key": key,
            "reward_id": reward,
            "kind": kind,
            "state": state,
            "at": at,
            "actor": actor,
            "reason": reason,
        }
    )
    tables["referral_lines"].insert_many(
        {
            "entry_seq": seq,
            "account": acct,
            "contact_id": contact,
            "amount_minor": amount,
            "currency": currency,
        }
        for acct, contact, amount, currency in lines
    )
    return seq


def grant(tables: Tables, g: Grant, *, actor: str) -> bool:
    """Record a reward and credit it as pending; False (nothing written) if it exists already.

    The unique key (referred contact, kind, role) is what makes rewards exactly once: a
    replayed event, a retried action or a second worker finds the row and writes nothing.
    """
    added = tables["referral_rewards"].insert(
        {
            "id": g.id,
            "referred_contact_id": g.referred_contact_id,
            "referrer_contact_id": g.referrer_contact_id,
            "beneficiary_contact_id": g.beneficiary,
            "role": g.role,
            "kind": g.kind,
            "amount_minor": g.amount_minor,
            "currency": g.currency,
            "earned_at": g.earned_at,
            "approve_after": None if g.held_reasons else g.approve_after,
            "held_reasons": list(g.held_reasons),
            "action_key": g.action_key,
            "ruleset": g.ruleset,
            "rule": g.rule,
            "created_at": g.created_at,
        },
        on_conflict="ignore",
    )
    if not added:
        return False
    reason = "held for review: " + "; ".join(g.held_reasons) if g.held_reasons else None
    post(
        tables,
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


def states(
    tables: Tables, reward_ids: Iterable[str], *, as_of: str | None = None
) -> dict[str, str]:
    """The current state of each reward (that of its latest entry; as of ``as_of``, the
    entries dated by then only). A reward with no entry (by then) is left out."""
    ids = list(dict.fromkeys(reward_ids))
    found: dict[str, str] = {}
    where: dict[str, Any] = {"reward_id": ("in", ids)}
    if as_of is not None:
        where["at"] = ("<=", as_of)
    for row in tables["referral_entries"].rows(
        where, columns=["reward_id", "state"], order_by=["seq"]
    ):
        found[row["reward_id"]] = row["state"]  # the last one, in seq order, wins
    return found


def _with_states(tables: Tables, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    current = states(tables, [row["id"] for row in rows]) if rows else {}
    for row in rows:
        row["state"] = current.get(row["id"])
    return rows


def get_reward(tables: Tables, reward: str, *, for_update: bool = False) -> dict[str, Any] | None:
    """A reward with its current ``state`` (that of its latest entry) and ``held_reasons``."""
    row = tables["referral_rewards"].one({"id": reward}, for_update=for_update)
    if row is None:
        return None
    latest = tables["referral_entries"].one(
        {"reward_id": reward}, columns=["state"], order_by=["-seq"], for_update=for_update
    )
    row["state"] = latest["state"] if latest else None
    return row


def transition(
    tables: Tables,
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
    row = get_reward(tables, reward, for_update=True)
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
        tables,
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


def balances(tables: Tables, contact_id: str) -> dict[str, dict[str, int]]:
    """``{currency: {"pending": n, "available": n}}`` in minor units, summed from the lines."""
    found: dict[str, dict[str, int]] = {}
    for row in tables["referral_lines"].aggregate(
        {"contact_id": contact_id}, group_by=["currency", "account"], sums=["amount_minor"]
    ):
        part = row["account"].rsplit(":", 1)[-1]
        found.setdefault(row["currency"], {"pending": 0, "available": 0})[part] = -row[
            "amount_minor"
        ]
    return found


def entries(tables: Tables, contact_id: str) -> list[dict[str, Any]]:
    """Every entry touching a contact's rewards (as beneficiary), oldest first, with lines."""
    rewards_of = {
        row["id"]: row
        for row in tables["referral_rewards"].rows(
            {"beneficiary_contact_id": contact_id},
            columns=["id", "role", "kind", "referred_contact_id", "referrer_contact_id"],
        )
    }
    if not rewards_of:
        return []
    result = tables["referral_entries"].rows(
        {"reward_id": ("in", list(rewards_of))},
        columns=["seq", "reward_id", "kind", "state", "at", "actor", "reason"],
        order_by=["seq"],
    )
    lines: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in tables["referral_lines"].rows(
        {"entry_seq": ("in", [row["seq"] for row in result])},
        columns=["entry_seq", "account", "amount_minor", "currency"],
        order_by=["id"],
    ):
        seq = line.pop("entry_seq")
        lines[seq].append(line)
    for row in result:
        reward = rewards_of[row["reward_id"]]
        row["role"] = reward["role"]
        row["reward_kind"] = reward["kind"]
        row["referred_contact_id"] = reward["referred_contact_id"]
        row["referrer_contact_id"] = reward["referrer_contact_id"]
        row["lines"] = lines[row["seq"]]
    return result


def rewards(
    tables: Tables,
    *,
    state: str | None = None,
    held: bool | None = None,
    where: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rewards with their current state, oldest first; filtered by state and held-ness (and
    by ``where`` on the rewards' columns)."""
    rows = _with_states(
        tables, tables["referral_rewards"].rows(where or {}, order_by=["created_at", "id"])
    )
    return [
        row
        for row in rows
        if (state is None or row["state"] == state)
        and (held is None or bool(row["held_reasons"]) == held)
    ]


def check_balanced(tables: Tables) -> dict[str, int]:
    """Currencies whose lines do not sum to zero (empty when the books balance)."""
    return {
        row["currency"]: row["amount_minor"]
        for row in tables["referral_lines"].aggregate(group_by=["currency"], sums=["amount_minor"])
        if row["amount_minor"]
    }
