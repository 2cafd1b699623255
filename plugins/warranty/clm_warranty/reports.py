"""What the CLI and the demo show: a contact's products, what will fire soon, and offers.

Plain functions over the plugin's tables (``store.tables``, read only) returning JSON-able data,
so the command line (people and ``--json``), the demo and tests all read the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from clm_engine import Engine, Tables
from clm_engine.money import format_minor

from .catalogue import lookup
from .dates import utc_text
from .facts import agreement_active, end_of_life, warranty_end
from .products import KINDS


def products(
    tables: Tables,
    contact_id: str,
    now: datetime,
    documents: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """A contact's registrations with their current dates (the catalogue fills what the
    registration left out) and the offers made for each."""
    rows = tables["warranty_products"].rows(
        {"contact_id": contact_id}, order_by=["purchased_at", "product_id"]
    )
    offers: dict[str, list[dict[str, Any]]] = {}
    for offer in tables["warranty_offers"].rows(
        {"contact_id": contact_id},
        columns=[
            "offer_id",
            "product_id",
            "kind",
            "sku",
            "price_minor",
            "currency",
            "offered_at",
            "expires_at",
            "sent",
            "status",
            "accepted_at",
        ],
        order_by=["offered_at"],
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


#: More pending fires than any report shows: ``upcoming`` reads them all.
_ALL = 1_000_000_000


def upcoming(engine: Engine, now: datetime, days: float) -> list[dict[str, Any]]:
    """Pending relative-time fires on products due within ``days`` of ``now`` (overdue ones,
    which the next sweep fires, included), soonest first.

    The engine's pending anchors, matched to the plugin's products so that only anchors on
    products show (a rule's anchors on other entities or on the contact do not).
    """
    until = utc_text(now + timedelta(days=days))
    due = engine.store.read().due_anchors(until, _ALL)
    products = {
        (row["product_id"], row["contact_id"]): row
        for row in engine.store.tables["warranty_products"].rows(
            {"product_id": ("in", sorted({anchor[3] for anchor in due}))},
            columns=["product_id", "contact_id", "sku", "name"],
        )
    }
    found = []
    for ruleset, rule, contact_id, entity, anchor_at, fire_at in due:
        product = products.get((entity, contact_id))
        if product is not None:
            found.append(
                {
                    "fire_at": fire_at,
                    "ruleset": ruleset,
                    "rule": rule,
                    "contact_id": contact_id,
                    "product_id": entity,
                    "sku": product["sku"],
                    "name": product["name"],
                    "anchor_at": anchor_at,
                }
            )
    found.sort(
        key=lambda r: (r["fire_at"], r["contact_id"], r["product_id"], r["ruleset"], r["rule"])
    )
    return found


def offers(tables: Tables, now: datetime, since: datetime | None = None) -> dict[str, Any]:
    """Offers made and accepted, by kind: the conversion rate, and what accepted offers bring
    in (per currency, in minor units). Every kind is listed, with zeros when none was made."""
    by_kind = {kind: _empty() for kind in KINDS}
    now_text = utc_text(now)
    where = {} if since is None else {"offered_at": (">=", utc_text(since))}
    for row in tables["warranty_offers"].rows(
        where, columns=["kind", "status", "expires_at", "currency", "sent", "price_minor"]
    ):
        entry = by_kind.setdefault(row["kind"], _empty())
        entry["made"] += 1
        entry["reminders"] += row["sent"]
        if row["status"] == "open":
            entry["expired" if row["expires_at"] < now_text else "open"] += 1
        else:
            entry[row["status"]] = entry.get(row["status"], 0) + 1
        if row["status"] == "accepted":
            money = entry["accepted_minor"]
            money[row["currency"]] = money.get(row["currency"], 0) + row["price_minor"]
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
