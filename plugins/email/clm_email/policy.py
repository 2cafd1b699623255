"""Consent, suppression, frequency caps and quiet hours: the email plugin's dispatch policy.

It runs through the engine's ``dispatch_policy`` hook, before an ``email.send`` leaves the
outbox, so it sees the contact as it is at that moment: an ``unsubscribed`` event or a hard
bounce stops messages already queued. A capped message or one due in quiet hours is deferred
to the next allowed time (the engine reschedules it and ``clm explain`` shows the reason);
nothing is dropped silently.

:func:`next_allowed` words the email plugin's own caps and quiet hours; the arithmetic under it
(``cap_until``, ``quiet_until``) is the cross-channel policies' (``clm_engine.channels``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clm_engine import Defer, Veto, channels, utc_text
from clm_engine.channels import FrequencyCap, QuietHours, cap_until, quiet_until

from .settings import EmailSettings
from .store import enrollment as enrollment_of
from .store import is_suppressed

if TYPE_CHECKING:
    from clm_engine import Contact, Tables

#: Suppression reasons that stop every message, exempt categories included.
HARD_REASONS = ("hard_bounce", "complaint", "manual")


def next_allowed(
    now: datetime,
    *,
    sends: Sequence[datetime],
    caps: Sequence[FrequencyCap],
    quiet: QuietHours | None,
    timezone: str,
    noun: str = "emails",
) -> Defer | None:
    """The deferral for a message due ``now``, or ``None`` if it may go now.

    Caps and quiet hours are applied together: the answer is the first moment that is both
    under every cap and outside quiet hours, with every reason that pushed it there.
    """
    when, reasons = now, []
    for _ in range(10):  # each constraint can only push later; a few rounds settle it
        moved = False
        for cap in caps:
            until = cap_until(when, sends, cap)
            if until is not None and until > when:
                days = cap.window.total_seconds() / 86400
                span = f"{days:g} days" if days >= 1 else f"{cap.window}"
                reason = f"frequency cap: {cap.max} {noun} per {span}"
                if reason not in reasons:
                    reasons.append(reason)
                when, moved = until, True
        if quiet is not None:
            until = quiet_until(when, quiet, timezone)
            if until is not None and until > when:
                reason = f"quiet hours {quiet.start}-{quiet.end} ({timezone})"
                if reason not in reasons:
                    reasons.append(reason)
                when, moved = until, True
        if not moved:
            break
    if when <= now:
        return None
    return Defer(when, "; ".join(reasons))


def decide(
    *,
    params: dict[str, Any],
    contact: Contact,
    now: datetime,
    tables: Tables | None,
    settings: EmailSettings,
    claimed: Callable[[], Sequence[Any]] | None = None,
) -> Veto | Defer | None:
    """The answer for one ``email.send`` about to be dispatched (``tables``: read only;
    ``claimed()``: the contact's outbox rows a worker holds right now, on their way)."""
    category = params.get("category") or "marketing"
    exempt = category in settings.exempt_categories
    enrollment = params.get("enrollment")
    if enrollment is not None and tables is not None:
        row = enrollment_of(tables, enrollment)
        if row is not None and row["status"] in ("exited", "stopped"):
            return Veto(
                f"left sequence {row['sequence']!r} ({row['exit_reason'] or row['status']})"
            )
    address = contact.email
    if address is None:
        return None  # the action records the skip: there is nobody to write to
    if tables is not None:
        found = is_suppressed(tables, address)
        if found is not None and (found[0] in HARD_REASONS or not exempt):
            return Veto(f"{address} is suppressed ({found[0]} at {found[1][:19]}Z)")
    if exempt:
        return None
    if contact.consent.get("email") is not True:
        state = "false" if "email" in contact.consent else "not recorded"
        return Veto(f"no consent to {category} email (consent.email is {state})")
    # The cross-channel policies (``$CLM_CHANNEL_POLICY``) count every channel's messages.
    across = channels.decide(
        action="email.send",
        params={"category": category},
        contact=contact,
        now=now,
        tables=tables,
        in_flight=claimed,
    )
    if not settings.frequency_caps and settings.quiet_hours is None:
        return across
    sends: list[datetime] = []
    if settings.frequency_caps and tables is not None:
        longest = max(cap.window for cap in settings.frequency_caps)
        exempted = list(settings.exempt_categories) or [""]
        rows = tables["email_messages"].rows(
            {
                "contact_id": contact.id,
                "sent_at": (">=", utc_text(now - longest)),
                "status": ("in", ["sent", "bounced"]),
            },
            columns=["sent_at", "category"],
        )
        sends = [
            datetime.fromisoformat(row["sent_at"])
            for row in rows
            if (row["category"] or "") not in exempted
        ]
        # Messages claimed and on their way (external actions run after the claim commits)
        # count as sent now, or two due together would both fit under the cap.
        in_flight = sum(
            1
            for row in (claimed() if claimed is not None else ())
            if row.action == "email.send"
            and (row.params.get("category") or "marketing") not in exempted
        )
        sends.extend([now] * in_flight)
    own = next_allowed(
        now,
        sends=sends,
        caps=settings.frequency_caps,
        quiet=settings.quiet_hours,
        timezone=contact.timezone,
        noun=f"{category} emails",
    )
    return later(own, across)


def later(*answers: Defer | None) -> Defer | None:
    """The later of several deferrals (``None``: no deferral), as the engine would pick."""
    found = [a for a in answers if a is not None]
    return max(found, key=lambda d: d.until) if found else None
