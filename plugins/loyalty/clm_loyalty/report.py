"""The loyalty report: what each programme issued, what was spent or expired, what it still
owes, where members stand (tiers) and which milestones they reached.

Shared by ``clm loyalty report`` and the demo, so both say the same thing.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from clm_engine import utc_text

from . import ledger
from .programme import Programme

if TYPE_CHECKING:
    from clm_engine import Tables


def report(
    tables: Tables, programmes: dict[str, Programme], *, now: datetime, top: int = 5
) -> dict[str, Any]:
    """Per programme (those with entries, and those loaded): members, points by kind of
    entry, outstanding points, points expiring within 30 days, tiers, milestones, the top
    balances, and the ledger's soundness (balances below zero: none, or a bug)."""
    totals: dict[str, dict[str, Any]] = {}
    names = set(programmes)
    for row in tables["loyalty_entries"].aggregate(group_by=["programme", "kind"], sums=["points"]):
        names.add(row["programme"])
        slot = totals.setdefault(row["programme"], {})
        slot[row["kind"]] = {"entries": row["count"], "points": row["points"]}
    balances: dict[str, list[tuple[str, int]]] = {}
    for row in tables["loyalty_entries"].aggregate(
        group_by=["programme", "contact_id"], sums=["points"]
    ):
        balances.setdefault(row["programme"], []).append((row["contact_id"], row["points"]))
    latest: dict[tuple[str, str], str] = {}
    for row in tables["loyalty_tiers"].rows(
        columns=["programme", "contact_id", "tier"], order_by=["seq"]
    ):
        latest[(row["programme"], row["contact_id"])] = row["tier"]
    milestones: dict[str, dict[str, int]] = {}
    for row in tables["loyalty_milestones"].aggregate(group_by=["programme", "milestone"]):
        milestones.setdefault(row["programme"], {})[row["milestone"]] = row["count"]
    today = utc_text(now)
    month = utc_text(now + timedelta(days=30))
    out = []
    for name in sorted(names):
        prog = programmes.get(name)
        kinds = totals.get(name, {})
        members = balances.get(name, [])
        tier_counts: Counter[str] = Counter()
        for contact_id, _ in members:
            tier = latest.get((name, contact_id)) or (prog.base_tier if prog else None)
            tier_counts[tier or "(none)"] += 1
        expiring = 0
        for contact_id, _ in members:
            book = ledger.book_of(tables, contact_id, name)
            expiring += book.expiring(today, month) + sum(lot.remaining for lot in book.due(today))
        order = [t.name for t in prog.tiers] if prog else sorted(tier_counts)
        out.append(
            {
                "programme": name,
                "loaded": prog is not None,
                "members": len(members),
                "issued": _points(kinds, "earn"),
                "adjusted": _points(kinds, "adjust"),
                "redeemed": -_points(kinds, "redeem"),
                "expired": -_points(kinds, "expire"),
                "outstanding": sum(points for _, points in members),
                "expiring_30_days": expiring,
                "entries": {kind: slot["entries"] for kind, slot in sorted(kinds.items())},
                "tiers": {
                    t: tier_counts[t] for t in [*order, *sorted(tier_counts)] if t in tier_counts
                },
                "milestones": dict(sorted(milestones.get(name, {}).items())),
                "top_balances": [
                    {"contact": contact_id, "points": points}
                    for contact_id, points in sorted(members, key=lambda m: (-m[1], m[0]))[:top]
                ],
            }
        )
    return {"programmes": out, "negative_balances": ledger.negative_balances(tables)}


def _points(kinds: dict[str, Any], kind: str) -> int:
    return int(kinds.get(kind, {}).get("points", 0))


def format_report(data: dict[str, Any]) -> str:
    """The report as text for people."""
    lines: list[str] = []
    if not data["programmes"]:
        return "no loyalty programme has any entries yet"
    for item in data["programmes"]:
        loaded = "" if item["loaded"] else " (its document is not loaded: give --rulesets)"
        lines += [
            f"programme {item['programme']}{loaded}: {item['members']:,} members",
            f"  points issued:      {item['issued']:>12,}",
            f"  adjusted:           {item['adjusted']:>12,}",
            f"  redeemed:           {item['redeemed']:>12,}",
            f"  expired:            {item['expired']:>12,}",
            f"  outstanding:        {item['outstanding']:>12,}"
            f"  ({item['expiring_30_days']:,} expiring within 30 days)",
        ]
        if item["tiers"]:
            tiers = ", ".join(f"{tier} {n:,}" for tier, n in item["tiers"].items())
            lines.append(f"  tiers: {tiers}")
        if item["milestones"]:
            reached = ", ".join(f"{m} {n:,}" for m, n in item["milestones"].items())
            lines.append(f"  milestones reached: {reached}")
        if item["top_balances"]:
            top = ", ".join(f"{t['contact']} {t['points']:,}" for t in item["top_balances"])
            lines.append(f"  top balances: {top}")
    if data["negative_balances"]:
        lines.append(f"BALANCES BELOW ZERO (a bug): {data['negative_balances']}")
    return "\n".join(lines)
