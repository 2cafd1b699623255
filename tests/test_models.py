from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import TzInfo

from clm_engine import Contact, Event, EventError
from clm_engine.engine import parse_event
from clm_engine.models import made_event


def test_event_shape_round_trips_and_normalises_to_utc():
    event = Event.model_validate(
        {
            "id": "e1",
            "contact_id": "c1",
            "type": "purchase",
            "occurred_at": "2026-11-02T11:15:00+01:00",
            "properties": {"amount": 12.5},
        }
    )
    assert event.occurred_at.isoformat() == "2026-11-02T10:15:00+00:00"
    assert Event.model_validate_json(event.to_json()) == event


def test_missing_id_is_derived_from_the_rest_whatever_the_offset_notation():
    a = Event(contact_id="c1", type="signup", occurred_at="2026-11-02T10:15:00Z")
    b = Event(contact_id="c1", type="signup", occurred_at="2026-11-02T11:15:00+01:00")
    c = Event(contact_id="c1", type="signup", occurred_at="2026-11-02T10:15:01Z")
    assert a.id == b.id
    assert a.id != c.id


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"type": "x", "occurred_at": "2026-11-02T10:15:00Z"},
            "contact_id: is required but missing",
        ),
        ({"contact_id": "c1", "type": "x", "occurred_at": "2026-11-02T10:15:00"}, "with an offset"),
        ({"contact_id": "c1", "type": "x", "occurred_at": "yesterday"}, "occurred_at"),
        (
            {"contact_id": "c1", "type": "x", "occurred_at": "2026-11-02T10:15:00Z", "foo": 1},
            "foo: is not a known field",
        ),
        ({"contact_id": "", "type": "x", "occurred_at": "2026-11-02T10:15:00Z"}, "contact_id"),
        ({"contact_id": "c1", "type": "no spaces", "occurred_at": "2026-11-02T10:15:00Z"}, "type"),
        (
            {
                "contact_id": "c1",
                "type": "x",
                "occurred_at": "2026-11-02T10:15:00Z",
                "properties": [],
            },
            "properties",
        ),
    ],
)
def test_malformed_events_name_the_field(raw, message):
    with pytest.raises(EventError, match=message):
        parse_event(raw)


def test_json_text_that_is_not_an_object_is_rejected():
    with pytest.raises(EventError, match="not valid JSON"):
        parse_event("{nope")
    with pytest.raises(EventError):
        parse_event("[1, 2]")


def test_contact_rejects_unknown_and_wrongly_typed_fields():
    with pytest.raises(ValueError, match="nickname"):
        Contact.model_validate({"id": "c1", "nickname": "x"})
    with pytest.raises(ValueError, match="scores"):
        Contact.model_validate({"id": "c1", "scores": {"lead": "high"}})
    with pytest.raises(ValueError, match="IANA timezone"):
        Contact(id="c1", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="not an email address"):
        Contact(id="c1", email="nobody")


def test_tags_behave_as_a_sorted_set():
    contact = Contact(id="c1")
    for tag in ("vip", "churn-risk", "vip"):
        contact.add_tag(tag)
    contact.remove_tag("absent")
    assert contact.tags == ["churn-risk", "vip"]


# -- The fast constructors agree with pydantic ---------------------------------------------------

_ids = st.one_of(
    st.text(min_size=0, max_size=210),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12),
    st.sampled_from(["c1", " c1", "c1 ", "a-" + "0" * 32, "x" * 200, "x" * 201, "é", "c\x00"]),
)
_types = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_.:-]{0,12}", fullmatch=True),
    st.text(max_size=110),
    st.sampled_from(["email.sent", "x" * 100, "x" * 101, "1abc", "a b", "a\n"]),
)
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", 2**53 - 1, 2**53, -(2**53)]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_properties = st.one_of(
    st.dictionaries(st.text(max_size=6), _values, max_size=4),
    st.sampled_from([{1: "x"}, {"\ud800": 1}, [], {"deep": [[[[]]]]}]),
)
_times = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    st.datetimes(
        timezones=st.sampled_from(
            [
                timezone(timedelta(hours=2)),
                ZoneInfo("Asia/Tokyo"),
                ZoneInfo("Europe/London"),  # no offset half the year
                ZoneInfo("Etc/UTC"),
                TzInfo(0),  # what pydantic gives a parsed contact's times
            ]
        )
    ),
)


def _same(fast: object, slow: object) -> None:
    assert isinstance(fast, Event) and isinstance(slow, Event)
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.occurred_at_text == slow.occurred_at_text
    assert fast.model_fields_set == slow.model_fields_set


@given(_ids, _ids, _types, _times, _properties)
@settings(max_examples=600, deadline=None)
def test_made_event_is_the_event_pydantic_makes_or_the_same_error(
    event_id, contact_id, type_, occurred_at, properties
):
    """Engine-made events skip pydantic in the common shape: never a different event, and
    never an event pydantic would refuse (the property tests the fast path's checks)."""
    try:
        slow = Event(
            id=event_id,
            contact_id=contact_id,
            type=type_,
            occurred_at=occurred_at,
            properties=properties,
        )
    except ValidationError:
        with pytest.raises(ValidationError):
            made_event(event_id, contact_id, type_, occurred_at, properties)
        return
    _same(made_event(event_id, contact_id, type_, occurred_at, properties), slow)


