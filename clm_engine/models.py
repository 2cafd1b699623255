"""The data clm-engine works on: contacts and the events that change them.

The event's JSON shape is fixed, because CRMs send it::

    {"id": "...", "contact_id": "...", "type": "purchase",
     "occurred_at": "2026-11-02T10:15:00Z", "properties": {...}}

``id`` is optional: when missing it is derived from a hash of the rest, so a CRM that resends
the same event without an id is still deduplicated.

What an event may hold is bounded (``docs/events.md``, "Limits"): times within
``EARLIEST_TIME``..``LATEST_TIME``, finite numbers no larger than ``MAX_NUMBER``, ids without
control characters, properties of bounded depth and size. A value past a bound is a validation
error naming the field, never an exception from deep inside the engine.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

DEFAULT_STAGES: tuple[str, ...] = (
    "awareness",
    "consideration",
    "purchase",
    "retention",
    "advocacy",
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# -- Limits: what an event may hold ------------------------------------------------------------

#: The supported range of event times: ``EARLIEST_TIME <= occurred_at < LATEST_TIME``. Python's
#: datetimes end at years 1 and 9999, and the engine adds durations to event times (relative
#: rules, delays, cooldowns, windows: each at most ``MAX_DURATION``). Bounds three centuries
#: apart hold every real customer event and leave thousands of years of headroom on each side,
#: so no such arithmetic can overflow; 1900 also keeps out the zero dates some systems send for
#: "unknown" (``0001-01-01``).
EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)
SUPPORTED_TIMES = "from 1900-01-01T00:00:00Z to 2200-01-01T00:00:00Z (exclusive)"
_OUTSIDE_TIMES = f"is outside the supported range of times, {SUPPORTED_TIMES}"

#: The longest duration a ruleset may give (a delay, cooldown, window or relative offset): a
#: century is past any lifecycle rule, and keeps ``time +/- duration`` representable for every
#: supported time.
MAX_DURATION = timedelta(days=36_525)

#: The largest magnitude of a number in event properties: 2**53 - 1, the largest integer a
#: double (JavaScript's numbers, SQLite's REAL, a Python float) holds exactly, so every reader
#: of the JSON sees the number that was sent. It is far beyond any real amount of money, and no
#: realistic count of such numbers sums to infinity, which JSON cannot store (a revenue total
#: would become null). Bigger ids must be sent as strings.
MAX_NUMBER = 2**53 - 1

#: How deeply objects and lists may nest in ``properties``. JSON text stops at about 200 levels
#: in pydantic's parser, but a dict handed to the library has no limit, and encoding it (the id
#: hash, the store) recurses until Python's RecursionError. No CRM needs more than a few levels.
MAX_DEPTH = 32

#: Characters of text (strings and keys together) in one event's ``properties``, and values in
#: them: an event is a fact about a contact, not a document store; this keeps a batch of 10,000
#: events within memory and every row far below SQLite's 1 GB value limit.
MAX_TEXT = 1_000_000
MAX_VALUES = 100_000

# C0 and C1 control characters, the Unicode line and paragraph separators, and unpaired
# surrogates (which cannot be encoded as UTF-8 at all). In an id they break lookups: SQLite's
# JSON functions end a string at NUL, so a contact id with NUL was never found again.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# An id: no control characters (as above) anywhere, no whitespace at either end. A pattern, so
# that pydantic checks it in Rust at no cost to ingestion; describe_validation_error() names
# the offending character when it fails.
_ID_PATTERN = (
    r"^[^\s\x00-\x1F\x7F-\x9F]"
    r"(?:[^\x00-\x1F\x7F-\x9F\u2028\u2029]*[^\s\x00-\x1F\x7F-\x9F])?$"
)

Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=_ID_PATTERN)]
EventType = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z][A-Za-z0-9_.:-]*$")
]
# A stored contact's id: checked as an Identifier when its first event came in, and not again
# on every read, so a database written before the control-character check still loads.
_StoredIdentifier = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]


def shift_time(moment: datetime, delta: timedelta) -> datetime | None:
    """``moment + delta``, or None when that is not a supported time (or not a datetime at all:
    past year 9999 or before year 1).

    For times computed from dates the engine does not control (a contact attribute, a plugin's
    fact): ``9999-12-31`` as "never" is a common way to write a date, and adding to it
    overflows.
    """
    try:
        shifted = moment + delta
    except OverflowError:
        return None
    return shifted if EARLIEST_TIME <= shifted < LATEST_TIME else None


def _property_error(path: list[Any], reason: str) -> PydanticCustomError:
    """The error for the value at ``path`` (``items[2].price``), shown short and printable."""
    steps = [_path_step(step) for step in path]
    if len(steps) > 8:
        steps = [*steps[:4], f"[...{len(steps) - 6} more...]", *steps[-2:]]
    where = "".join(steps).lstrip(".")
    return PydanticCustomError(
        "property_invalid", "{path}: {reason}", {"path": where, "reason": reason}
    )


def _path_step(step: Any) -> str:
    if type(step) is int:
        return f"[{step}]"
    text = str(step)
    if not text.isprintable() or len(text) > 40:  # a key is shown, not trusted
        text = repr(text[:40]).encode("ascii", "backslashreplace").decode()
    return f".{text}"


def _number_problem(value: int | float) -> str | None:
    """Why a number cannot be a property value, or None when it can."""
    if -MAX_NUMBER <= value <= MAX_NUMBER:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return (
                f"{json_constant(value)} is not a number JSON can hold (JSON has no NaN or "
                "Infinity, and a number too large for a float becomes Infinity)"
            )
        shown = repr(value)
    else:
        shown = str(value) if value.bit_length() < 100 else "an integer of over 30 digits"
    return (
        f"{shown} is out of range: numbers must lie between -{MAX_NUMBER:,} and "
        f"{MAX_NUMBER:,} (2**53 - 1); send an id this large as a string"
    )


def json_constant(value: float) -> str:
    """How JSON-with-extensions writes a non-finite float: ``NaN``, ``Infinity``, ``-Infinity``."""
    if value != value:
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def check_properties(properties: dict[str, Any]) -> None:
    """Raise a validation error naming the path of the first property value past a limit.

    The common event (a few flat properties: text, numbers) is checked in one cheap pass;
    anything nested, long or unusual is walked with a stack, not recursion, so that depth
    itself cannot crash the check. Values of other Python types (a library caller's datetime)
    are left to the serializer, as before.
    """
    text = 0
    for key, value in properties.items():
        kind = type(value)
        if kind is str:
            text += len(value)
            if not value.isascii() and _SURROGATE.search(value):
                break
        elif kind is float or kind is int:
            if not -MAX_NUMBER <= value <= MAX_NUMBER:  # NaN fails every comparison
                break
        elif value is not None and kind is not bool:
            break  # nested or unusual: the full walk
        if not key.isascii() and _SURROGATE.search(key):
            break
        text += len(key)
    else:
        if text <= MAX_TEXT and len(properties) <= MAX_VALUES:
            return
    _walk_properties(properties)


def _walk_properties(properties: dict[str, Any]) -> None:
    """Every value of ``properties``, however nested: raise at the first past a limit."""
    text = values = 0
    stack: list[tuple[dict[Any, Any] | list[Any] | tuple[Any, ...], list[Any]]] = [(properties, [])]
    while stack:
        node, path = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            values += 1
            if type(key) is str:
                text += len(key)
                if not key.isascii() and _SURROGATE.search(key):
                    raise _property_error([*path, key], "the key holds an unpaired surrogate")
            kind = type(value)
            if kind is str or isinstance(value, str):
                text += len(value)
                if not value.isascii() and _SURROGATE.search(value):
                    raise _property_error(
                        [*path, key], "holds an unpaired surrogate, which is not text"
                    )
            elif isinstance(value, dict | list | tuple):
                if len(path) >= MAX_DEPTH:  # this one would be level len(path) + 1
                    raise _property_error([*path, key], f"nested more than {MAX_DEPTH} levels deep")
                stack.append((value, [*path, key]))
            elif value is None or kind is bool:
                continue
            elif isinstance(value, int | float):  # int, float and their subclasses
                problem = _number_problem(value)
                if problem is not None:
                    raise _property_error([*path, key], problem)
        if text > MAX_TEXT or values > MAX_VALUES:
            raise PydanticCustomError(
                "properties_too_large",
                "more than {limit} (the limit for one event)",
                {
                    "limit": f"{MAX_TEXT:,} characters of text"
                    if text > MAX_TEXT
                    else f"{MAX_VALUES:,} values"
                },
            )


#: Recent answers of ``utc_text``: an event's time is written as text five or six times on its
#: way in (its row, each decision's trace and outbox row, the contact's activity), and a
#: lookup costs a twentieth of formatting. Equal moments (10:00Z and 11:00+01:00 are equal,
#: with one hash) have one UTC text, so the key is safe; cleared when it grows too big.
_UTC_TEXTS: dict[datetime, str] = {}


def utc_text(moment: datetime) -> str:
    """A fixed-width UTC timestamp whose text order is its time order (for indexed columns)."""
    text = _UTC_TEXTS.get(moment)
    if text is None:
        text = _format_utc(moment)
        if len(_UTC_TEXTS) >= 65_536:
            _UTC_TEXTS.clear()
        _UTC_TEXTS[moment] = text
    return text


#: A time in the store's own form but for the fraction, as clients usually send one:
#: ``2026-05-01T03:18:19Z`` or ``2026-05-01T03:18:19.250000Z`` (ASCII digits only).
_UTC_AS_SENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z")


def _in_utc(moment: datetime) -> datetime:
    """An aware time in Python's own ``UTC`` (never pydantic's equal ``TzInfo``), within the
    supported range; ``ValueError`` outside it (``0001-01-01T00:00:00+14:00`` has no UTC)."""
    if moment.tzinfo is not UTC:
        try:
            moment = moment.astimezone(UTC) if moment.utcoffset() else moment.replace(tzinfo=UTC)
        except OverflowError:
            raise ValueError(_OUTSIDE_TIMES) from None
    # In UTC now, so the year says it: several times cheaper than comparing with the bounds
    # (which calls utcoffset() on both sides), and this runs for every event.
    if not EARLIEST_TIME.year <= moment.year < LATEST_TIME.year:
        raise ValueError(_OUTSIDE_TIMES)
    return moment


def _text_as_sent(sent: str, moment: datetime) -> None:
    """Remember ``sent`` as ``moment``'s ``utc_text`` when it is already in that form
    (``.000000`` added for whole seconds). It is checked by reading it back, which costs a
    fifth of formatting the time, a cost every event otherwise pays once."""
    if _UTC_AS_SENT.fullmatch(sent) is None:
        return
    text = sent if len(sent) == 27 else sent[:19] + ".000000Z"
    try:
        same = datetime.fromisoformat(text) == moment
    except ValueError:  # a second of 60, an hour of 24 ...: formatted as usual
        return
    if same:
        if len(_UTC_TEXTS) >= 65_536:
            _UTC_TEXTS.clear()
        _UTC_TEXTS[moment] = text


def _format_utc(moment: datetime) -> str:
    # isoformat() is several times faster than strftime() on this hot path, and the engine's
    # times are UTC already, so the offset is almost always "+00:00".
    text = moment.isoformat(timespec="microseconds")
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def utc_seconds(moment: datetime) -> str:
    """A UTC timestamp to the second, as reducers store them: ``2026-11-02T10:15:00Z``."""
    text = moment.isoformat(timespec="seconds")
    if text.endswith("+00:00"):
        return text[:-6] + "Z"
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def derive_event_id(
    contact_id: str, type: str, occurred_at_text: str, properties: dict[str, Any]
) -> str:
    """The id of an event that came without one: a hash of everything else it says (its
    time as its ``utc_text``, so every notation of one moment gives one id)."""
    canonical = json.dumps(
        [contact_id, type, occurred_at_text, properties],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return "h-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


@lru_cache(maxsize=1024)
def _known_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


class Event(BaseModel):
    """Something that happened to a contact, at a time, with free-form properties."""

    # (Not in the docstring, which is the HTTP API's description of an event.) Treat an event
    # as immutable once made: its time text (``occurred_at_text``) is fixed as it is
    # validated, so an event at another time is a new event (``Event(...)``,
    # ``model_validate``), never ``model_copy(update=...)`` or an assignment.

    model_config = ConfigDict(extra="forbid")

    id: Identifier | None = None
    contact_id: Identifier
    type: EventType
    occurred_at: AwareDatetime
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at", mode="wrap")
    @classmethod
    def _to_utc(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> datetime:
        """UTC, and within the supported range (``0001-01-01T00:00:00+14:00`` has no UTC).

        Always Python's own ``UTC`` object, never pydantic's equal ``TzInfo``: comparing and
        formatting times is then several times cheaper, and event times are compared and
        formatted all along the way in. A time sent in the store's own UTC form (``...Z``,
        whole seconds or microseconds) gives its text too (:func:`_text_as_sent`)."""
        moment = _in_utc(handler(value))
        if type(value) is str:
            _text_as_sent(value, moment)
        return moment

    @field_validator("properties")
    @classmethod
    def _check_properties(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value:
            check_properties(value)
        return value

    @model_validator(mode="after")
    def _complete(self) -> Event:
        """The time's text, now (every event is written with it, and the cached property's
        first read costs more than this), and the id of an event that came without one."""
        text = self.__dict__["occurred_at_text"] = utc_text(self.occurred_at)
        if self.id is None:
            self.id = derive_event_id(self.contact_id, self.type, text, self.properties)
        return self

    @cached_property
    def occurred_at_text(self) -> str:
        """``occurred_at`` as fixed-width UTC text, computed once: stores and reducers use it."""
        return utc_text(self.occurred_at)

    def to_json(self) -> str:
        """The event in its fixed JSON shape, with its id."""
        return self.model_dump_json()

    @classmethod
    def stored(
        cls,
        event_id: str,
        contact_id: str,
        type_: str,
        occurred_at_text: str,
        properties: dict[str, Any],
    ) -> Event:
        """An event as a store holds it: validated when it came in, so built without a second
        pass (several times faster than ``model_construct``, which re-reads every field), with
        its stored time text kept as ``occurred_at_text``."""
        return _unchecked_event(
            event_id,
            contact_id,
            type_,
            datetime.fromisoformat(occurred_at_text),
            occurred_at_text,
            properties,
        )


_ALL_FIELDS = frozenset(Event.model_fields)


def _unchecked_event(
    event_id: str,
    contact_id: str,
    type_: str,
    occurred_at: datetime,
    occurred_at_text: str,
    properties: dict[str, Any],
) -> Event:
    """An ``Event`` of values already known to be valid, as ``model_construct`` makes one."""
    event = Event.__new__(Event)
    object.__setattr__(
        event,
        "__dict__",
        {
            "id": event_id,
            "contact_id": contact_id,
            "type": type_,
            "occurred_at": occurred_at,
            "properties": properties,
            "occurred_at_text": occurred_at_text,  # the cached property, known already
        },
    )
    object.__setattr__(event, "__pydantic_fields_set__", set(_ALL_FIELDS))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


#: The shapes :func:`made_event` takes without pydantic: the plain characters of a type, and
#: of an id (printable ASCII, no space at either end: every such text is an ``Identifier``).
_PLAIN_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,99}")


def _plain_id(value: object) -> bool:
    return (
        type(value) is str
        and 0 < len(value) <= 200
        and value.isascii()
        and value.isprintable()
        and value[0] != " "
        and value[-1] != " "
    )


def made_event(
    event_id: str, contact_id: str, type_: str, occurred_at: datetime, properties: Any
) -> Event:
    """An event the engine makes (an action's effect, dated by its decision).

    Its parts come from plugins and rulesets, so they are checked; in the common shape (plain
    ids and type, an aware time, text keys, properties within limits) without pydantic's second
    look at every field, else by pydantic, which raises naming what is wrong. A property test
    holds the two to the same events."""
    try:  # what the model's validator does to an aware time (a parsed contact's, an offset)
        moment = _in_utc(occurred_at) if occurred_at.utcoffset() is not None else None
    except ValueError:
        moment = None  # outside the supported range: pydantic raises below, naming the field
    if (
        moment is not None
        and _plain_id(event_id)
        and _plain_id(contact_id)
        and type(type_) is str
        and _PLAIN_TYPE.fullmatch(type_) is not None
        and type(properties) is dict
        and all(type(key) is str for key in properties)
    ):
        try:
            if properties:
                check_properties(properties)
        except PydanticCustomError:
            pass  # pydantic raises it below, with the field's name
        else:
            return _unchecked_event(
                event_id, contact_id, type_, moment, utc_text(moment), dict(properties)
            )
    return Event(
        id=event_id,
        contact_id=contact_id,
        type=type_,
        occurred_at=occurred_at,
        properties=properties,
    )


class Contact(BaseModel):
    """A person the lifecycle is about, as the engine knows them now.

    Reducers mutate a contact in place while folding events into it. ``metrics`` holds what
    reducers compute (orders, revenue, email engagement ...); ``attributes`` holds what the
    CRM says about the person (name, company, plan ...).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    id: _StoredIdentifier
    email: str | None = None
    stage: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    scores: dict[str, float] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    consent: dict[str, bool] = Field(default_factory=dict)
    timezone: str = "UTC"
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    last_event_at: AwareDatetime | None = None

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(f"{value!r} is not an email address")
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        if not _known_timezone(value):
            raise ValueError(f"{value!r} is not an IANA timezone name (like 'Europe/Paris')")
        return value

    def add_tag(self, tag: str) -> None:
        if tag not in self.tags:
            self.tags.append(tag)
            self.tags.sort()

    def remove_tag(self, tag: str) -> None:
        if tag in self.tags:
            self.tags.remove(tag)


def describe_validation_error(error: Exception) -> str:
    """One line naming each bad field and what was expected, from a pydantic ValidationError."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    parts = []
    for item in error.errors(include_url=False):
        location = ".".join(str(step) for step in item["loc"]) or "(event)"
        kind = item["type"]
        if kind == "missing":
            parts.append(f"{location}: is required but missing")
        elif kind == "extra_forbidden":
            parts.append(f"{location}: is not a known field")
        elif kind == "timezone_aware":
            parts.append(
                f"{location}: needs an ISO 8601 time with an offset, like "
                f"'2026-11-02T10:15:00Z' (got {item['input']!r})"
            )
        elif kind == "json_invalid":
            reason = item["ctx"].get("error", "parse error")
            if reason.startswith("recursion limit exceeded"):
                reason = f"nested too deeply{reason[len('recursion limit exceeded') :]}"
            parts.append(f"not valid JSON ({reason})")
        elif kind == "property_invalid":
            parts.append(f"{location}.{item['ctx']['path']}: {item['ctx']['reason']}")
        elif kind == "string_pattern_mismatch" and _CONTROL.search(str(item["input"])):
            found = _CONTROL.search(str(item["input"]))
            assert found is not None
            parts.append(
                f"{location}: contains the control character U+{ord(found.group()):04X} at "
                f"position {found.start()}; ids and types must be printable text "
                f"(got {_shorten(repr(item['input']))})"
            )
        else:
            got = item.get("input")
            shown = f" (got {_shorten(repr(got))})" if not isinstance(got, dict | list) else ""
            message = item["msg"].removeprefix("Value error, ").rstrip(".")
            parts.append(f"{location}: {message}{shown}")
    return "; ".join(parts)


def _shorten(text: str, limit: int = 80) -> str:
    """A value as an error message shows it: a 10 MB string is not repeated in full."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}...{text[-10:]} ({len(text):,} characters)"


# -- Rulesets: the JSON language ops teams write ---------------------------------------------
#
# The keys are fixed (other tools write them): ruleset, version, rules, id, description, when,
# if, then, limit, priority, enabled; leaves fact / op / value; all / any / not; action / with.
# The shipped JSON Schema (clm_engine/rulesets/ruleset.schema.json) is generated from these
# models, so the two cannot disagree; ``docs/rulesets.md`` is the reference for people.

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
FactPath = Annotated[
    str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*$")
]
Scalar = str | int | float | bool | None


class Duration(BaseModel):
    """A length of time: ``{"days": 30}``, ``{"hours": 12}``; or an ISO 8601 string ``"P30D"``."""

    model_config = ConfigDict(extra="forbid")

    weeks: Annotated[int, Field(ge=0)] = 0
    days: Annotated[int, Field(ge=0)] = 0
    hours: Annotated[int, Field(ge=0)] = 0
    minutes: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _at_most_max_duration(self) -> Duration:
        seconds = ((self.weeks * 7 + self.days) * 24 + self.hours) * 60 * 60 + self.minutes * 60
        _check_duration_seconds(seconds)
        return self


def _check_duration_seconds(seconds: int | float) -> None:
    """Durations are added to times: past ``MAX_DURATION`` that could leave the datetime range."""
    if seconds > MAX_DURATION.total_seconds():
        raise PydanticCustomError("duration_too_long", TOO_LONG)


TOO_LONG = f"is longer than the longest duration allowed, {MAX_DURATION.days:,} days (a century)"


def _iso_duration(text: str) -> str:
    if text in ("P", "PT") or text.endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration (like 'P30D' or 'PT12H')")
    try:
        delta = _iso_timedelta(text)
    except ValueError:  # pydantic's ValidationError is one: digits that are no timedelta
        raise ValueError(f"{text!r} is not an ISO 8601 duration (like 'P30D' or 'PT12H')") from None
    _check_duration_seconds(delta.total_seconds())
    return text


DurationSpec = Annotated[
    Duration
    | Annotated[
        str,
        Field(pattern=r"^P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$"),
        AfterValidator(_iso_duration),
    ],
    Field(description='A duration: {"days": 30} or ISO 8601 like "P30D", "PT12H", "P1W".'),
]


_CALENDAR_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")


def fixed_days(text: str) -> int | None:
    """The days to write for a calendar duration (``"P1Y"`` -> 365, ``"P1M"`` -> 30), or None
    when ``text`` has no years or months: where a duration is a fixed length, what to write."""
    found = _CALENDAR_DURATION.match(text)
    if found is None or not (found.group(1) or found.group(2)):
        return None
    years, months, weeks, days = (int(part or 0) for part in found.groups())
    return years * 365 + months * 30 + weeks * 7 + days


def duration_to_timedelta(spec: Duration | str) -> timedelta:
    """The ``timedelta`` of a validated duration spec."""
    if isinstance(spec, Duration):
        return timedelta(weeks=spec.weeks, days=spec.days, hours=spec.hours, minutes=spec.minutes)
    return _iso_timedelta(spec)


@lru_cache(maxsize=256)
def _iso_timedelta(text: str) -> timedelta:
    return _TIMEDELTA.validate_python(text)


_TIMEDELTA = TypeAdapter(timedelta)


class FactRef(BaseModel):
    """A value taken from another fact: ``{"fact": "contact.metrics.first_order_at"}``."""

    model_config = ConfigDict(extra="forbid")

    fact: FactPath


class Leaf(BaseModel):
    """One test: ``{"fact": "contact.metrics.orders_count", "op": "gte", "value": 2}``.

    ``value`` is a JSON value or ``{"fact": ...}``. ``args`` parameterises a computed fact (for
    ``events.count``: ``{"type": "page.viewed", "within": "P30D"}``). ``fact`` may be left out
    only for ``in_segment``.
    """

    model_config = ConfigDict(extra="forbid")

    fact: FactPath | None = None
    op: Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z][a-z0-9_]*$")]
    value: FactRef | Scalar | list[Scalar] | Duration = None
    args: dict[str, Any] | None = None


