"""For ``make demo``: what customers do after their products are registered, and a summary.

The synthetic history (``clm sample-events``) registers products but never extends a warranty,
buys a service agreement or returns a product. ``extra_events`` derives those from its
``product.registered`` events, deterministically, timed so that most purchases come *after*
the offer the example rules would have made (``rulesets/warranty-offers.json``), which is what
makes conversion show:

- about 4% of products are returned within two weeks of registration (their reminders are
  cancelled before any fires);
- about 35% of products priced 150.00 or more buy a service agreement 33 to 58 days after
  purchase (the example rules offer one 30 days after purchase, valid 30 days);
- about 30% of the rest extend their warranty 8 to 25 days before it ends (after the 30-day
  reminder, before the 7-day one).

``summary`` prints offers made and accepted by kind from a store.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlite_utils import Database

from . import reports
from .dates import add_months, optional_moment, parse_moment
from .products import to_minor

#: Products priced at least this (minor units) are "high-value" in the example rules.
HIGH_VALUE_MINOR = 15000


def extra_events(
    events: list[dict[str, Any]], seed: int = 7, *, until: str | None = None
) -> list[dict[str, Any]]:
    """Warranty events derived from the sample's ``product.registered`` events, by time.

    Deterministic for a given ``events`` and ``seed``; ids are ``wx-<seed>-<n>``. With
    ``until`` (ISO 8601), events after it are left out: warranty ends lie one to three years
    after purchase, beyond a six-month history, and a live ingest on the wall clock should not
    receive events from the future.
    """
    rng = random.Random(seed)
    limit = parse_moment(until, "until") if until is not None else None
    seen: set[str] = set()
    made: list[tuple[datetime, str, str, dict[str, Any]]] = []
    registrations = sorted(
        (e for e in events if e.get("type") == "product.registered"),
        key=lambda e: (e["occurred_at"], e.get("id", "")),
    )
    for event in registrations:
        props = event.get("properties") or {}
        product_id = props.get("product_id")
        if not isinstance(product_id, str) or product_id in seen:
            continue
        seen.add(product_id)
        registered = parse_moment(event["occurred_at"])
        bought = optional_moment(props.get("purchased_at")) or registered
        months = props.get("warranty_months") or 0
        try:
            price = to_minor(props["price"]) if props.get("price") is not None else 0
        except ValueError:
            price = 0
        contact = event["contact_id"]
        draw_return, draw_agreement, draw_extension = rng.random(), rng.random(), rng.random()
        if draw_return < 0.04:
            at = registered + _days(rng, 2, 12)
            made.append((at, contact, "product.returned", {"product_id": product_id}))
            continue
        if price >= HIGH_VALUE_MINOR and draw_agreement < 0.35:
            at = max(bought + _days(rng, 33, 58), registered + _days(rng, 1, 3))
            made.append(
                (
                    at,
                    contact,
                    "service_agreement.purchased",
                    {"product_id": product_id, "months": 12},
                )
            )
        elif months and draw_extension < 0.3:
            at = add_months(bought, months) - _days(rng, 8, 25)
            if at > registered:
                made.append(
                    (at, contact, "warranty.extended", {"product_id": product_id, "months": 12})
                )
    made.sort(key=lambda item: (item[0], item[1], item[3]["product_id"]))
    return [
        {
            "id": f"wx-{seed}-{number:06d}",
            "contact_id": contact,
            "type": type_,
            "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "properties": props,
        }
        for number, (at, contact, type_, props) in enumerate(made, 1)
        if limit is None or at <= limit
    ]


def summary(db_path: str, at: str | None = None) -> str:
    """Offers made and accepted, by kind, in the store at ``db_path``, as lines to print.

    ``at`` (ISO 8601) is the moment offers count as expired from; by default, the newest
    event in the store (the end of the history, for a simulation as for a live ingest).
    """
    db = Database(db_path)
    try:
        if not db["warranty_offers"].exists():
            return "no warranty offers table: is the clm-warranty plugin installed?"
        if at is not None:
            now = parse_moment(at, "at")
        else:
            newest = next(db.query("SELECT MAX(occurred_at) AS at FROM events"))["at"]
            now = parse_moment(newest) if newest else datetime.now(UTC)
        return reports.format_offers(reports.offers(db, now))
    finally:
        db.close()


def _days(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(days=low + rng.random() * (high - low))
