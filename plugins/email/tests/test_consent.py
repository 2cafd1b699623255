"""An unsubscribe stops marketing email however the CRM spells it: ``"EMAIL"``, or no channel at
all (``null``), end to end from the events to the policy's veto and the file transport."""

from __future__ import annotations

from clm_email.policy import decide
from clm_email.settings import resolve_settings

from clm_engine.consent import CHANNELS
from conftest import send_rule, signup


def unsubscribed(contact_id: str, **properties) -> dict:
    return {
        "contact_id": contact_id,
        "type": "unsubscribed",
        "occurred_at": "2026-11-02T12:30:00Z",
        "properties": properties,
    }


def page_view(contact_id: str) -> dict:
    return {"contact_id": contact_id, "type": "page.viewed", "occurred_at": "2026-11-02T13:00:00Z"}


def test_an_upper_case_or_null_channel_unsubscribe_stops_marketing_email(mail):
    mail.ruleset(
        send_rule("onboarding-tips", event="page.viewed"),  # marketing, the default category
        send_rule("onboarding-welcome", event="page.viewed", category="transactional"),
    )
    engine = mail.open()
    for contact_id in ("upper", "null", "kept"):
        engine.ingest(signup(contact_id))
    engine.ingest(unsubscribed("upper", channel="EMAIL"))
    engine.ingest(unsubscribed("null", channel=None))
    for contact_id in ("upper", "null", "kept"):
        engine.ingest(page_view(contact_id))

    assert engine.contact("upper").consent == {"email": False}
    assert engine.contact("null").consent == dict.fromkeys(CHANNELS, False)
    assert engine.contact("kept").consent == {"email": True}

    mail.clock.advance(hours=2)
    engine.dispatch()
    outcome = {
        (row.contact_id, row.params["template"]): (row.status, row.note)
        for contact_id in ("upper", "null", "kept")
        for row in engine.store.actions_for(contact_id)
    }
    for contact_id in ("upper", "null"):
        status, note = outcome[(contact_id, "onboarding-tips")]
        assert status == "vetoed"
        assert f"{contact_id}@example.com is suppressed (unsubscribed" in note
        # Transactional mail (receipts, password resets) needs no marketing consent: it goes.
        assert outcome[(contact_id, "onboarding-welcome")][0] == "done"
    assert outcome[("kept", "onboarding-tips")][0] == "done"
    sent = sorted((r["to_address"], r["template"]) for r in mail.log() if r["status"] == "sent")
    assert sent == [
        ("kept@example.com", "onboarding-tips"),
        ("kept@example.com", "onboarding-welcome"),
        ("null@example.com", "onboarding-welcome"),
        ("upper@example.com", "onboarding-welcome"),
    ]
    assert len(mail.files()) == 4

    # The consent check alone (no suppression list to lean on) says no as well.
    settings = resolve_settings()
    for contact_id in ("upper", "null"):
        veto = decide(
            params={"template": "onboarding-tips"},
            contact=engine.contact(contact_id),
            now=mail.clock.now(),
            tables=None,
            settings=settings,
        )
        assert veto is not None
        assert veto.reason == "no consent to marketing email (consent.email is false)"


def test_subscribing_again_in_any_case_lifts_the_unsubscription(mail):
    mail.ruleset(send_rule("onboarding-tips", event="page.viewed"))
    engine = mail.open()
    engine.ingest(signup())
    engine.ingest(unsubscribed("c1"))  # no channel: every channel, email included
    engine.ingest(
        {
            "contact_id": "c1",
            "type": "subscribed",
            "occurred_at": "2026-11-02T12:45:00Z",
            "properties": {"channel": "Email"},
        }
    )
    assert engine.contact("c1").consent == {**dict.fromkeys(CHANNELS, False), "email": True}
    assert engine.store.db.execute("SELECT count(*) FROM email_suppressions").fetchone() == (0,)
    engine.ingest(page_view("c1"))
    mail.clock.advance(hours=2)
    assert engine.dispatch().outcomes["done"] == 1