class All(BaseModel):
    model_config = ConfigDict(extra="forbid")

    all: Annotated[list[Condition], Field(min_length=1)]


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    any: Annotated[list[Condition], Field(min_length=1)]


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid")

    not_: Condition = Field(alias="not")


Condition = All | AnyOf | Not | Leaf


class EventTrigger(BaseModel):
    """``{"event": "purchase", "where": {...}}``: each event of that type (filtered)."""

    model_config = ConfigDict(extra="forbid")

    event: EventType
    where: Condition | None = None


class StageChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_: Name | list[Name] | None = Field(default=None, alias="from")
    to: Name | list[Name] | None = None


class StageTrigger(BaseModel):
    """``{"stage_changed": {"from": "awareness", "to": "consideration"}}``, either optional."""

    model_config = ConfigDict(extra="forbid")

    stage_changed: StageChange


class ScheduleTrigger(BaseModel):
    """``{"schedule": "0 9 * * MON", "timezone": "contact"}``: a cron schedule over all contacts."""

    model_config = ConfigDict(extra="forbid")

    schedule: Annotated[str, Field(min_length=9, max_length=100)]
    timezone: str = "UTC"
    stale_after: DurationSpec | None = Field(
        default=None,
        description="After downtime, a slot older than this is skipped (recorded), not run.",
    )