@given(_ids, _types, _times, st.dictionaries(st.text(max_size=6), _values, max_size=4))
@settings(max_examples=300, deadline=None)
def test_a_stored_event_reads_back_as_the_event_that_came_in(contact_id, type_, when, properties):
    try:
        sent = Event(contact_id=contact_id, type=type_, occurred_at=when, properties=properties)
    except ValidationError:
        return
    dumped = json.loads(sent.model_dump_json())
    stored = Event.stored(
        sent.id, sent.contact_id, sent.type, sent.occurred_at_text, dumped["properties"]
    )
    _same(stored, Event.model_validate(dumped))
    assert stored.occurred_at == sent.occurred_at


def test_the_common_shape_takes_the_fast_path(monkeypatch):
    """What the property tests compare is the fast path, not pydantic twice: the fast path is
    the one that builds the model itself (``_unchecked_event``), and pydantic never does."""
    from clm_engine import models

    built: list[str] = []
    unchecked = models._unchecked_event
    monkeypatch.setattr(
        models, "_unchecked_event", lambda *args: built.append(args[2]) or unchecked(*args)
    )
    when = datetime(2026, 11, 2, 10, 15, tzinfo=UTC)
    made = made_event("a-" + "0" * 32, "c1", "score.add", when, {"points": 5, "tags": ["x"]})
    assert made.occurred_at_text == "2026-11-02T10:15:00.000000Z"
    # A time with another zero-offset tzinfo (a parsed contact's) takes it too, as UTC.
    parsed = Contact.model_validate_json('{"id": "c1", "last_event_at": "2026-11-02T10:15:00Z"}')
    assert parsed.last_event_at is not None and parsed.last_event_at.tzinfo is not UTC
    made = made_event("a-" + "1" * 32, "c1", "email.sent", parsed.last_event_at, {})
    assert made.occurred_at_text == "2026-11-02T10:15:00.000000Z"
    assert made.occurred_at.tzinfo is UTC
    # And a time with an offset, brought to UTC as the model's validator would.
    paris = when.astimezone(timezone(timedelta(hours=1)))
    made = made_event("a-" + "3" * 32, "c1", "tag.add", paris, {})
    assert made.occurred_at == when and made.occurred_at.tzinfo is UTC
    # Not the common shape (an id beyond ASCII): pydantic builds it.
    assert made_event("a-" + "2" * 32, "café", "email.sent", when, {}).contact_id == "café"
    assert built == ["score.add", "email.sent", "tag.add"]
    stored = Event.stored("e1", "c1", "purchase", "2026-11-02T10:15:00.000000Z", {})
    assert stored.__dict__["occurred_at_text"] == "2026-11-02T10:15:00.000000Z"
    assert stored.occurred_at == when


def _time_texts(moment: datetime) -> list[str]:
    """Ways a client may write ``moment``: the store's own form, whole seconds, other offsets,
    a space for the T, a lower-case z, fewer fraction digits."""
    utc = moment.astimezone(UTC)
    plain = utc.replace(tzinfo=None)
    texts = [
        plain.isoformat(timespec="microseconds") + "Z",
        plain.isoformat(timespec="seconds") + "Z",
        plain.isoformat(timespec="milliseconds") + "Z",
        plain.isoformat(sep=" ", timespec="seconds") + "Z",
        plain.isoformat(timespec="seconds") + "z",
        utc.isoformat(),
        moment.isoformat(),
    ]
    return texts


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), ZoneInfo("Asia/Tokyo")]),
    ),
    st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_an_events_time_text_is_its_utc_text_however_it_was_written(moment, as_json):
    """A time sent in the store's own form gives its text without formatting it (checked by
    reading it back): the text must be the one formatting gives, for every way of writing
    the time, from a mapping or from JSON text."""
    from clm_engine import models

    texts = _time_texts(moment)
    for text in texts:
        raw = {"id": "e1", "contact_id": "c1", "type": "x", "occurred_at": text}
        models._UTC_TEXTS.clear()
        try:
            event = parse_event(json.dumps(raw) if as_json else raw)
        except EventError:
            continue  # outside the supported range once in UTC, or a form pydantic refuses
        assert event.occurred_at_text == models._format_utc(event.occurred_at), text
        if text == texts[0]:  # to the microsecond
            assert event.occurred_at == moment.astimezone(UTC)


def test_a_time_in_the_stores_form_is_not_formatted_again(monkeypatch):
    """The shortcut is taken for the usual ``...Z`` times (what the property above checks)."""
    from clm_engine import models

    formatted: list[datetime] = []
    real = models._format_utc
    monkeypatch.setattr(
        models, "_format_utc", lambda moment: formatted.append(moment) or real(moment)
    )
    models._UTC_TEXTS.clear()
    for text in ("2026-05-01T03:18:19Z", "2026-05-01T03:18:20.250000Z"):
        event = parse_event({"contact_id": "c1", "type": "x", "occurred_at": text})
        assert event.occurred_at_text == text[:19] + (text[19:-1] or ".000000") + "Z"
    assert formatted == []
    parse_event({"contact_id": "c1", "type": "x", "occurred_at": "2026-05-01T05:18:21+02:00"})
    assert formatted == [datetime(2026, 5, 1, 3, 18, 21, tzinfo=UTC)]
