"""Cross-channel policies: frequency caps and quiet hours that count every channel's messages.

"At most 3 marketing messages a week, any channel" cannot live in one channel's plugin: the
email plugin sees only emails. So the core keeps one small log of delivered messages from
every channel (the table ``channel_messages``, written by ``clm_engine.builtins.channels``
from the events channels already emit) and each channel plugin asks :func:`decide` from its
own ``dispatch_policy`` for the messages it is about to send. A capped message, or one due in
quiet hours, is deferred to the first moment every policy allows; nothing is dropped.

The conventions a channel plugin follows to take part (the shipped ``clm-email``, ``clm-sms``
and ``clm-webhook`` do):

* its send action is named ``<channel>.<verb>`` (``email.send``, ``sms.send``,
  ``webhook.post``) and has a ``category`` parameter (``marketing`` unless
  :data:`DEFAULT_CATEGORIES` says otherwise for the channel);
* a delivered message is reported as an event ``<channel>.sent`` with properties
  ``category`` and ``sent_at`` (when it really left, ISO 8601), ``<channel>`` being one of
  :data:`MESSAGE_CHANNELS`;
* its ``dispatch_policy`` returns ``channels.decide(...)`` for its send action (combined with
  its own answer: a veto first, else the later deferral).

The policies are ops settings, not rules: a JSON file named by ``$CLM_CHANNEL_POLICY``::

    {"policies": [
      {"name": "marketing-pressure", "categories": ["marketing"],
       "frequency_caps": [{"max": 3, "per": "P7D"}],
       "quiet_hours": {"start": "21:00", "end": "08:00"}}
    ]}

Why a file named by the environment and not a document beside the rulesets: dispatch
policies are not given the loaded documents, and every process (the daemon, ``clm run``, a
backtest) must apply the same policy. No file: no cross-channel policy, each channel's own
settings alone apply.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .consent import CHANNELS
from .models import DurationSpec, Name, duration_to_timedelta, utc_text
from .settings_files import settings_from_file
from .types import Defer

if TYPE_CHECKING:
    from .models import Contact
    from .store.tables import Tables

__all__ = [
    "DEFAULT_CATEGORIES",
    "MESSAGE_CHANNELS",
    "POLICY_ENV",
    "TABLE_NAME",
    "ChannelPolicies",
    "ChannelPolicy",
    "FrequencyCap",
    "QuietHours",
    "cap_until",
    "category_of",
    "channel_of",
    "decide",
    "next_allowed",
    "quiet_until",
    "resolve_policies",
]

#: Channels whose ``<channel>.sent`` events are logged: the consent channels, and webhooks.
MESSAGE_CHANNELS: tuple[str, ...] = (*CHANNELS, "webhook")
#: A message's category when its action's parameters name none: ``marketing``, except for a
#: webhook (a CRM task is not a marketing message unless the rule says so).
DEFAULT_CATEGORIES: Mapping[str, str] = {"webhook": "operational"}
#: Names the JSON policy file.
POLICY_ENV = "CLM_CHANNEL_POLICY"
#: The core's log of delivered messages, every channel.
TABLE_NAME = "channel_messages"

_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
ClockTime = Annotated[str, Field(pattern=_CLOCK.pattern, description="A time of day, HH:MM.")]


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


class QuietHours(BaseModel):
    """No message of the policy's categories between ``start`` and ``end``, in each
    contact's own timezone (``21:00``-``08:00`` spans midnight)."""

    model_config = ConfigDict(extra="forbid")

    start: ClockTime
    end: ClockTime

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours need different 'start' and 'end' times")
        return self


class FrequencyCap(BaseModel):
    """At most ``max`` messages per contact in any window of ``per``."""

    model_config = ConfigDict(extra="forbid")

    max: Annotated[int, Field(ge=1)]
    per: DurationSpec

    @property
    def window(self) -> timedelta:
        return duration_to_timedelta(self.per)


class ChannelPolicy(BaseModel):
    """One policy: which messages it counts and holds (``categories`` on ``channels``), and
    its caps and quiet hours."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    categories: Annotated[list[Name], Field(min_length=1)]
    #: The channels counted and held; every message channel when left out.
    channels: list[Name] | None = None
    frequency_caps: list[FrequencyCap] = Field(default_factory=list)
    quiet_hours: QuietHours | None = None

    @model_validator(mode="after")
    def _known_channels(self) -> ChannelPolicy:
        unknown = [c for c in self.channels or () if c not in MESSAGE_CHANNELS]
        if unknown:
            raise ValueError(
                f"unknown channel(s) {', '.join(unknown)}: the channels are "
                f"{', '.join(MESSAGE_CHANNELS)}"
            )
        if not self.frequency_caps and self.quiet_hours is None:
            raise ValueError(f"policy {self.name!r} has neither frequency_caps nor quiet_hours")
        return self

    def covers(self, channel: str, category: str) -> bool:
        return category in self.categories and (self.channels is None or channel in self.channels)


class ChannelPolicies(BaseModel):
    """The policy file: ``{"policies": [...]}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    description: str = ""
    policies: list[ChannelPolicy] = Field(default_factory=list)


