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
  reminder, before the 7-day one);
- about 8% of the customers who register a product also register an older device they have
  owned for years (``p-old-...``), whose expected life ends one to eight months later; about
  40% of those buy its successor (a registration of the successor SKU) 5 to 40 days after the
  upgrade offer the example rules make 90 days before the end of life.

``summary`` prints offers made and accepted by kind from a store.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clm_engine import Engine

from . import reports
from .dates import add_months, optional_moment, parse_moment
from .products import to_minor

#: Products priced at least this (minor units) are "high-value" in the example rules.
HIGH_VALUE_MINOR = 15000
#: Older devices customers still own: SKU, name, list price (minor units), warranty and
#: expected life (months), successor. As in the example catalogue (a test checks it).
LEGACY = (
    ("AUR-HUB-2", "Aurora Hub 2", 12900, 24, 72, "AUR-HUB-3"),
    ("AUR-CAM-IN", "Aurora Indoor Camera", 8900, 12, 48, "AUR-CAM-IN-2"),
    ("AUR-CAM-OUT", "Aurora Outdoor Camera", 24900, 24, 60, "AUR-CAM-OUT-2"),
    ("AUR-ROUTER", "Aurora Mesh Router (3-pack)", 34900, 36, 60, "AUR-ROUTER-2"),
)
#: The example rules offer an upgrade this long before the end of expected life.
UPGRADE_LEAD = timedelta(days=90)


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
    owners: set[str] = set()
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
        draw_legacy = rng.random()
        if contact not in owners:
            owners.add(contact)
            if draw_legacy < 0.08:
                made += _legacy(rng, contact, registered, len(owners))
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


def _legacy(
    rng: random.Random, contact: str, registered: datetime, number: int
) -> list[tuple[datetime, str, str, dict[str, Any]]]:
    """An older device registered beside a new one, and perhaps its successor bought."""
    sku, name, price, warranty, life, successor = LEGACY[int(rng.random() * len(LEGACY))]
    at = registered + _days(rng, 1, 3)
    end_of_life = at + _days(rng, 30, 240)
    bought = add_months(end_of_life, -life)
    product_id = f"p-old-{number:06d}"
    made = [
        (
            at,
            contact,
            "product.registered",
            {
                "product_id": product_id,
                "sku": sku,
                "name": name,
                "purchased_at": bought.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "warranty_months": warranty,
                "price_minor": price,
            },
        )
    ]
    if rng.random() < 0.4:
        offered = max(end_of_life - UPGRADE_LEAD, at)
        upgraded = offered + _days(rng, 5, 40)
        made.append(
            (
                upgraded,
                contact,
                "product.registered",
                {
                    "product_id": f"p-new-{number:06d}",
                    "sku": successor,
                    "purchased_at": (upgraded - _days(rng, 1, 4)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "replaces": product_id,
                },
            )
        )
    return made


def add_to_file(
    path: str | Path, out: str | Path | None = None, seed: int = 7, *, until: str | None = None
) -> int:
    """Merge ``extra_events`` into a JSON Lines history, in time order; returns how many.

    The history's own lines stay as they are and in their order (its late events and its
    malformed lines are part of what the demo shows); each new event goes in before the first
    line that happened after it. Writes to ``out``, or back to ``path``.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    events: list[dict[str, Any]] = []
    times: list[datetime | None] = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        moment = optional_moment(event.get("occurred_at")) if isinstance(event, dict) else None
        if moment is not None:
            events.append(event)
        times.append(moment)
    extra = extra_events(events, seed, until=until)
    merged: list[str] = []
    index = 0
    for line, moment in zip(lines, times, strict=True):
        while (
            index < len(extra)
            and moment is not None
            and parse_moment(extra[index]["occurred_at"]) < moment
        ):
            merged.append(json.dumps(extra[index], separators=(",", ":")))
            index += 1
        merged.append(line)
    merged += [json.dumps(e, separators=(",", ":")) for e in extra[index:]]
    Path(out or path).write_text("\n".join(merged) + "\n", encoding="utf-8")
    return len(extra)


def summary(db_path: str, at: str | None = None) -> str:
    """Offers made and accepted, by kind, in the store at ``db_path``, as lines to print.

    ``at`` (ISO 8601) is the moment offers count as expired from; by default, the newest
    event in the store (the end of the history, for a simulation as for a live ingest).
    """
    import clm_warranty

    with Engine(db_path, plugins={"warranty": clm_warranty}) as engine:
        if at is not None:
            now = parse_moment(at, "at")
        else:
            newest = engine.store.summary()["last_event_at"]
            now = parse_moment(newest) if newest else datetime.now(UTC)
        return reports.format_offers(reports.offers(engine.store.tables, now))


def _days(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(days=low + rng.random() * (high - low))
