"""The points ledger: append-only entries, balances summed from them, FIFO lots derived.

Every writing function works on the declared tables it is given and never commits: the caller
owns the transaction (an action's, in the ingest or dispatch transaction that marks it done),
so an entry lands together with what caused it, or not at all.

Three promises, each kept by construction rather than by care:

- **exactly once**: each entry has a key derived from its cause (the action's outbox key, or
  the lot it expires) and the table a unique constraint on it; a second write of the same
  key writes nothing (``post`` returns ``None``).
- **never negative**: a spend (redeem, negative adjustment) is checked against the balance
  in the same transaction, after the lots due to expire by then have expired, and refused
  (:class:`Refused`) beyond it: never clipped. Expiry takes only what is left of a lot.
- **a prefix is a moment**: entries are dated by their cause's time but never before the
  contact's previous entry (``at`` only grows with ``seq``), so "the ledger as of T" is a
  prefix of it, and a fact asking about an earlier moment sees a balance that was real then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clm_engine import utc_text

if TYPE_CHECKING:
    from clm_engine import Tables

KINDS = ("earn", "redeem", "expire", "adjust")
#: The largest number of points one entry may move (JSON numbers stay exact below it).
MAX_POINTS = 2**53 - 1


class Refused(ValueError):
    """A spend the balance does not cover (the message says by how much)."""


@dataclass
class Lot:
    """Points earned together, spent oldest first, expiring together."""

    key: str
    at: str
    expires_at: str | None
    points: int
    remaining: int


@dataclass
class Book:
    """A contact's ledger for one programme, replayed from its entries."""

    balance: int = 0
    earned: int = 0  # points earned (earn entries and positive adjustments)
    earns: int = 0  # earn entries
    redeemed: int = 0
    expired: int = 0
    adjusted: int = 0  # the sum of adjustments, either sign
    last_at: str | None = None
    lots: dict[str, Lot] = field(default_factory=dict)
    #: The balance after each entry, in seq order (for the ledger's listing and the tests).
    running: list[int] = field(default_factory=list)

    def due(self, as_of: str) -> list[Lot]:
        """Lots with points left whose expiry has come by ``as_of``, soonest first."""
        found = [
            lot
            for lot in self.lots.values()
            if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= as_of
        ]
        return sorted(found, key=lambda lot: (lot.expires_at or "", lot.key))

    def available(self, as_of: str | None = None) -> int:
        """The balance, less what has expired by ``as_of`` but is not yet written as expired
        (a sweep that has not run yet must not make points spendable or visible)."""
        if as_of is None:
            return self.balance
        return self.balance - sum(lot.remaining for lot in self.due(as_of))

    def expiring(self, as_of: str, until: str) -> int:
        """Points that expire after ``as_of`` and by ``until``, unless spent first."""
        return sum(
            lot.remaining
            for lot in self.lots.values()
            if lot.remaining > 0 and lot.expires_at is not None and as_of < lot.expires_at <= until
        )


def replay(entries: list[dict[str, Any]]) -> Book:
    """The book the entries (in ``seq`` order) make: balance, totals and what is left of each
    lot. Spends take from the oldest lots first (FIFO); an expiry takes its own lot."""
    book = Book()
    for entry in entries:
        points, kind = entry["points"], entry["kind"]
        book.balance += points
        book.running.append(book.balance)
        book.last_at = entry["at"]
        if kind == "earn":
            book.earns += 1
        if kind == "adjust":
            book.adjusted += points
        if points > 0:
            book.earned += points
            book.lots[entry["key"]] = Lot(
                entry["key"], entry["at"], entry.get("expires_at"), points, points
            )
        elif kind == "expire":
            book.expired -= points
            lot = book.lots.get(entry.get("lot_key") or "")
            if lot is not None:
                lot.remaining += points
        elif points < 0:
            if kind == "redeem":
                book.redeemed -= points
            _take_fifo(book, -points)
    return book


def _take_fifo(book: Book, points: int) -> None:
    for lot in book.lots.values():  # insertion order: seq order, oldest first
        if points <= 0:
            return
        taken = min(lot.remaining, points)
        lot.remaining -= taken
        points -= taken


def entries(
    tables: Tables,
    contact_id: str,
    programme: str,
    *,
    as_of: str | None = None,
    for_update: bool = False,
) -> list[dict[str, Any]]:
    """A contact's entries in one programme, oldest first (those dated by ``as_of`` only)."""
    where: dict[str, Any] = {"contact_id": contact_id, "programme": programme}
    if as_of is not None:
        where["at"] = ("<=", as_of)
    return tables["loyalty_entries"].rows(where, order_by=["seq"], for_update=for_update)


