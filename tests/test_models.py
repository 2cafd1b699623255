from __future__ import annotations

import pytest

from clm_engine import Contact, Event, EventError
from clm_engine.engine import parse_event


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
