"""Tiers: upgrades when qualifying points cross a threshold, downgrades by the programme's
rules, and milestones; each change written once, keyed by the decision that made it.

Why reviews are follow-up actions rather than a sweep over every member: qualifying points
only fall when an earn leaves the window, and a hold only ends at a known time, so each earn
and each tier change puts one ``loyalty.review_tier`` in the outbox for exactly that moment
(its key derives from the earn's, so it is there once). Nothing scans members who have not
changed, and a restart loses nothing: the reviews are rows with a due time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from clm_engine import utc_text

from .ledger import Book, qualifying_points
from .programme import Programme

if TYPE_CHECKING:
    from clm_engine import Tables


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _minus(at: str, delta: timedelta) -> str:
    try:
        return utc_text(_at(at) - delta)
    except (OverflowError, ValueError):
        return "0001-01-01T00:00:00.000000Z"


def _span(delta: timedelta) -> str:
    if delta.days and not delta.seconds:
        return f"{delta.days} days" if delta.days != 1 else "day"
    hours = delta.total_seconds() / 3600
    return f"{hours:g} hours"


def _plus(at: str, delta: timedelta) -> str:
    try:
        return utc_text(_at(at) + delta)
    except (OverflowError, ValueError):
        return "9999-12-31T23:59:59.999999Z"


def current(
    tables: Tables, contact_id: str, programme: str, *, as_of: str | None = None
) -> dict[str, Any] | None:
    """The contact's latest tier change (dated by ``as_of``), or ``None``."""
    where: dict[str, Any] = {"contact_id": contact_id, "programme": programme}
    if as_of is not None:
        where["at"] = ("<=", as_of)
    return tables["loyalty_tiers"].one(where, order_by=["-seq"])


def tier_of(
    tables: Tables, prog: Programme, contact_id: str, as_of: str | None = None
) -> str | None:
    row = current(tables, contact_id, prog.loyalty, as_of=as_of)
    return row["tier"] if row is not None else prog.base_tier


def qualifying(prog: Programme, rows: list[dict[str, Any]], at: str) -> int:
    return qualifying_points(rows, _minus(at, prog.window), at)


@dataclass
class Change:
    row: dict[str, Any]

    @property
    def event(self) -> dict[str, Any]:
        """The ``loyalty.tier_changed`` event's properties: what rules trigger on."""
        return {
            "programme": self.row["programme"],
            "from": self.row["previous"],
            "to": self.row["tier"],
            "direction": self.row["direction"],
            "qualifying_points": self.row["qualifying_points"],
        }


def judge(
    tables: Tables,
    prog: Programme,
    contact_id: str,
    rows: list[dict[str, Any]],
    *,
    at: str,
    key: str,
    downgrade: bool,
) -> tuple[Change | None, str]:
    """Move the contact's tier to what their qualifying points say, as of ``at``: up at once;
    down only when ``downgrade`` (a review), after the hold, by at most the programme's steps.
    Returns the change written (``None``: none) and a note saying why."""
    if not prog.tiers:
        return None, "the programme has no tiers"
    points = qualifying(prog, rows, at)
    target = prog.tier_for(points)
    latest = current(tables, contact_id, prog.loyalty)
    tier = latest["tier"] if latest is not None else prog.base_tier
    have, want = prog.rank(tier), prog.rank(target)
    if want == have:
        return None, f"stays {tier} ({points:,} qualifying points)"
    if want < have:
        if not downgrade:
            return None, f"stays {tier} until a review ({points:,} qualifying points)"
        held_until = _plus(latest["at"], prog.hold) if latest is not None else None
        if held_until is not None and at < held_until:
            return None, f"{tier} is held until {held_until[:10]}"
        steps = prog.downgrade.steps
        if steps is not None:
            want = max(want, have - steps)
    new = prog.tiers[want].name
    row = {
        "key": f"{key}/tier",
        "contact_id": contact_id,
        "programme": prog.loyalty,
        "tier": new,
        "previous": tier,
        "direction": "up" if want > have else "down",
        "at": max(at, latest["at"]) if latest is not None else at,
        "qualifying_points": points,
        "reason": f"{points:,} qualifying points in the last {_span(prog.window)}",
    }
    if not tables["loyalty_tiers"].insert(row, on_conflict="ignore"):
        return None, "this decision changed the tier already"
    return Change(row), f"{tier} -> {new} ({points:,} qualifying points)"


def reached_milestones(
    tables: Tables, prog: Programme, contact_id: str, book: Book, *, at: str, key: str
) -> list[str]:
    """Milestones the book reaches that the contact had not reached: recorded once, ever."""
    reached = []
    for milestone in prog.milestones:
        if milestone.earns is not None and book.earns < milestone.earns:
            continue
        if milestone.lifetime_points is not None and book.earned < milestone.lifetime_points:
            continue
        added = tables["loyalty_milestones"].insert(
            {
                "contact_id": contact_id,
                "programme": prog.loyalty,
                "milestone": milestone.name,
                "at": at,
                "key": key,
            },
            on_conflict="ignore",
        )
        if added:
            reached.append(milestone.name)
    return reached