def book_of(tables: Tables, contact_id: str, programme: str, *, as_of: str | None = None) -> Book:
    return replay(entries(tables, contact_id, programme, as_of=as_of))


def _later(at: str, last: str | None) -> str:
    return at if last is None or at >= last else last


@dataclass
class Writer:
    """Writes one contact's entries in one programme, in the caller's transaction, keeping
    the book in step so that each check sees the entries written before it."""

    tables: Tables
    contact_id: str
    programme: str
    source: str
    book: Book = field(init=False)
    rows: list[dict[str, Any]] = field(init=False)
    written: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rows = entries(self.tables, self.contact_id, self.programme, for_update=True)
        self.book = replay(self.rows)

    def post(
        self,
        *,
        key: str,
        kind: str,
        points: int,
        at: datetime | str,
        expires_at: datetime | str | None = None,
        lot_key: str | None = None,
        qualifying: bool = False,
        event_id: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any] | None:
        """Write one entry; ``None`` (nothing written) when its key exists already."""
        if kind not in KINDS:
            raise ValueError(f"an entry's kind is one of {', '.join(KINDS)} (got {kind!r})")
        if not isinstance(points, int) or isinstance(points, bool) or points == 0:
            raise ValueError(f"an entry moves a whole, non-zero number of points (got {points!r})")
        if abs(points) > MAX_POINTS:
            raise ValueError(f"an entry moves at most {MAX_POINTS:,} points (got {points:,})")
        if self.book.balance + points < 0:
            raise Refused(f"{-points:,} points asked, the balance is {self.book.balance:,}")
        when = _later(at if isinstance(at, str) else utc_text(at), self.book.last_at)
        row = {
            "key": key,
            "contact_id": self.contact_id,
            "programme": self.programme,
            "kind": kind,
            "points": points,
            "at": when,
            "expires_at": expires_at
            if expires_at is None or isinstance(expires_at, str)
            else utc_text(expires_at),
            "lot_key": lot_key,
            "qualifying": qualifying,
            "event_id": event_id,
            "source": self.source,
            "reason": reason,
        }
        seq = self.tables["loyalty_entries"].insert(row, on_conflict="ignore")
        if not seq:
            return None
        stored = self.tables["loyalty_entries"].one({"seq": seq})
        assert stored is not None  # just inserted, in this transaction
        self.rows.append(stored)
        self.book = replay(self.rows)
        self.written.append(stored)
        return stored

    def exists(self, key: str) -> bool:
        return self.tables["loyalty_entries"].count({"key": key}) > 0

    def expire_due(self, as_of: datetime | str) -> list[dict[str, Any]]:
        """Write the expiry of every lot due by ``as_of`` with points left (what it has left:
        spends took the oldest lots first). Done before any spend, so expired points are never
        spent, whether or not the lot's own expiry has been dispatched yet."""
        until = as_of if isinstance(as_of, str) else utc_text(as_of)
        done = []
        for lot in self.book.due(until):
            row = self.post(
                key=f"{lot.key}/expire",
                kind="expire",
                points=-lot.remaining,
                at=lot.expires_at or until,
                lot_key=lot.key,
                reason=f"{lot.points:,} points earned {lot.at[:10]}, expired",
            )
            if row is not None:
                done.append(row)
        return done

    def spend(
        self,
        *,
        key: str,
        kind: str,
        points: int,
        at: datetime | str,
        event_id: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any] | None:
        """Take ``points`` (> 0) from the balance as of ``at``, after expiring what is due by
        then; :class:`Refused` beyond the balance (nothing written)."""
        if points <= 0:
            raise ValueError(f"a spend takes a positive number of points (got {points})")
        self.expire_due(at)
        return self.post(
            key=key, kind=kind, points=-points, at=at, event_id=event_id, reason=reason
        )


def qualifying_points(book_entries: list[dict[str, Any]], since: str, until: str) -> int:
    """Points of qualifying entries dated after ``since`` and by ``until``."""
    return sum(
        e["points"]
        for e in book_entries
        if e["qualifying"] and e["points"] > 0 and since < e["at"] <= until
    )


def negative_balances(tables: Tables) -> list[dict[str, Any]]:
    """(contact, programme) pairs whose entries sum below zero: empty when the ledger is sound."""
    return [
        row
        for row in tables["loyalty_entries"].aggregate(
            group_by=["contact_id", "programme"], sums=["points"]
        )
        if row["points"] < 0
    ]
