"""What ``make demo`` needs from the referral plugin: referral events the sample history lacks,
and a printable summary of the rewards.

The synthetic history (``clm sample-events``) already has referrers (``referral.sent``) and
referred contacts (``referral.signup``). :func:`extra_events` adds, deterministically:

- ``onboarding.completed`` for most referred contacts, 1 to 6 days after their signup: the
  event the example ruleset ``rulesets/referral-rewards.json`` rewards;
- a few refunds (``purchase.refunded``) within 30 days of onboarding, so clawbacks show, and
  one long after, which is not clawed back;
- a few farming attempts, each a new contact who signs up with a referral and onboards:
  self-referrals under another spelling of the referrer's email, a shared device
  fingerprint, and a burst of referred signups for one referrer within two hours.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from clm_engine import Engine

from .ledger import rewards
from .report import format_report, report


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _variant(email: str, n: int) -> str:
    """Another spelling of the same mailbox: dots at Gmail, plus-addressing elsewhere."""
    local, _, domain = email.partition("@")
    if domain in ("gmail.com", "googlemail.com") and len(local) > 2:
        return f"{local[:2]}.{local[2:]}".replace("..", ".") + f"@{domain}"
    return f"{local}+r{n}@{domain}"


def extra_events(events: list[dict[str, Any]], seed: int = 7) -> list[dict[str, Any]]:
    """Events to add to a sample history so the referral rules have something to do.

    ``events`` are the history's event dicts (any order). Returns new events with ids of
    their own (``ref-<seed>-...``), sorted by ``occurred_at``; the same input and seed give
    the same output.
    """
    rng = random.Random(f"{seed}:referral-demo")
    emails: dict[str, str] = {}
    signups: dict[str, str] = {}
    referred: dict[str, dict[str, Any]] = {}
    end = None
    for event in events:
        at = event.get("occurred_at")
        if isinstance(at, str) and (end is None or at > end):
            end = at
        if event.get("type") == "signup":
            emails[event["contact_id"]] = event.get("properties", {}).get("email", "")
            signups[event["contact_id"]] = event["occurred_at"]
        elif event.get("type") == "referral.signup":
            referred.setdefault(event["contact_id"], event)
    if end is None:
        return []
    last = _at(end)
    out: list[dict[str, Any]] = []

    def add(contact: str, type_: str, at: datetime, properties: dict[str, Any]) -> None:
        if at < last:
            out.append(
                {
                    "id": f"ref-{seed}-{len(out):05d}",
                    "contact_id": contact,
                    "type": type_,
                    "occurred_at": _text(at),
                    "properties": properties,
                }
            )

    quiet: list[tuple[str, datetime]] = []  # onboarded, never refunded
    for contact, signup in sorted(referred.items()):
        if rng.random() >= 0.8:
            continue  # never finished onboarding
        done = _at(signup["occurred_at"]) + timedelta(days=1 + rng.random() * 5)
        add(contact, "onboarding.completed", done, {"steps": 5})
        if rng.random() < 0.06:
            refund = done + timedelta(days=3 + rng.random() * 20)
            add(contact, "purchase.refunded", refund, {"order_id": f"o-ref-{contact}"})
        else:
            quiet.append((contact, done))
    if quiet:  # a refund long after the reward: outside the clawback window, nothing happens
        contact, done = quiet[len(quiet) // 3]
        add(
            contact,
            "purchase.refunded",
            done + timedelta(days=45),
            {"order_id": f"o-late-{contact}"},
        )

    referrers = sorted({e["properties"]["referrer_id"] for e in referred.values()})
    referrers = [r for r in referrers if r in emails and r in signups]
    if not referrers:
        return sorted(out, key=lambda e: e["occurred_at"])
    picks = rng.sample(referrers, min(len(referrers), 6))
    newcomer = 0

    def newcomer_signs_up(referrer: str, at: datetime, email: str, **extra: Any) -> str:
        nonlocal newcomer
        newcomer += 1
        contact = f"r{seed}-{newcomer:04d}"
        add(contact, "signup", at, {"email": email, "source": "referral", **extra})
        add(contact, "referral.signup", at + timedelta(seconds=30), {"referrer_id": referrer})
        add(contact, "onboarding.completed", at + timedelta(days=2), {"steps": 5, **extra})
        return contact

    # Self-referrals: the referrer's own mailbox, spelled another way.
    for n, referrer in enumerate(picks[:3]):
        at = max(_at(signups[referrer]) + timedelta(days=20), last - timedelta(days=40))
        newcomer_signs_up(referrer, at, _variant(emails[referrer], n))
    # A shared device: the referrer's phone onboards the "friend".
    for n, referrer in enumerate(picks[3:5]):
        fingerprint = f"dev-{seed}-{n}-{rng.getrandbits(48):012x}"
        at = last - timedelta(days=30 + n)
        add(
            referrer,
            "page.viewed",
            at - timedelta(days=1),
            {"path": "/app", "device_fingerprint": fingerprint},
        )
        newcomer_signs_up(
            referrer, at, f"friend{n}.{seed}@example.net", device_fingerprint=fingerprint
        )
    # A burst: six referred signups for one referrer within two hours.
    if len(picks) > 5:
        start = last - timedelta(days=20)
        for n in range(6):
            email = f"burst{n}.{seed}@example.org"
            newcomer_signs_up(picks[5], start + timedelta(minutes=20 * n), email)
    return sorted(out, key=lambda e: e["occurred_at"])


def add_to_history(path: str | Path, seed: int = 7) -> int:
    """Merge :func:`extra_events` into a JSON Lines history file in place, in time order;
    lines that are not events (the demo's planted bad lines) stay where they are. Returns how
    many events were added."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    parsed: list[dict[str, Any] | None] = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        parsed.append(value if isinstance(value, dict) else None)
    extras = extra_events([p for p in parsed if p is not None], seed)
    merged, queue = [], list(extras)
    for line, value in zip(lines, parsed, strict=True):
        at = value.get("occurred_at") if value else None
        while queue and isinstance(at, str) and queue[0]["occurred_at"] <= at:
            merged.append(json.dumps(queue.pop(0), separators=(",", ":")))
        merged.append(line)
    merged.extend(json.dumps(e, separators=(",", ":")) for e in queue)
    path.write_text("\n".join(merged) + "\n", encoding="utf-8")
    return len(extras)


def _referral_engine(db_path: str | Path) -> Engine:
    import clm_referral

    return Engine(db_path, plugins={"referral": clm_referral})


def demo_decisions(db_path: str | Path) -> dict[str, str]:
    """What the demo decides by hand, read from its database: a held referral to approve (a
    burst or shared device: plausible after a phone call) and one to reject (a
    self-referral), by the referred contact's id, and the top referrer with approved rewards,
    to redeem. Keys are missing when there is nothing of the kind."""
    with _referral_engine(db_path) as engine:
        tables, contacts = engine.store.tables, engine.store.count_contacts()
        held = report(tables, contacts=contacts)["held"]
        picks: dict[str, str] = {}
        for item in held:
            if item["role"] != "referrer":
                continue
            if "approve" not in picks and not item["reasons"][0].startswith("self-referral"):
                picks["approve"] = item["referred"]
            if "reject" not in picks and item["reasons"][0].startswith("self-referral"):
                picks["reject"] = item["referred"]
        owed = {r["beneficiary_contact_id"] for r in rewards(tables, state="approved")}
        for entry in report(tables, contacts=contacts, top=20)["top_referrers"]:
            if entry["contact"] in owed:
                picks["redeem"] = entry["contact"]
                break
        return picks


def summary(db_path: str | Path) -> str:
    """Printable text: rewards granted, held for review (with reasons), reversed, and the
    top referrers, read from the database the demo filled."""
    with _referral_engine(db_path) as engine:
        data = report(engine.store.tables, contacts=engine.store.count_contacts(), top=5)
        return format_report(data, held_limit=8)
