"""The referral report: how much referring happens, what it cost, who drives it.

Shared by ``clm referral report`` and the demo's summary, so both say the same thing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from clm_engine.money import format_minor

from . import ledger

if TYPE_CHECKING:
    from clm_engine import Tables


def report(tables: Tables, *, contacts: int, top: int = 5) -> dict[str, Any]:
    """Referral rate (of ``contacts``: the store's ``count_contacts()``), rewards by state
    (count and amount per currency), held rewards with their reasons, and the top referrers
    by successful referrals."""
    by_referrer = tables["referral_attributions"].aggregate(group_by=["referrer_contact_id"])
    referred = sum(row["count"] for row in by_referrer)
    referrers = sum(1 for row in by_referrer if row["referrer_contact_id"] is not None)
    rows = ledger.rewards(tables)
    by_state: dict[str, dict[str, Any]] = {}
    held = []
    for row in rows:
        state = "held" if row["state"] == "pending" and row["held_reasons"] else row["state"]
        slot = by_state.setdefault(state, {"count": 0, "amount_minor": Counter()})
        slot["count"] += 1
        slot["amount_minor"][row["currency"]] += row["amount_minor"]
        if state == "held":
            held.append(
                {
                    "reward": row["id"],
                    "role": row["role"],
                    "to": row["beneficiary_contact_id"],
                    "referred": row["referred_contact_id"],
                    "amount": format_minor(row["amount_minor"], row["currency"]),
                    "reasons": row["held_reasons"],
                }
            )
    for slot in by_state.values():
        slot["amount_minor"] = dict(slot["amount_minor"])
        slot["amount"] = [format_minor(v, c) for c, v in sorted(slot["amount_minor"].items())]
    stats: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"referred": 0, "successful": 0, "earned_minor": Counter()}
    )
    for row in by_referrer:
        stats[row["referrer_contact_id"]]["referred"] = row["count"]
    for row in rows:
        if row["role"] != "referrer":
            continue
        ok = row["state"] in ("approved", "redeemed") or (
            row["state"] == "pending" and not row["held_reasons"]
        )
        if ok:
            entry = stats[row["referrer_contact_id"]]
            entry["successful"] += 1
            entry["earned_minor"][row["currency"]] += row["amount_minor"]
    ranked = sorted(stats.items(), key=lambda kv: (-kv[1]["successful"], -kv[1]["referred"], kv[0]))
    top_referrers = [
        {
            "contact": contact_id,
            "referred": entry["referred"],
            "successful": entry["successful"],
            "earned": [format_minor(v, c) for c, v in sorted(entry["earned_minor"].items())],
        }
        for contact_id, entry in ranked[:top]
        if entry["referred"] or entry["successful"]
    ]
    return {
        "contacts": contacts,
        "referred": referred,
        "referrers": referrers,
        "referral_rate": round(referred / contacts, 4) if contacts else 0.0,
        "rewards": by_state,
        "held": held,
        "top_referrers": top_referrers,
        "unbalanced": ledger.check_balanced(tables),
    }


def _amounts(slot: dict[str, Any] | None) -> str:
    if not slot:
        return "0"
    return f"{slot['count']:,} ({', '.join(slot['amount'])})"


def format_report(data: dict[str, Any], *, held_limit: int = 5) -> str:
    """The report as text for people."""
    rewards = data["rewards"]
    granted = sum(slot["count"] for slot in rewards.values())
    every: Counter[str] = Counter()
    for slot in rewards.values():
        every.update(slot["amount_minor"])
    total = ", ".join(format_minor(v, c) for c, v in sorted(every.items())) or "nothing"
    lines = [
        f"referral rate: {data['referral_rate']:.1%} ({data['referred']:,} of "
        f"{data['contacts']:,} contacts were referred, by {data['referrers']:,} referrers)",
        f"rewards granted: {granted:,} ({total}); now:",
        f"  approved:               {_amounts(rewards.get('approved'))}",
        f"  redeemed (paid out):    {_amounts(rewards.get('redeemed'))}",
        f"  pending approval:       {_amounts(rewards.get('pending'))}",
        f"  held for review:        {_amounts(rewards.get('held'))}",
        f"  reversed (clawed back): {_amounts(rewards.get('reversed'))}",
        f"  rejected in review:     {_amounts(rewards.get('rejected'))}",
    ]
    if data["held"]:
        # One line per referral: its rewards (referrer's and friend's) share their reasons.
        by_referral: dict[str, list[dict[str, Any]]] = {}
        for item in sorted(data["held"], key=lambda i: (i["referred"], i["role"] != "referrer")):
            by_referral.setdefault(item["referred"], []).append(item)
        lines.append("held for review, by referred contact (clm referral review):")
        for referred, items in list(by_referral.items())[:held_limit]:
            amounts = " + ".join(f"{i['amount']} to {i['to']}" for i in items)
            lines.append(f"  {referred}: {amounts}")
            for reason in items[0]["reasons"]:
                lines.append(f"      {reason}")
        if len(by_referral) > held_limit:
            lines.append(f"  ... and {len(by_referral) - held_limit} more referrals")
    if data["top_referrers"]:
        lines.append("top referrers (successful / referred, earned):")
        for item in data["top_referrers"]:
            earned = ", ".join(item["earned"]) or "nothing yet"
            lines.append(
                f"  {item['contact']}: {item['successful']} / {item['referred']}, {earned}"
            )
    if data["unbalanced"]:
        lines.append(f"THE LEDGER DOES NOT BALANCE: {data['unbalanced']}")
    return "\n".join(lines)
