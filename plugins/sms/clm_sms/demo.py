"""For ``make demo``: service appointments booked by SMS customers, and what the texts did.

The synthetic history has no phone numbers and no appointments. :func:`add_to_file` picks
about 8% of its contacts, deterministically, gives them a phone number of their country and
books service appointments: a ``contact.updated`` (the CRM's ``next_service_at``,
``service_status``, site and local time) and a ``service.booked`` event, 2 to 14 days ahead,
between 09:00 and 17:00 in the contact's timezone. Of those, about 10% cancel the next day,
about 5% reply ``STOP`` to the confirmation, and about 3% have a number that is not valid in
their country's plan (the action fails on it, naming why). ``rulesets/service-appointments.json``
confirms each booking and reminds the day before; :func:`summary` reads ``clm simulate
--json``'s result for it.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

RULESET = "service-appointments"
SITES = ("Northgate workshop", "Riverside service centre", "Airport depot")
#: A valid prefix per country and how many digits follow it.
PHONES = {"GB": ("+447400", 6), "FR": ("+33612", 6), "DE": ("+49151", 8), "US": ("+1650253", 4)}


def _phone(rng: random.Random, country: str, valid: bool) -> str:
    prefix, digits = PHONES.get(country, PHONES["FR"])
    if not valid:
        return prefix[:5] + "0"  # far too short for any plan
    return prefix + "".join(rng.choice("0123456789") for _ in range(digits))


def _event(n: int, contact: str, type_: str, at: datetime, **properties: Any) -> dict[str, Any]:
    return {
        "id": f"sms-demo-{n:06d}",
        "contact_id": contact,
        "type": type_,
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "properties": properties,
    }


def add_to_file(history: Path, out: Path, *, seed: int = 7, share: float = 0.08) -> int:
    """Write ``out``: the chosen contacts' signups from ``history`` and their appointment
    events, in time order. Returns how many events were added."""
    rng = random.Random(seed)
    signups: list[dict[str, Any]] = []
    last = None
    with history.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # the planted bad lines
            if not isinstance(event, dict):
                continue
            when = event.get("occurred_at")
            if isinstance(when, str) and (last is None or when > last):
                last = when
            if event.get("type") == "signup" and rng.random() < share:
                signups.append(event)
    end = datetime.fromisoformat(str(last).replace("Z", "+00:00")) if last else None
    added: list[dict[str, Any]] = []
    n = 0
    for signup in signups:
        props = signup.get("properties") or {}
        zone = ZoneInfo(props.get("timezone") or "UTC")
        signed = datetime.fromisoformat(signup["occurred_at"].replace("Z", "+00:00"))
        if end is None or end - signed < timedelta(days=3):
            continue
        booked = signed + (end - signed) * rng.random()
        local_day = (booked + timedelta(days=rng.randint(2, 14))).astimezone(zone).date()
        local = datetime(
            local_day.year, local_day.month, local_day.day, rng.randint(9, 16), 0, tzinfo=zone
        )
        contact = signup["contact_id"]
        country = str(props.get("country")) if props.get("country") in PHONES else "FR"
        site = rng.choice(SITES)
        when = local.strftime("%a %d %b %H:%M")
        update = {
            "phone": _phone(rng, country, rng.random() >= 0.03),
            "next_service_at": local.isoformat(),
            "service_status": "booked",
            "service_site": site,
            "service_local_time": when,
        }
        added.append(_event(n := n + 1, contact, "contact.updated", booked, **update))
        added.append(
            _event(
                n := n + 1,
                contact,
                "service.booked",
                booked + timedelta(seconds=1),
                site=site,
                local_time=when,
                appointment_at=local.isoformat(),
            )
        )
        draw = rng.random()
        if draw < 0.10:
            cancelled = booked + timedelta(hours=rng.randint(2, 20))
            added.append(
                _event(
                    n := n + 1, contact, "contact.updated", cancelled, service_status="cancelled"
                )
            )
        elif draw < 0.15:
            stop = booked + timedelta(minutes=rng.randint(5, 120))
            added.append(_event(n := n + 1, contact, "sms.inbound", stop, body="STOP"))
    events = sorted([*signups, *added], key=lambda e: (e["occurred_at"], e["id"]))
    with out.open("w", encoding="utf-8") as file:
        for event in events:
            file.write(json.dumps(event) + "\n")
    return len(added)


def summary(result: dict[str, Any]) -> str:
    """Confirmations and reminders from ``clm simulate --json``: sent, skipped, vetoed."""
    lines = []
    for rule, label in (("confirm-booking", "confirmations"), ("remind-day-before", "reminders")):
        found = result.get("per_rule", {}).get(f"{RULESET}/{rule}", {})
        actions = found.get("actions", {})
        sent = actions.get("simulated", 0) + actions.get("done", 0)
        lines.append(
            f"{label}: {found.get('fired', 0):,} decided, {sent:,} texts would go, "
            f"{actions.get('vetoed', 0):,} vetoed (replied STOP), "
            f"{actions.get('failed', 0):,} failed (invalid number), "
            f"{actions.get('skipped', 0):,} skipped"
        )
    return "\n".join(lines)
