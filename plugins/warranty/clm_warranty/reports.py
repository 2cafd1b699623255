"""What the CLI and the demo show: a contact's products, what will fire soon, and offers.

Plain functions over a ``sqlite_utils.Database`` returning JSON-able data, so the command line
(people and ``--json``), the demo and tests all read the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlite_utils import Database

from clm_engine.money import format_minor

from .catalogue import lookup
from .dates import utc_text
from .facts import agreement_active, end_of_life, warranty_end
from .products import KINDS


def products(
    db: Database,
    contact_id: str,
    now: datetime,
    documents: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """A contact's registrations with their current dates (the catalogue fills what the
    registration left out) and the offers made for each."""
    rows = list(
        db.query(
            "SELECT * FROM warranty_products WHERE contact_id = ? ORDER BY purchased_at, "
            "product_id",
            [contact_id],
        )
    )
    offers: dict[str, list[dict[str, Any]]] = {}
    for offer in db.query(
        "SELECT offer_id, product_id, kind, sku, price_minor, currency, offered_at, expires_at, "
        "sent, status, accepted_at FROM warranty_offers WHERE contact_id = ? ORDER BY offered_at",
        [contact_id],
    ):
        offers.setdefault(offer["product_id"], []).append(_with_expiry(offer, now))
    shown = []
    for row in rows:
        found = lookup(documents, row["sku"])
        item = found[1] if found else None
        ends, eol = warranty_end(row, item), end_of_life(row, item)
        shown.append(
            {
                "product_id": row["product_id"],
                "sku": row["sku"],
                "name": row["name"] or (item.name if item else None),
                "serial": row["serial"],
                "status": row["status"],
                "purchased_at": row["purchased_at"],
                "warranty_ends_at": utc_text(ends) if ends else None,
                "extended": bool(row["extension_months"] or row["extended_to"]),
                "service_agreement": agreement_active(row, now),
                "service_agreement_ends_at": row["service_agreement_ends_at"],
                "end_of_life_at": utc_text(eol) if eol else None,
                "price_minor": row["price_minor"],
                "currency": row["currency"] or (found[0].currency if found else None),
                "returned_at": row["returned_at"],
                "offers": offers.get(row["product_id"], []),
            }
        )
    return shown


def upcoming(db: Database, now: datetime, days: float) -> list[dict[str, Any]]:
    """Pending relative-time fires on products due within ``days`` of ``now`` (overdue ones,
    which the next sweep fires, included), soonest first.

    Read from the core's ``anchors`` table, joined to the plugin's products so that only
    anchors on products show (a rule's anchors on other entities or on the contact do not).
    """
    until = utc_text(now + timedelta(days=days))
    return [
        dict(row)
        for row in db.query(
            """
            SELECT a.fire_at, a.ruleset, a.rule, a.contact_id, a.entity AS product_id,
                   p.sku, p.name, a.anchor_at
            FROM anchors a
            JOIN warranty_products p ON p.product_id = a.entity AND p.contact_id = a.contact_id
            WHERE a.status = 'pending' AND a.fire_at <= ?
            ORDER BY a.fire_at, a.contact_id, a.entity, a.ruleset, a.rule
            """,
            [until],
        )
    ]


def offers(db: Database, now: datetime, since: datetime | None = None) -> dict[str, Any]:
    """Offers made and accepted, by kind: the conversion rate, and what accepted offers bring
    in (per currency, in minor units). Every kind is listed, with zeros when none was made."""
    by_kind = {kind: _empty() for kind in KINDS}
    now_text = utc_text(now)
    query = (
        "SELECT kind, status, expires_at < ? AS lapsed, currency, COUNT(*) AS n, "
        "SUM(sent) AS sent, SUM(price_minor) AS amount FROM warranty_offers"
    )
    args: list[Any] = [now_text]
    if since is not None:
        query += " WHERE offered_at >= ?"
        args.append(utc_text(since))
    query += " GROUP BY kind, status, lapsed, currency"
    for row in db.query(query, args):
        entry = by_kind.setdefault(row["kind"], _empty())
        entry["made"] += row["n"]
        entry["reminders"] += row["sent"]
        if row["status"] == "open":
            entry["expired" if row["lapsed"] else "open"] += row["n"]
        else:
            entry[row["status"]] = entry.get(row["status"], 0) + row["n"]
        if row["status"] == "accepted":
            money = entry["accepted_minor"]
            money[row["currency"]] = money.get(row["currency"], 0) + row["amount"]
    for entry in by_kind.values():
        if entry["made"]:
            entry["conversion"] = round(entry["accepted"] / entry["made"], 4)
    made = sum(e["made"] for e in by_kind.values())
    accepted = sum(e["accepted"] for e in by_kind.values())
    return {
        "by_kind": by_kind,
        "made": made,
        "accepted": accepted,
        "conversion": round(accepted / made, 4) if made else None,
    }


def money(amount_minor: int | None, currency: str | None) -> str:
    """``12900, "USD"`` -> ``"129.00 USD"``; empty for no amount."""
    return "" if amount_minor is None else format_minor(amount_minor, currency)


def format_offers(report: Mapping[str, Any]) -> str:
    """The offers report as a few aligned lines for people (the demo prints it)."""
    header = ("kind", "made", "accepted", "conversion", "open", "expired", "withdrawn", "revenue")
    rows = [header]
    for kind, entry in report["by_kind"].items():
        revenue = ", ".join(money(n, c) for c, n in sorted(entry["accepted_minor"].items()))
        rows.append(
            (
                kind.replace("_", " "),
                f"{entry['made']:,}",
                f"{entry['accepted']:,}",
                "-" if entry["conversion"] is None else f"{entry['conversion']:.1%}",
                f"{entry['open']:,}",
                f"{entry['expired']:,}",
                f"{entry['withdrawn']:,}",
                revenue or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    total = report["conversion"]
    lines.append(
        f"{report['made']:,} offers made, {report['accepted']:,} accepted"
        + ("" if total is None else f" ({total:.1%})")
    )
    return "\n".join(lines)


def _empty() -> dict[str, Any]:
    return {
        "made": 0,
        "accepted": 0,
        "open": 0,
        "expired": 0,
        "withdrawn": 0,
        "reminders": 0,
        "conversion": None,
        "accepted_minor": {},
    }


def _with_expiry(offer: dict[str, Any], now: datetime) -> dict[str, Any]:
    if offer["status"] == "open" and offer["expires_at"] < utc_text(now):
        return {**offer, "status": "expired"}
    return offer
