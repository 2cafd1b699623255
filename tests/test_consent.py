"""Consent channels are normalised: however a CRM spells a channel, it lands on one key, an
unsubscribe that names none withdraws every channel, and an unknown channel is a failed event
with the reason, not a new key that leaves the real one on."""

from __future__ import annotations

import pytest

from clm_engine import ReducerError
from clm_engine.consent import CHANNELS
from tests.helpers import event

ALL_OFF = dict.fromkeys(CHANNELS, False)


def signup(**consent: bool) -> dict:
    return event("c1", "signup", "2026-11-01", email="ada@example.com", consent=consent)


def test_channel_names_are_case_insensitive_and_stripped(engine):
    engine.ingest(event("c1", "signup", "2026-11-01", consent={"EMAIL": True, " Sms ": True}))
    assert engine.contact("c1").consent == {"email": True, "sms": True}
    engine.ingest(event("c1", "unsubscribed", "2026-11-02", channel="EMAIL"))
    assert engine.contact("c1").consent == {"email": False, "sms": True}
    engine.ingest(event("c1", "subscribed", "2026-11-03", channel=" Email "))
    engine.ingest(event("c1", "unsubscribed", "2026-11-04", channel="SMS"))
    assert engine.contact("c1").consent == {"email": True, "sms": False}


@pytest.mark.parametrize("properties", [{}, {"channel": None}, {"channel": "  "}])
def test_an_unsubscribe_without_a_channel_withdraws_every_channel(engine, properties):
    engine.ingest(signup(email=True, sms=True, push=True))
    engine.ingest(event("c1", "unsubscribed", "2026-11-02", **properties))
    contact = engine.contact("c1")
    assert contact.consent == ALL_OFF
    assert contact.metrics["unsubscribed_at"] == "2026-11-02T10:00:00Z"


def test_a_subscribe_without_a_channel_grants_email_only_and_null_is_refused(engine):
    engine.ingest(signup())
    engine.ingest(event("c1", "subscribed", "2026-11-02"))
    assert engine.contact("c1").consent == {"email": True}
    with pytest.raises(ReducerError, match="a subscription must name its channel"):
        engine.ingest(event("c1", "subscribed", "2026-11-03", channel=None))
    assert engine.contact("c1").consent == {"email": True}


@pytest.mark.parametrize(
    ("kind", "properties", "message"),
    [
        ("unsubscribed", {"channel": "emial"}, "unknown consent channel 'emial'"),
        ("subscribed", {"channel": "fax"}, "unknown consent channel 'fax'"),
        ("unsubscribed", {"channel": 3}, "a consent channel is a name"),
        ("contact.updated", {"consent": {"newsletter": True}}, "'newsletter'"),
        ("contact.updated", {"consent": {"email": "yes"}}, "true or false"),
        ("contact.updated", {"consent": ["email"]}, "must map channel names"),
        ("contact.updated", {"consent": {"email": True, "EMAIL": False}}, "both true and false"),
    ],
)
def test_an_unknown_channel_fails_the_event_with_the_known_ones(engine, kind, properties, message):
    engine.ingest(signup(email=True))
    result = engine.ingest_many([event("c1", kind, "2026-11-02", **properties)])
    [failure] = result.failed
    assert message in failure.error
    if "unknown" in message:
        assert "the channels are email, sms, push, whatsapp, phone, mail" in failure.error
    # Recorded for `clm failures`; the contact is as it was: email consent still on.
    assert [(f["type"], f["error"]) for f in engine.store.failures()] == [(kind, failure.error)]
    assert engine.contact("c1").consent == {"email": True}