def resolve_policies(environ: Mapping[str, str] | None = None) -> ChannelPolicies:
    """The policies in force: the ``$CLM_CHANNEL_POLICY`` file's, or none.

    Read again when the file changes. Raises ``ValueError`` naming the file and the field
    for anything unusable (a channel's ``dispatch_policy`` that raises vetoes the message,
    naming the plugin: a message whose caps could not be checked does not go out).
    """
    environ = os.environ if environ is None else environ
    path = environ.get(POLICY_ENV) or ""
    if not path:
        return ChannelPolicies()
    return settings_from_file(POLICY_ENV, path, ChannelPolicies, "channel policy file")


def channel_of(action: str) -> str:
    """The channel of a message action: the part of its name before the dot."""
    return action.partition(".")[0]


def category_of(channel: str, params: Mapping[str, Any]) -> str:
    """A message's category: its ``category`` parameter, or the channel's default."""
    value = params.get("category")
    return (
        value if isinstance(value, str) and value else DEFAULT_CATEGORIES.get(channel, "marketing")
    )


def quiet_until(now: datetime, quiet: QuietHours, timezone: str) -> datetime | None:
    """The end of the quiet hours ``now`` falls in (in ``timezone``), or ``None``."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    start, end = _clock(quiet.start), _clock(quiet.end)
    clock = local.time().replace(tzinfo=None)
    inside = start <= clock < end if start < end else (clock >= start or clock < end)
    if not inside:
        return None
    day = local.date() if clock < end else local.date() + timedelta(days=1)
    # A quiet end that does not exist that day (a DST gap) normalises forward through UTC.
    return datetime.combine(day, end, tzinfo=zone).astimezone(UTC)


def cap_until(now: datetime, sends: Sequence[datetime], cap: FrequencyCap) -> datetime | None:
    """When another message fits under ``cap`` given earlier send times; ``None``: now."""
    recent = sorted((s for s in sends if s > now - cap.window), reverse=True)
    if len(recent) < cap.max:
        return None
    return recent[cap.max - 1] + cap.window


def next_allowed(
    now: datetime,
    *,
    sends: Sequence[datetime],
    policy: ChannelPolicy,
    timezone: str,
    prefix: str | None = None,
) -> tuple[datetime, list[str]]:
    """The first moment at or after ``now`` under every cap of ``policy`` and outside its
    quiet hours, with the reasons that pushed it there (none: ``now`` itself). Each reason
    starts with ``prefix`` (``policy '<name>': `` unless given)."""
    lead = f"policy {policy.name!r}: " if prefix is None else prefix
    when, reasons = now, []
    for _ in range(20):  # each constraint only pushes later; a few rounds settle it
        moved = False
        for cap in policy.frequency_caps:
            until = cap_until(when, sends, cap)
            if until is not None and until > when:
                reason = (
                    f"{lead}at most {cap.max} "
                    f"{'/'.join(policy.categories)} messages per {_span(cap.window)}"
                    f" ({'any channel' if policy.channels is None else ', '.join(policy.channels)})"
                )
                if reason not in reasons:
                    reasons.append(reason)
                when, moved = until, True
        if policy.quiet_hours is not None:
            until = quiet_until(when, policy.quiet_hours, timezone)
            if until is not None and until > when:
                quiet = policy.quiet_hours
                reason = f"{lead}quiet hours {quiet.start}-{quiet.end} ({timezone})"
                if reason not in reasons:
                    reasons.append(reason)
                when, moved = until, True
        if not moved:
            break
    return when, reasons


def decide(
    *,
    action: str,
    params: Mapping[str, Any],
    contact: Contact,
    now: datetime,
    tables: Tables | None,
    in_flight: Callable[[], Sequence[Any]] | None = None,
    policies: ChannelPolicies | None = None,
) -> Defer | None:
    """The cross-channel answer for one message action about to be dispatched: a
    ``Defer`` to the first moment every policy that covers it allows, or ``None``.

    ``tables`` are the dispatch transaction's (read only); ``in_flight()`` the contact's
    claimed outbox rows (external actions on their way, any channel): each counts as sent
    now, or two messages due together on two channels would both fit under a cap.
    """
    policies = resolve_policies() if policies is None else policies
    channel = channel_of(action)
    category = category_of(channel, params)
    applying = [p for p in policies.policies if p.covers(channel, category)]
    if not applying:
        return None
    capped = [p for p in applying if p.frequency_caps]
    sent: list[tuple[str, str, datetime]] = []
    if capped and tables is not None:
        longest = max(cap.window for p in capped for cap in p.frequency_caps)
        rows = tables[TABLE_NAME].rows(
            {"contact_id": contact.id, "sent_at": (">=", utc_text(now - longest))},
            columns=["channel", "category", "sent_at"],
        )
        sent = [
            (row["channel"], row["category"], datetime.fromisoformat(row["sent_at"]))
            for row in rows
        ]
        for row in in_flight() if in_flight is not None else ():
            other = channel_of(row.action)
            if other in MESSAGE_CHANNELS:
                sent.append((other, category_of(other, row.params), now))
    when, reasons = now, []
    for _ in range(20):  # one policy's deferral may land in another's quiet hours
        moved = False
        for policy in applying:
            sends = [at for ch, cat, at in sent if policy.covers(ch, cat)]
            until, why = next_allowed(when, sends=sends, policy=policy, timezone=contact.timezone)
            if until > when:
                when, moved = until, True
                reasons += [r for r in why if r not in reasons]
        if not moved:
            break
    if when <= now:
        return None
    return Defer(when, "; ".join(reasons))


def _span(window: timedelta) -> str:
    days = window.total_seconds() / 86400
    if days >= 1:
        return f"{days:g} day" if days == 1 else f"{days:g} days"
    return str(window)