class RelativeTrigger(BaseModel):
    """``{"before": "product.warranty_ends_at", "days": 30}``: a time relative to a date fact."""

    model_config = ConfigDict(extra="forbid")

    before: FactPath | None = None
    after: FactPath | None = None
    days: Annotated[int, Field(ge=0)] = 0
    hours: Annotated[int, Field(ge=0)] = 0
    stale_after: DurationSpec | None = Field(
        default=None,
        description="After downtime, a fire time older than this is skipped (recorded), not run.",
    )

    @property
    def anchor(self) -> str:
        return self.before or self.after  # type: ignore[return-value]  # the validator requires one of before/after

    @property
    def offset(self) -> timedelta:
        """From the anchor date to the fire time: negative for ``before``."""
        delta = timedelta(days=self.days, hours=self.hours)
        return -delta if self.before else delta

    @model_validator(mode="after")
    def _one_anchor(self) -> RelativeTrigger:
        if (self.before is None) == (self.after is None):
            raise ValueError("give exactly one of 'before' or 'after' (the date fact)")
        _check_duration_seconds((self.days * 24 + self.hours) * 60 * 60)
        return self


#: ``every`` of a recurring trigger: years or months, 1 to 100 years (1,200 months).
CALENDAR_PERIOD = r"^P(?:[1-9][0-9]?Y|100Y|[1-9][0-9]{0,2}M|1[01][0-9]{2}M|1200M)$"


