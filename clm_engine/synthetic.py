"""A realistic, seeded stream of customer lifecycle events: for the demo, tests and benchmarks.

Why it exists: the engine's interesting behaviour (stages, late events, duplicates, reducers
that disagree with bad data) only shows on a history that looks like a real CRM's. Hand-written
fixtures are too regular, and random noise is too flat. Here every contact gets a *persona*
(dormant, casual, engaged, loyal, churning) that drives how often they open emails, browse,
buy, open tickets and how they answer NPS surveys, and the events of all contacts are merged
into one stream in time order, with a few events arriving late and a few twice, as they do
from real CRMs and webhooks.

What is guaranteed, because tests and the engine's reducers rely on it:

* The same arguments always give the same stream (only ``random.Random`` instances seeded from
  ``seed`` are used; nothing reads the clock or iterates a set).
* Every event has the fixed shape ``{"id", "contact_id", "type", "occurred_at", "properties"}``
  and is accepted by ``Event.model_validate``; ``occurred_at`` is ISO 8601 with ``Z``.
* Each contact's ``signup`` comes first, in time and in the stream (the spend pseudo-contacts
  have none); every other event of the
  contact is strictly later, and all times lie in ``[start, start + months)``.
* Purchases have a float ``amount`` (2 decimals); NPS scores are ints from 0 to 10.
* Every purchase follows a ``cart.updated`` of the same items minutes before; other carts are
  abandoned (``cart_id``, ``items``, ``items_count``, ``total``, ``cart_url``). About half the
  contacts add a ``birthday`` (``contact.updated``) in their first days; a third of closed
  tickets get a CSAT answer (``survey.answered``, ``kind: "csat"``, score 1-5; NPS stays
  ``nps.answered``, 0-10); devices are registered (``product.registered``). Acquisition spend
  is one ``spend`` event per paid channel and week, in line with that week's signups from it,
  under a pseudo-contact per channel (``channel:ads``, ``channel:partner``,
  ``channel:referral``): those have no signup. These extras come from a generator of their
  own, so the other events (and their ids) are the same as without them.
* The stream is in ``occurred_at`` order except the late events (``late_fraction``) and the
  resent duplicates (``duplicate_fraction``, same id and content).

Email addresses use reserved domains (``example.com``, ``*.example``), so a demo that "sends"
mail can never reach a real person.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import random
from bisect import bisect_left, bisect_right
from calendar import monthrange
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from operator import itemgetter
from typing import IO, TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["DEFAULT_START", "bad_lines", "generate_events", "write_jsonl"]

#: Where a stream starts when no ``start`` is given.
DEFAULT_START = datetime(2026, 5, 1, tzinfo=UTC)

_DAY = 86_400
_HOUR = 3_600

# -- reference data --------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FIRST_NAMES = _words(
    "ada grace alan linus margaret katherine dennis barbara ken radia tim hedy edsger "
    "frances donald john mary sophie lucas emma noah olivia liam mia amara chen priya arjun "
    "yuki hiro fatima omar lea jonas elena mateo sofia diego ingrid lars aisha kwame zanele "
    "thabo aroha wei mei ravi ananya carlos lucia pierre camille hannah felix isla jack "
    "chloe ethan zoe"
)
_LAST_NAMES = _words(
    "lovelace hopper turing torvalds hamilton johnson ritchie liskov thompson perlman "
    "lamarr dijkstra allen knuth mccarthy jackson martin garcia muller rossi dubois "
    "nakamura sato patel sharma okafor mensah nkosi kim li wang silva santos hernandez "
    "lopez schmidt jansen nilsson kowalski murphy smith brown wilson taylor anderson thomas "
    "moore white clark"
)
_COMPANY_STEMS = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Wonka",
    "Aperture",
    "Massive Dynamic",
    "Pied Piper",
    "Oscorp",
    "Dunder Mifflin",
    "Monarch",
    "Bluth",
    "Prestige",
    "Sterling Cooper",
)
_COMPANY_SUFFIXES = ("Inc", "Ltd", "GmbH", "Labs", "Group", "Co", "Studio", "Partners")
_FREE_MAIL = ("example.com", "example.org", "example.net", "mail.example")

#: (country, weight, timezones): timezones are real IANA names of that country.
_COUNTRIES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    (
        "US",
        34,
        ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"),
    ),
    ("GB", 9, ("Europe/London",)),
    ("DE", 7, ("Europe/Berlin",)),
    ("FR", 6, ("Europe/Paris",)),
    ("CA", 5, ("America/Toronto", "America/Vancouver")),
    ("IN", 5, ("Asia/Kolkata",)),
    ("BR", 4, ("America/Sao_Paulo",)),
    ("AU", 4, ("Australia/Sydney", "Australia/Perth")),
    ("NL", 3, ("Europe/Amsterdam",)),
    ("ES", 3, ("Europe/Madrid",)),
    ("IT", 3, ("Europe/Rome",)),
    ("SE", 2, ("Europe/Stockholm",)),
    ("PL", 2, ("Europe/Warsaw",)),
    ("IE", 2, ("Europe/Dublin",)),
    ("JP", 3, ("Asia/Tokyo",)),
    ("SG", 2, ("Asia/Singapore",)),
    ("MX", 2, ("America/Mexico_City",)),
    ("ZA", 2, ("Africa/Johannesburg",)),
    ("NG", 1, ("Africa/Lagos",)),
    ("NZ", 1, ("Pacific/Auckland",)),
)

_COUNTRY_CUM = tuple(accumulate(weight for _, weight, _ in _COUNTRIES))
_PLANS = ("free", "starter", "pro")
_PLAN_CUM = tuple(accumulate((60, 28, 12)))
_SOURCES = ("ads", "organic", "referral", "partner")
_SOURCE_CUM = tuple(accumulate((30, 40, 12, 18)))


@dataclass(frozen=True, slots=True)
class _Product:
    sku: str
    name: str
    price: float
    weight: float
    warranty_months: int  # 0: not a registrable device

    @property
    def slug(self) -> str:
        return self.sku.lower()


_CATALOG = (
    _Product("AUR-HUB-2", "Aurora Hub 2", 129.00, 10, 24),
    _Product("AUR-THERM", "Aurora Smart Thermostat", 199.00, 8, 24),
    _Product("AUR-CAM-OUT", "Aurora Outdoor Camera", 249.00, 6, 24),
    _Product("AUR-CAM-IN", "Aurora Indoor Camera", 89.00, 9, 12),
    _Product("AUR-SENSOR-4", "Door & Window Sensor (4-pack)", 59.00, 8, 12),
    _Product("AUR-LOCK", "Aurora Smart Lock", 279.00, 4, 36),
    _Product("AUR-ROUTER", "Aurora Mesh Router (3-pack)", 349.00, 3, 36),
    _Product("AUR-BULB-3", "Smart Bulb (3-pack)", 34.99, 10, 0),
    _Product("SUB-CLOUD-M", "Aurora Cloud (monthly)", 19.00, 12, 0),
    _Product("SUB-CLOUD-Y", "Aurora Cloud Plus (annual)", 99.00, 6, 0),
    _Product("ACC-POWER", "USB-C Power Kit", 24.00, 7, 0),
    _Product("ACC-MOUNT", "Camera Wall Mount", 29.00, 5, 0),
    _Product("SVC-INSTALL", "Professional Installation", 149.00, 3, 0),
)
_CATALOG_CUM = tuple(accumulate(p.weight for p in _CATALOG))
_DEVICES = tuple(p for p in _CATALOG if p.warranty_months)

_BLOG = (
    "/blog/automations-that-save-energy",
    "/blog/choosing-a-smart-lock",
    "/blog/camera-privacy-explained",
    "/blog/mesh-wifi-for-large-homes",
    "/blog/release-notes-may",
    "/blog/release-notes-june",
    "/blog/customer-story-greenhouse",
    "/blog/five-thermostat-schedules",
)
_DOCS = ("/docs", "/docs/getting-started", "/docs/api", "/docs/integrations", "/docs/faq")
#: Browsing paths and weights; "*blog*", "*docs*" and "*product*" are drawn from the lists above.
_PATHS = ("/", "/pricing", "*docs*", "*blog*", "*product*", "/account", "/support", "/features")
_PATH_CUM = tuple(accumulate((14, 12, 16, 14, 20, 10, 4, 10)))

_TICKET_SUBJECTS = (
    "Cannot log in to the app",
    "Device will not pair with the hub",
    "Billing question about my invoice",
    "Camera goes offline at night",
    "Refund request",
    "Feature request: export to CSV",
    "Shipping delay on my order",
    "Warranty claim for a faulty unit",
    "How do I share access with my family?",
    "Firmware update failed",
)
_PRIORITIES = ("low", "normal", "high", "urgent")
_UNSUBSCRIBE_REASONS = ("too_many_emails", "not_relevant", "no_longer_interested", "other")
_NPS_COMMENTS = {
    "promoter": ("Works great, setup took minutes.", "Love the app.", "Support was excellent."),
    "passive": ("Good, but the app is slow sometimes.", "Does the job.", ""),
    "detractor": (
        "Keeps disconnecting.",
        "Too expensive for what it does.",
        "Support never replied.",
    ),
}

#: Relative chance of activity at each local hour, 0-23: quiet nights, busy lunch and evening.
_HOUR_CUM = tuple(
    accumulate((1, 1, 1, 1, 1, 2, 4, 7, 9, 10, 11, 12, 12, 11, 10, 10, 9, 9, 10, 11, 11, 9, 6, 3))
)


@dataclass(frozen=True, slots=True)
class _Persona:
    """How a kind of contact behaves; rates are per day at signup, decaying with ``decay_days``."""

    name: str
    weight: float
    session_rate: float
    purchase_rate: float
    ticket_rate: float
    decay_days: float  # 0: activity does not fade
    open_p: float  # chance to open a marketing email
    click_p: float  # chance to click an opened email
    nps_p: float  # chance to answer an NPS survey
    nps_cum: tuple[float, ...]  # cumulative weights of scores 0..10
    unsubscribe_p: float
    upgrade_p: float
    referrals_rate: float  # referral invitations sent per day (most never convert)


def _cum(*weights: float) -> tuple[float, ...]:
    return tuple(accumulate(weights))


# Rates are per day; the NPS weights are for scores 0 to 10.
# fmt: off
_PERSONAS = (
    #        name        weight sessions buys   tickets decay open  click nps
    _Persona("dormant",  25,    0.08,    0.006, 0.002,  6,    0.10, 0.08, 0.10,
             _cum(1, 1, 1, 2, 3, 6, 6, 8, 5, 3, 2), unsubscribe_p=0.06, upgrade_p=0.0,
             referrals_rate=0.0),
    _Persona("casual",   30,    0.04,    0.010, 0.002,  0,    0.28, 0.14, 0.30,
             _cum(1, 1, 1, 2, 3, 6, 8, 12, 10, 5, 3), unsubscribe_p=0.03, upgrade_p=0.04,
             referrals_rate=0.0),
    _Persona("engaged",  20,    0.09,    0.022, 0.004,  0,    0.55, 0.30, 0.50,
             _cum(0, 0, 0, 0, 1, 2, 4, 10, 20, 15, 10), unsubscribe_p=0.01, upgrade_p=0.18,
             referrals_rate=0.002),
    _Persona("loyal",    12,    0.12,    0.045, 0.004,  0,    0.72, 0.40, 0.70,
             _cum(0, 0, 0, 0, 0, 0, 1, 3, 10, 25, 30), unsubscribe_p=0.005, upgrade_p=0.35,
             referrals_rate=0.008),
    _Persona("churning", 13,    0.12,    0.020, 0.012,  35,   0.45, 0.20, 0.60,
             _cum(6, 5, 6, 8, 9, 10, 8, 5, 2, 1, 1), unsubscribe_p=0.40, upgrade_p=0.0,
             referrals_rate=0.0),
)
# fmt: on
_PERSONA_CUM = _cum(*(p.weight for p in _PERSONAS))


@dataclass(slots=True)
class _Contact:
    index: int
    id: str
    signup: int  # seconds since the stream's start
    persona: _Persona
    offset: int  # seconds to add to UTC for local time (at mid-period; DST ignored after)
    email: str
    code: str  # the referral code they share


# -- helpers ---------------------------------------------------------------------------------


def _add_months(moment: datetime, months: int) -> datetime:
    year, month = divmod(moment.month - 1 + months, 12)
    year += moment.year
    day = min(moment.day, monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


_T = TypeVar("_T")


def _pick(rng: random.Random, items: tuple[_T, ...], cum: tuple[float, ...]) -> _T:
    """``rng.choices(items, cum_weights=cum)[0]`` without building a list: it runs ~1M times."""
    return items[bisect_right(cum, rng.random() * cum[-1])]


class _Timestamps:
    """ISO 8601 "Z" text of offsets from the start; caches the date part, which repeats a lot."""

    def __init__(self, start_epoch: int) -> None:
        self.start_epoch = start_epoch
        self._days: dict[int, str] = {}

    def __call__(self, offset: int) -> str:
        day, rest = divmod(self.start_epoch + offset, _DAY)
        prefix = self._days.get(day)
        if prefix is None:
            prefix = self._days[day] = datetime.fromtimestamp(day * _DAY, UTC).strftime("%Y-%m-%dT")
        hour, rest = divmod(rest, _HOUR)
        minute, second = divmod(rest, 60)
        return f"{prefix}{hour:02d}:{minute:02d}:{second:02d}Z"


# -- the generator ---------------------------------------------------------------------------

# One raw event: (seconds since start, contact index, type, properties).
_Raw = tuple[int, int, str, dict[str, Any]]


class _History:
    """Builds every contact's events; ``events`` is then sorted into one stream."""

    def __init__(self, rng: random.Random, start_epoch: int, end: int, start: datetime) -> None:
        self.rng = rng
        self.end = end  # seconds since start: nothing happens at or after it
        self.ts = _Timestamps(start_epoch)
        self.start_epoch = start_epoch
        self.events: list[_Raw] = []
        self.contacts: list[_Contact] = []
        self.referrers: list[_Contact] = []  # engaged and loyal contacts, in signup order
        self.counters = {"order": 0, "ticket": 0, "device": 0}
        #: What the extras (carts, CSAT, spend) follow, recorded without drawing randomness:
        #: (time, contact index, properties) of purchases and closed tickets; signups' sources.
        self.purchases: list[tuple[int, int, dict[str, Any]]] = []
        self.closed_tickets: list[tuple[int, int, dict[str, Any]]] = []
        self.sources: list[tuple[int, str]] = []
        middle = start + timedelta(seconds=end // 2)
        self.offsets = {
            tz: int(middle.astimezone(ZoneInfo(tz)).utcoffset().total_seconds())  # type: ignore[union-attr]  # a ZoneInfo always has an offset
            for _, _, zones in _COUNTRIES
            for tz in zones
        }
        self.campaigns = self._campaigns(start)

    # -- calendar ----------------------------------------------------------------------------

    def _campaigns(self, start: datetime) -> list[tuple[int, str, str, str]]:
        """Marketing sends in time order: (offset, campaign, template, landing path).

        A weekly newsletter (Tuesdays 14:00 UTC), a promotion on each month's second Thursday,
        and one product launch a third into the period.
        """
        sends: list[tuple[datetime, str, str, str]] = []
        day0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
        for n in range(self.end // _DAY + 2):
            day = day0 + timedelta(days=n)
            if day.weekday() == 1:
                at = day.replace(hour=14)
                sends.append((at, f"newsletter-{day:%Y-%m-%d}", "newsletter", "*blog*"))
            if day.weekday() == 3 and 8 <= day.day <= 14:
                at = day.replace(hour=16)
                sends.append((at, f"promo-{day:%Y-%m}", "promo", "/pricing"))
        launch = day0 + timedelta(days=max(1, self.end // _DAY // 3), hours=15)
        sends.append((launch, "launch-aurora-lock", "launch", "/products/aur-lock"))
        result: list[tuple[int, str, str, str]] = []
        for at, campaign, template, path in sends:
            offset = int((at - start).total_seconds())
            if 0 <= offset < self.end:
                result.append((offset, campaign, template, path))
        result.sort(key=itemgetter(0))
        return result

    def _daytime(self, t: float, contact: _Contact) -> int:
        """Move ``t`` to a plausible local time of the same local day (never before signup)."""
        rng = self.rng
        local_day = (self.start_epoch + int(t) + contact.offset) // _DAY
        hour = bisect_right(_HOUR_CUM, rng.random() * _HOUR_CUM[-1])
        moved = local_day * _DAY + hour * _HOUR + int(rng.random() * _HOUR)
        moved -= contact.offset + self.start_epoch
        return moved if moved > contact.signup else int(t)

    def _times(
        self, rate: float, contact: _Contact, *, decay_days: float, daytime: bool = True
    ) -> list[int]:
        """Times of a Poisson process of ``rate`` per day after signup, fading with decay_days."""
        if rate <= 0:
            return []
        rng, t0, end = self.rng, contact.signup, self.end
        found: list[int] = []
        t = float(t0)
        decay = decay_days * _DAY
        lambd = rate / _DAY
        while True:
            t += rng.expovariate(lambd)
            if t >= end:
                return found
            if decay and rng.random() > math.exp(-(t - t0) / decay):
                continue
            found.append(self._daytime(t, contact) if daytime else int(t))

    def _activity(self, contact: _Contact, t: int) -> float:
        decay = contact.persona.decay_days
        return math.exp(-(t - contact.signup) / (decay * _DAY)) if decay else 1.0

    # -- emitting ----------------------------------------------------------------------------

    def emit(self, contact: _Contact, t: float, type_: str, properties: dict[str, Any]) -> bool:
        """Record an event if it falls after the contact's signup and before the end."""
        t = int(t)
        if contact.signup < t < self.end:
            self.events.append((t, contact.index, type_, properties))
            return True
        return False

    def _page_views(self, contact: _Contact, t: int, paths: list[str]) -> int:
        for path in paths:
            t += 8 + int(self.rng.expovariate(1 / 70))
            self.emit(contact, t, "page.viewed", {"path": path})
        return t

    def _browse_path(self) -> str:
        rng = self.rng
        path = _pick(rng, _PATHS, _PATH_CUM)
        if path == "*blog*":
            return _BLOG[int(rng.random() * len(_BLOG))]
        if path == "*docs*":
            return _DOCS[int(rng.random() * len(_DOCS))]
        if path == "*product*":
            return "/products/" + _pick(rng, _CATALOG, _CATALOG_CUM).slug
        return path

    # -- contacts ----------------------------------------------------------------------------

    def add_contacts(self, count: int) -> None:
        rng = self.rng
        signups = []
        for _ in range(count):
            while True:  # fewer signups at weekends
                day = int(rng.random() * max(1, self.end // _DAY))
                if (self.start_epoch // _DAY + day + 3) % 7 < 5 or rng.random() < 0.6:
                    break
            hour = bisect_right(_HOUR_CUM, rng.random() * _HOUR_CUM[-1])
            signups.append(
                min(self.end - _HOUR, day * _DAY + hour * _HOUR + int(rng.random() * _HOUR))
            )
        signups.sort()
        width = max(5, len(str(count)))
        for index, signup in enumerate(signups):
            self._signup(index, f"c{index + 1:0{width}d}", max(0, signup))

    def _signup(self, index: int, contact_id: str, signup: int) -> None:
        rng = self.rng
        first = _FIRST_NAMES[int(rng.random() * len(_FIRST_NAMES))]
        last = _LAST_NAMES[int(rng.random() * len(_LAST_NAMES))]
        company = (
            f"{_COMPANY_STEMS[int(rng.random() * len(_COMPANY_STEMS))]} "
            f"{_COMPANY_SUFFIXES[int(rng.random() * len(_COMPANY_SUFFIXES))]}"
        )
        number = index + 1
        style = rng.random()
        if style < 0.25:  # a work address
            domain = company.lower().replace(" ", "-") + ".example"
            email = f"{first}.{last}{number}@{domain}"
        elif style < 0.8:
            email = f"{first}.{last}{number}@{_FREE_MAIL[int(rng.random() * 4)]}"
        else:
            email = f"{first[0]}{last}{number}@{_FREE_MAIL[int(rng.random() * 4)]}"
        country, _, zones = _COUNTRIES[bisect_right(_COUNTRY_CUM, rng.random() * _COUNTRY_CUM[-1])]
        timezone = zones[int(rng.random() * len(zones))]
        persona = _pick(rng, _PERSONAS, _PERSONA_CUM)
        source = _pick(rng, _SOURCES, _SOURCE_CUM)
        contact = _Contact(
            index,
            contact_id,
            signup,
            persona,
            self.offsets[timezone],
            email,
            f"{first[:4].upper()}{number:05d}",
        )
        referrer = self._referrer(contact) if source == "referral" else None
        if source == "referral" and referrer is None:
            source = "organic"
        plan = _pick(rng, _PLANS, _PLAN_CUM)
        consented = rng.random() < 0.85
        properties: dict[str, Any] = {
            "email": email,
            "first_name": first.capitalize(),
            "last_name": last.capitalize(),
            "company": company,
            "plan": plan,
            "source": source,
            "country": country,
            "timezone": timezone,
            "consent": {"email": consented},
        }
        self.contacts.append(contact)
        self.sources.append((signup, source))
        self.events.append((signup, index, "signup", properties))
        if referrer is not None:
            sent = (
                signup - 600 - int(rng.random() * min(14 * _DAY, signup - referrer.signup - 4200))
            )
            channel = ("email", "link", "social")[int(rng.random() * 3)]
            self.emit(referrer, sent, "referral.sent", {"code": referrer.code, "channel": channel})
            self.emit(
                contact,
                signup + 1 + int(rng.random() * 60),
                "referral.signup",
                {"referrer_id": referrer.id, "code": referrer.code},
            )
        self._lifecycle(contact, plan, consented)
        if persona.name in ("engaged", "loyal"):
            self.referrers.append(contact)

    def _referrer(self, contact: _Contact) -> _Contact | None:
        """An engaged or loyal contact who signed up at least a day earlier, if there is one."""
        pool = self.referrers
        # Referrers are in signup order: only those a day older than this signup qualify.
        limit = bisect_left(pool, contact.signup - _DAY, key=lambda c: c.signup)
        return pool[int(self.rng.random() * limit)] if limit else None

    # -- a contact's life --------------------------------------------------------------------

    def _lifecycle(self, contact: _Contact, plan: str, consented: bool) -> None:
        rng, persona = self.rng, contact.persona
        email_stop = self._emails(contact, consented)
        for t in self._times(persona.session_rate, contact, decay_days=persona.decay_days):
            paths = [self._browse_path()]
            while rng.random() < 0.5 and len(paths) < 6:
                paths.append(self._browse_path())
            self._page_views(contact, t, paths)
        for t in self._times(persona.purchase_rate, contact, decay_days=persona.decay_days):
            self._purchase(contact, t)
        if rng.random() < 0.04:  # a device bought in a shop, registered online
            self._register(
                contact,
                self._daytime(contact.signup + rng.random() * 20 * _DAY, contact),
                _DEVICES[int(rng.random() * len(_DEVICES))],
                None,
                retail=True,
            )
        ticket_rate = persona.ticket_rate
        for t in self._times(ticket_rate, contact, decay_days=0):
            self._ticket(contact, t)
        for days, survey in ((30, "nps-30d"), (120, "nps-120d")):
            sent = contact.signup + days * _DAY
            channel = "email" if consented and sent < email_stop else "in_app"
            if rng.random() < persona.nps_p * (1.0 if channel == "email" else 0.4):
                self._nps(
                    contact,
                    self._daytime(sent + rng.expovariate(1 / 86400), contact),
                    survey,
                    channel,
                )
        self._upgrades(contact, plan)
        for t in self._times(persona.referrals_rate, contact, decay_days=0):
            channel = ("email", "link", "social")[int(rng.random() * 3)]
            self.emit(contact, t, "referral.sent", {"code": contact.code, "channel": channel})

    def _emails(self, contact: _Contact, consented: bool) -> int:
        """Welcome series, newsletters, promotions; unsubscribes and bounces. Returns when email
        stopped (the end if it never did)."""
        rng, persona, signup = self.rng, contact.persona, contact.signup
        sends = [
            (
                signup + 60 + int(rng.random() * 540),
                "welcome-series",
                "welcome_1",
                "/docs/getting-started",
            )
        ]
        if consented:
            sends.append((signup + 2 * _DAY, "welcome-series", "welcome_2", "/docs"))
            sends.append((signup + 7 * _DAY, "welcome-series", "welcome_3", "/pricing"))
            first = bisect_right(self.campaigns, signup, key=itemgetter(0))
            sends.extend(self.campaigns[first:])
            sends.sort(key=itemgetter(0))
        unsubscribe_at = self.end
        if consented and rng.random() < persona.unsubscribe_p:
            lead = 14 * _DAY if persona.name == "churning" else 3 * _DAY
            unsubscribe_at = int(signup + lead + rng.random() * max(_DAY, self.end - signup - lead))
        bounce = rng.random()
        hard_bounce_at = self.end
        if consented and bounce < 0.006:
            hard_bounce_at = int(signup + rng.random() * (self.end - signup))
        soft_bounce = consented and 0.006 <= bounce < 0.02
        for sent, campaign, template, landing in sends:
            if sent >= self.end:
                break
            if sent >= hard_bounce_at:
                self.emit(
                    contact,
                    sent + 30,
                    "email.bounced",
                    {"type": "hard", "address": contact.email, "campaign": campaign},
                )
                return sent
            if soft_bounce and template == "newsletter" and rng.random() < 0.2:
                soft_bounce = False
                self.emit(
                    contact,
                    sent + 30,
                    "email.bounced",
                    {"type": "soft", "address": contact.email, "campaign": campaign},
                )
                continue
            welcome = template.startswith("welcome")
            open_p = persona.open_p * (0.4 + 0.6 * self._activity(contact, sent))
            if welcome:
                open_p = min(0.95, persona.open_p + 0.3)
            if rng.random() >= open_p:
                continue
            opened = sent + 20 + int(min(3 * _DAY, rng.expovariate(1 / (4 * _HOUR))))
            if opened >= unsubscribe_at:
                break
            props = {"campaign": campaign, "template": template}
            if not self.emit(contact, opened, "email.opened", props):
                continue
            if rng.random() < persona.click_p * (1.5 if welcome else 1.0):
                clicked = opened + 5 + int(rng.expovariate(1 / 120))
                path = _BLOG[int(rng.random() * len(_BLOG))] if landing == "*blog*" else landing
                self.emit(contact, clicked, "email.clicked", {**props, "url": path})
                self._page_views(contact, clicked, [path])
        if unsubscribe_at < self.end:
            # From the link in an email, or the preference centre when no email was opened.
            self.emit(
                contact,
                unsubscribe_at + 1,
                "unsubscribed",
                {
                    "channel": "email",
                    "reason": _UNSUBSCRIBE_REASONS[int(rng.random() * len(_UNSUBSCRIBE_REASONS))],
                },
            )
            return unsubscribe_at
        return self.end

    def _purchase(self, contact: _Contact, t: int) -> None:
        rng = self.rng
        product = _pick(rng, _CATALOG, _CATALOG_CUM)
        quantity = 1 if rng.random() < 0.85 else 2
        discount = (0, 0, 0, 0.1, 0.15, 0.2)[int(rng.random() * 6)]
        amount = round(product.price * quantity * (1 - discount), 2)
        t = self._page_views(contact, t, [f"/products/{product.slug}", "/checkout"])
        self.counters["order"] += 1
        order_id = f"o-{self.counters['order']:07d}"
        bought = t + 30 + int(rng.random() * 240)
        bought_props = {
            "order_id": order_id,
            "amount": amount,
            "currency": "USD",
            "sku": product.sku,
            "name": product.name,
            "quantity": quantity,
        }
        if not self.emit(contact, bought, "purchase", bought_props):
            return
        self.purchases.append((bought, contact.index, bought_props))
        registers = 0.8 if contact.persona.name == "loyal" else 0.55
        if product.warranty_months and rng.random() < registers:
            registered = self._daytime(bought + 3 * _DAY + rng.expovariate(1 / (4 * _DAY)), contact)
            self._register(contact, registered, product, bought)

    def _register(
        self,
        contact: _Contact,
        t: int,
        product: _Product,
        bought: int | None,
        *,
        retail: bool = False,
    ) -> None:
        rng = self.rng
        if bought is None:  # bought offline some time before registering
            bought = t - int(rng.random() * 45 * _DAY) - _HOUR
        self.counters["device"] += 1
        number = self.counters["device"]
        warranty = product.warranty_months
        if retail and rng.random() < 0.3:
            warranty = 12  # shop-bought: the base warranty, no extension
        serial = f"{product.sku.split('-')[1][:3]}{number:07d}{int(rng.random() * 36**3):03X}"
        self.emit(
            contact,
            t,
            "product.registered",
            {
                "product_id": f"p-{number:07d}",
                "sku": product.sku,
                "name": product.name,
                "serial": serial,
                "purchased_at": self.ts(bought),
                "warranty_months": warranty,
                "price": product.price,
            },
        )

    def _ticket(self, contact: _Contact, t: int) -> None:
        rng = self.rng
        self.counters["ticket"] += 1
        ticket_id = f"t-{self.counters['ticket']:06d}"
        subject = _TICKET_SUBJECTS[int(rng.random() * len(_TICKET_SUBJECTS))]
        urgent = 2.0 if contact.persona.name == "churning" else 1.0
        priority = _PRIORITIES[
            bisect_right(_cum(30, 50, 15 * urgent, 5 * urgent), rng.random() * (80 + 20 * urgent))
        ]
        opened = self._page_views(contact, t, ["/support"]) + 60 + int(rng.random() * 300)
        props = {"ticket_id": ticket_id, "status": "open", "subject": subject, "priority": priority}
        if self.emit(contact, opened, "support.ticket", props) and rng.random() < 0.92:
            closed = opened + 1200 + int(rng.expovariate(1 / (1.5 * _DAY)))
            if self.emit(contact, closed, "support.ticket", {**props, "status": "closed"}):
                self.closed_tickets.append((closed, contact.index, props))

    def _nps(self, contact: _Contact, t: int, survey: str, channel: str) -> None:
        rng = self.rng
        score = bisect_right(contact.persona.nps_cum, rng.random() * contact.persona.nps_cum[-1])
        props: dict[str, Any] = {"score": score, "survey": survey, "channel": channel}
        if rng.random() < 0.3:
            category = "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"
            comments = _NPS_COMMENTS[category]
            comment = comments[int(rng.random() * len(comments))]
            if comment:
                props["comment"] = comment
        self.emit(contact, t, "nps.answered", props)

    def _upgrades(self, contact: _Contact, plan: str) -> None:
        rng, persona = self.rng, contact.persona
        t = contact.signup
        level = _PLANS.index(plan)
        while level < len(_PLANS) - 1 and rng.random() < persona.upgrade_p:
            t = self._daytime(t + 5 * _DAY + rng.expovariate(1 / (30 * _DAY)), contact)
            level += 1
            if not self.emit(contact, t, "contact.updated", {"plan": _PLANS[level]}):
                return
        if rng.random() < 0.02:  # changed jobs
            company = f"{_COMPANY_STEMS[int(rng.random() * len(_COMPANY_STEMS))]} Group"
            t = self._daytime(contact.signup + rng.random() * (self.end - contact.signup), contact)
            self.emit(contact, t, "contact.updated", {"company": company})


# -- extras: carts, birthdays, CSAT surveys, acquisition spend --------------------------------
#
# Drawn from a generator of their own (``"{seed}:extras"``) after the base history is built, and
# given ids of their own (``ev-{seed}-x...``): the base events, their ids and which of them come
# late or twice are exactly what they were before these existed.

#: Cost per signup by acquisition channel, in USD (organic costs nothing and is not listed).
_CHANNEL_CAC = {"ads": 42.0, "partner": 65.0, "referral": 18.0}


def _extras(history: _History, seed: int) -> list[_Raw]:
    rng = random.Random(f"{seed}:extras")
    out: list[_Raw] = []
    contacts = history.contacts
    end = history.end
    carts = 0

    def emit(contact: _Contact, t: int, type_: str, properties: dict[str, Any]) -> bool:
        if contact.signup < t < end:
            out.append((t, contact.index, type_, properties))
            return True
        return False

    def cart(contact: _Contact, t: int, lines: list[tuple[_Product, int]], n: int) -> bool:
        cart_id = f"k-{n:07d}"
        items = [{"sku": p.sku, "name": p.name, "quantity": q, "price": p.price} for p, q in lines]
        return emit(
            contact,
            t,
            "cart.updated",
            {
                "cart_id": cart_id,
                "items": items,
                "items_count": sum(q for _, q in lines),
                "total": round(sum(p.price * q for p, q in lines), 2),
                "currency": "USD",
                "cart_url": f"https://shop.example/cart/{cart_id}",
            },
        )

    by_sku = {p.sku: p for p in _CATALOG}
    # A cart before every purchase (minutes before: the purchase follows it).
    for bought, index, props in history.purchases:
        carts += 1
        product = by_sku[props["sku"]]
        cart(
            contacts[index],
            bought - 120 - int(rng.random() * 900),
            [(product, props["quantity"])],
            carts,
        )
    for contact in contacts:
        persona = contact.persona
        # Abandoned carts: a little more often than purchases, fading like the contact does.
        t = float(contact.signup)
        rate = persona.purchase_rate * 1.2 / _DAY
        while True:
            t += rng.expovariate(rate)
            if t >= end:
                break
            decay = persona.decay_days * _DAY
            if decay and rng.random() > math.exp(-(t - contact.signup) / decay):
                continue
            carts += 1
            lines = [(_pick(rng, _CATALOG, _CATALOG_CUM), 1)]
            if rng.random() < 0.3:
                lines.append((_pick(rng, _CATALOG, _CATALOG_CUM), 1 + int(rng.random() * 2)))
            if cart(contact, int(t), lines[:1], carts) and len(lines) > 1:
                cart(contact, int(t) + 600 + int(rng.random() * 4800), lines, carts)
        # Birthdays: most contacts complete their profile within days of signing up.
        if rng.random() < 0.55:
            year = DEFAULT_START.year - 18 - int(rng.random() * 52)
            month = 1 + int(rng.random() * 12)
            day = 1 + int(rng.random() * monthrange(year, month)[1])
            when = contact.signup + _HOUR + int(rng.random() * 3 * _DAY)
            emit(
                contact, when, "contact.updated", {"birthday": f"{year:04d}-{month:02d}-{day:02d}"}
            )
    # CSAT: a third of closed tickets get an answer (1-5), lower from churning contacts.
    for closed, index, props in history.closed_tickets:
        contact = contacts[index]
        if rng.random() >= 0.35:
            continue
        low = contact.persona.name in ("churning", "dormant")
        weights = _cum(3, 3, 4, 5, 3) if low else _cum(1, 1, 3, 8, 12)
        score = 1 + bisect_right(weights, rng.random() * weights[-1])
        answered = closed + _HOUR + int(rng.expovariate(1 / (6 * _HOUR)))
        emit(
            contact,
            answered,
            "survey.answered",
            {
                "survey": "csat",
                "kind": "csat",
                "score": score,
                "scale": 5,
                "ticket_id": props["ticket_id"],
            },
        )
    return out


def _spend(history: _History, seed: int) -> list[tuple[int, str, dict[str, Any]]]:
    """Weekly acquisition spend per paid channel, in line with that week's signups from it:
    ``(time, contact id, properties)``, one pseudo-contact per channel (``channel:ads``)."""
    rng = random.Random(f"{seed}:spend")
    weeks = max(1, -(-history.end // (7 * _DAY)))
    signups = {(w, ch): 0 for w in range(weeks) for ch in _CHANNEL_CAC}
    for at, source in history.sources:
        if source in _CHANNEL_CAC:
            signups[(at // (7 * _DAY), source)] += 1
    out = []
    for week in range(weeks):
        at = min(history.end - 1, (week + 1) * 7 * _DAY - 1)
        for channel, cac in _CHANNEL_CAC.items():
            count = signups[(week, channel)]
            amount = round(cac * count * (0.8 + 0.4 * rng.random()) + 50 * rng.random(), 2)
            out.append(
                (
                    at,
                    f"channel:{channel}",
                    {
                        "channel": channel,
                        "amount": amount,
                        "currency": "USD",
                        "period_start": history.ts(week * 7 * _DAY),
                        "period_end": history.ts(min(history.end, (week + 1) * 7 * _DAY)),
                        "signups": count,
                    },
                )
            )
    return out


def generate_events(
    contacts: int = 3000,
    *,
    months: int = 6,
    seed: int = 7,
    start: datetime | None = None,
    late_fraction: float = 0.01,
    duplicate_fraction: float = 0.002,
) -> Iterator[dict[str, Any]]:
    """A deterministic, realistic stream of event dicts for ``contacts`` people over ``months``.

    About 20 events per contact on average over 6 months. The whole history is built (and
    sorted) when the first event is asked for, about 0.3 KB per event, then yielded in
    ``occurred_at`` order, except that ``late_fraction`` of the events (never a signup) come
    some minutes to days late and ``duplicate_fraction`` are sent a second time, identical.
    Changing those two fractions does not change which events exist, only their order.
    ``start`` defaults to 2026-05-01T00:00:00Z; a naive ``start`` is taken as UTC.
    """
    if contacts < 0:
        raise ValueError("contacts must be >= 0")
    if months < 1:
        raise ValueError("months must be >= 1")
    if not (0 <= late_fraction <= 1 and 0 <= duplicate_fraction <= 1):
        raise ValueError("late_fraction and duplicate_fraction must lie between 0 and 1")
    start = DEFAULT_START if start is None else start
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    start_epoch = math.ceil(start.timestamp())
    start = datetime.fromtimestamp(start_epoch, UTC)
    end = int((_add_months(start, months) - start).total_seconds())
    return _stream(contacts, seed, start, start_epoch, end, late_fraction, duplicate_fraction)


def _stream(
    contacts: int,
    seed: int,
    start: datetime,
    start_epoch: int,
    end: int,
    late_fraction: float,
    duplicate_fraction: float,
) -> Iterator[dict[str, Any]]:
    history = _History(random.Random(seed), start_epoch, end, start)
    history.add_contacts(contacts)
    raw = history.events
    raw.sort(key=itemgetter(0))  # stable: same-second events keep their causal order
    ids = [c.id for c in history.contacts]
    ts = history.ts
    extras: list[dict[str, Any]] = [
        {
            "id": f"ev-{seed}-x{n:08d}",
            "contact_id": ids[contact],
            "type": type_,
            "occurred_at": ts(t),
            "properties": properties,
            "_t": t,
        }
        for n, (t, contact, type_, properties) in enumerate(
            sorted(_extras(history, seed), key=itemgetter(0))
        )
    ]
    if contacts:
        extras += [
            {
                "id": f"ev-{seed}-s{n:06d}",
                "contact_id": who,
                "type": "spend",
                "occurred_at": ts(t),
                "properties": properties,
                "_t": t,
            }
            for n, (t, who, properties) in enumerate(_spend(history, seed))
        ]
    extras.sort(key=itemgetter("_t"))
    extra_times = [int(e.pop("_t")) for e in extras]
    pending = 0  # the next extra to yield, merged in time order
    # A separate generator, so the fractions change the order but never the events.
    disorder = random.Random(f"{seed}:disorder")
    held: list[tuple[int, int, dict[str, Any]]] = []  # (release time, tie-breaker, event)
    for n, (t, contact, type_, properties) in enumerate(raw):
        event = {
            "id": f"ev-{seed}-{n:08d}",
            "contact_id": ids[contact],
            "type": type_,
            "occurred_at": ts(t),
            "properties": properties,
        }
        while held and held[0][0] <= t:
            yield heapq.heappop(held)[2]
        while pending < len(extras) and extra_times[pending] < t:
            yield extras[pending]
            pending += 1
        if duplicate_fraction and disorder.random() < duplicate_fraction:
            resend = t + 1 + int(disorder.expovariate(1 / 600))
            copy = {**event, "properties": json.loads(json.dumps(properties))}
            heapq.heappush(held, (resend, n, copy))
        if late_fraction and type_ != "signup" and disorder.random() < late_fraction:
            delay = 300 + int(min(3 * _DAY, disorder.expovariate(1 / (6 * _HOUR))))
            heapq.heappush(held, (t + delay, n, event))
            continue
        yield event
    while held:
        yield heapq.heappop(held)[2]
    yield from extras[pending:]


def write_jsonl(
    events: Iterable[dict[str, Any] | str | BaseModel],
    path_or_file: str | os.PathLike[str] | IO[str],
) -> int:
    """Write one JSON object per line; returns how many lines were written.

    ``events`` may mix dicts (serialised compactly, UTF-8 kept as is), objects with
    ``model_dump_json`` (``Event``) and ready-made lines (``str``, e.g. from ``bad_lines``).
    ``path_or_file`` is a path (created or truncated) or an open text file (left open).
    """
    if isinstance(path_or_file, str | os.PathLike):
        with open(path_or_file, "w", encoding="utf-8", newline="\n") as out:
            return write_jsonl(events, out)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    write = path_or_file.write
    count = 0
    for event in events:
        if isinstance(event, str):
            line = event.rstrip("\n")
        elif isinstance(event, dict):
            line = dumps(event)
        else:
            line = event.model_dump_json()
        write(line + "\n")
        count += 1
    return count


def bad_lines(n: int = 4, seed: int = 7) -> list[str]:
    """``n`` malformed JSON Lines, to show how ingestion rejects bad input and keeps the rest.

    They cycle through: a missing ``contact_id``, a timestamp without offset, invalid JSON
    (a truncated line) and an unknown top-level field. Each is otherwise plausible, so the only
    reason for its rejection is the one it illustrates.
    """
    rng = random.Random(f"{seed}:bad")
    lines = []
    for k in range(n):
        contact_id = f"c{1 + int(rng.random() * 500):05d}"
        day, hour, minute = (
            1 + int(rng.random() * 28),
            8 + int(rng.random() * 12),
            int(rng.random() * 60),
        )
        when = f"2026-05-{day:02d}T{hour:02d}:{minute:02d}:00"
        event: dict[str, Any] = {
            "id": f"bad-{seed}-{k:04d}",
            "contact_id": contact_id,
            "type": "purchase",
            "occurred_at": when + "Z",
            "properties": {"order_id": f"o-bad-{k:04d}", "amount": 42.5, "currency": "USD"},
        }
        kind = k % 4
        if kind == 0:
            del event["contact_id"]
        elif kind == 1:
            event["occurred_at"] = when  # no "Z", no offset: ambiguous
        elif kind == 3:
            event["customer_email"] = "someone@example.com"
        line = json.dumps(event, separators=(",", ":"))
        if kind == 2:
            line = line[: -len(line) // 3]  # cut off mid-object, as a crashed exporter would
        lines.append(line)
    return lines
