"""Consent, STOP, frequency caps and quiet hours for ``sms.send``: the SMS dispatch policy.

Asked before a message leaves the outbox and again right before the provider is called, on
the contact as it is then: a STOP reply or an ``unsubscribed`` from SMS stops messages already
queued. A capped message or one due in quiet hours is deferred, never dropped. Caps count the
SMS the core's message log holds (``channel_messages``); the cross-channel policies
(``clm_engine.channels``) apply on top.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clm_engine import Defer, Veto, channels, utc_text

from .settings import SmsSettings

if TYPE_CHECKING:
    from clm_engine import Contact, Tables


def decide(
    *,
    params: dict[str, Any],
    contact: Contact,
    now: datetime,
    tables: Tables | None,
    settings: SmsSettings,
    in_flight: Callable[[], Sequence[Any]] | None = None,
) -> Veto | Defer | None:
    category = channels.category_of("sms", params)
    opted_out = contact.metrics.get("sms_opted_out_at")
    if opted_out:
        return Veto(f"replied STOP at {opted_out} (consent.sms is false)")
    exempt = category in settings.exempt_categories
    if not exempt and contact.consent.get("sms") is not True:
        state = "false" if "sms" in contact.consent else "not recorded"
        return Veto(f"no consent to {category} SMS (consent.sms is {state})")
    across = channels.decide(
        action="sms.send",
        params=params,
        contact=contact,
        now=now,
        tables=tables,
        in_flight=in_flight,
    )
    if exempt or (not settings.frequency_caps and settings.quiet_hours is None):
        return across
    sends: list[datetime] = []
    if settings.frequency_caps and tables is not None:
        longest = max(cap.window for cap in settings.frequency_caps)
        rows = tables[channels.TABLE_NAME].rows(
            {
                "contact_id": contact.id,
                "channel": "sms",
                "sent_at": (">=", utc_text(now - longest)),
            },
            columns=["sent_at", "category"],
        )
        exempted = set(settings.exempt_categories)
        sends = [
            datetime.fromisoformat(r["sent_at"]) for r in rows if r["category"] not in exempted
        ]
        for row in in_flight() if in_flight is not None else ():
            if row.action == "sms.send" and channels.category_of("sms", row.params) not in exempted:
                sends.append(now)
    own = channels.ChannelPolicy(
        name="sms",
        categories=[category],
        channels=["sms"],
        frequency_caps=settings.frequency_caps,
        quiet_hours=settings.quiet_hours,
    )
    until, reasons = channels.next_allowed(
        now, sends=sends, policy=own, timezone=contact.timezone, prefix=""
    )
    mine = Defer(until, "; ".join(reasons)) if until > now else None
    found = [d for d in (mine, across) if d is not None]
    return max(found, key=lambda d: d.until) if found else None