class RecurringTrigger(BaseModel):
    """``{"every": "P1Y", "on": "contact.attributes.birthday", "at": "09:00"}``: each
    anniversary of a date fact, at a time of day (see :mod:`clm_engine.recurring`)."""

    model_config = ConfigDict(extra="forbid")

    every: Annotated[str, Field(pattern=CALENDAR_PERIOD)]
    on: FactPath
    at: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "09:00"
    timezone: str = "contact"
    leap_day: Literal["feb28", "mar1"] = "feb28"
    stale_after: DurationSpec | None = Field(
        default=None,
        description="After downtime, an occurrence older than this is skipped (recorded).",
    )

    @property
    def anchor(self) -> str:
        return self.on

    @property
    def offset(self) -> timedelta:
        """Anchors count from the occurrence's fire time itself."""
        return timedelta(0)


Trigger = EventTrigger | StageTrigger | ScheduleTrigger | RelativeTrigger | RecurringTrigger


class ActionCall(BaseModel):
    """``{"action": "tag.add", "with": {"tag": "vip"}, "after": {"days": 3}}``.

    ``unless`` is a condition judged again when a delayed action falls due (``now`` is its due
    time): if it holds then, the action is skipped, and the skip is traced. ``if`` is judged
    when the rule fires; ``unless`` when the wait is over.
    """

    model_config = ConfigDict(extra="forbid")

    action: Annotated[
        str, Field(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
    ]
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    after: DurationSpec | None = None
    unless: Condition | None = None


class Limit(BaseModel):
    """How often a rule may fire for a contact.

    ``{"once_per": "contact"}``: once ever. ``{"cooldown": {"days": 7}}``: at most once per 7
    days. ``{"once_per": "event.properties.product_id"}``: once per entity named by a fact of
    the trigger. ``once_per`` and ``cooldown`` combine (at most once per 30 days per product).
    """

    model_config = ConfigDict(extra="forbid")

    once_per: Literal["contact"] | FactPath | None = None
    cooldown: DurationSpec | None = None


class ExperimentArm(BaseModel):
    """One arm of an experiment: its share of contacts and what it changes.

    ``with`` is merged over the ``with`` of each of the rule's actions for the contacts in
    this arm (a template, a subject per arm); a ``holdout`` arm gets no action at all."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: Name
    weight: Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)] = 1
    holdout: bool = False
    description: str = ""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class Goal(BaseModel):
    """A conversion goal: an event of type ``event`` (meeting ``where``, a condition on
    ``event.properties.*``) at most ``within`` after a contact's first exposure; ``revenue``
    names the goal event's property summed as revenue. Rules declare one to have conversions
    and revenue attributed to them (``docs/metrics.md``); experiments measure arms by the same
    shape. ``clm_engine.rulesets.goals`` reads it for the store."""

    model_config = ConfigDict(extra="forbid")

    event: EventType
    where: Condition | None = None
    within: DurationSpec = "P30D"
    revenue: FactPath | None = None


class Experiment(BaseModel):
    """A split of a rule's contacts into arms by a stable hash, with a goal to measure."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: str = ""
    arms: Annotated[list[ExperimentArm], Field(min_length=2, max_length=20)]
    control: Name | None = None
    goal: Goal
    level: Annotated[float, Field(gt=0, le=0.2)] = 0.05
    method: Literal["sequential", "fixed"] = "sequential"
    minimum_effect: Annotated[float, Field(gt=0, lt=1)] = 0.02
    sample_size: Annotated[int, Field(ge=2, le=1_000_000_000)] | None = None


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Name
    description: str = ""
    when: Trigger
    if_: Condition | None = Field(default=None, alias="if")
    then: Annotated[list[ActionCall], Field(min_length=1)]
    limit: Limit | None = None
    priority: int = 0
    enabled: bool = True
    experiment: Experiment | None = None
    goal: Goal | None = None


class Ruleset(BaseModel):
    """A named, versioned set of rules, as one JSON file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str | None = Field(default=None, alias="$schema")
    ruleset: Name
    version: Annotated[int, Field(ge=1)]
    description: str = ""
    stages: Annotated[list[Name], Field(min_length=2)] | None = None
    segments: dict[Name, Condition] = Field(default_factory=dict)
    trace: Literal["matches", "all"] = "matches"
    rules: list[Rule]
