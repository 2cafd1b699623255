"""``sms.send`` end to end: rules in, texts out through a local SMS API on 127.0.0.1."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner
from sms_gateway import Gateway
from sms_workspace import Workspace, booked, contact, reply, sms_rule

from clm_engine.cli import cli


@pytest.fixture
def gateway():
    server = Gateway().start()
    yield server
    server.close()


@pytest.fixture
def texts(tmp_path, monkeypatch):
    monkeypatch.setenv("CLM_LOAD_PLUGINS", "sms")
    for name in ("CLM_SMS_SETTINGS", "CLM_CHANNEL_POLICY", "CLM_SMS_PROVIDER", "CLM_SMS_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLM_SMS_OUTBOX", str(tmp_path / "outbox"))
    space = Workspace(tmp_path, monkeypatch)
    yield space
    if space.engine is not None:
        space.engine.close()


def use_gateway(texts: Workspace, gateway: Gateway, **settings) -> None:
    texts.monkeypatch.setenv("CLM_SMS_USERNAME", gateway.username)
    texts.monkeypatch.setenv("CLM_SMS_PASSWORD", gateway.password)
    texts.settings(provider="http", sender="+33757123456", http={"url": gateway.url}, **settings)


def test_a_reminder_goes_through_the_http_provider_in_e164_with_basic_auth(texts, gateway):
    use_gateway(texts, gateway)
    texts.ruleset(sms_rule(category="transactional"))
    engine = texts.open()
    engine.ingest(contact(phone="06 12 34 56 78", country="FR"))  # no +: read in the country
    engine.ingest(booked())
    assert engine.dispatch().outcomes["done"] == 1
    assert gateway.received == [
        {"to": "+33612345678", "from": "+33757123456", "body": "Hi Ada, see you Tuesday 9:00"}
    ]
    [row] = texts.rows()
    assert gateway.headers[0]["Idempotency-Key"] == row.key
    assert row.result == {"sent": "SM0001", "to": "+33612****78", "segments": 1}
    [sent] = texts.events("sms.sent")
    assert sent.properties["encoding"] == "GSM-7" and sent.properties["message_id"] == "SM0001"
    logged = engine.store.tables["channel_messages"].rows({"contact_id": "c1"})
    assert [(r["channel"], r["category"]) for r in logged] == [("sms", "transactional")]


def test_json_providers_with_their_own_field_names_and_id_paths(texts, gateway):
    use_gateway(texts, gateway)
    texts.settings(
        provider="http",
        http={"url": gateway.url, "format": "json", "id_field": "id"},
    )
    texts.ruleset(sms_rule(category="transactional"))
    engine = texts.open()
    engine.ingest(contact())
    engine.ingest(booked())
    assert engine.dispatch().outcomes["done"] == 1
    assert gateway.received[0]["to"] == "+33612345678"
    assert gateway.headers[0]["Content-Type"] == "application/json"
    auth = base64.b64decode(gateway.headers[0]["Authorization"].split()[1]).decode()
    assert auth == "AC123:tok3n"


def test_marketing_needs_sms_consent_and_transactional_does_not(texts, gateway):
    use_gateway(texts, gateway)
    texts.ruleset(
        sms_rule("promo", body="20% off this week", category="marketing"),
        sms_rule("remind", category="transactional"),
    )
    engine = texts.open()
    engine.ingest(contact(consent={"email": True}))
    engine.ingest(booked())
    report = engine.dispatch()
    assert (report.outcomes["vetoed"], report.outcomes["done"]) == (1, 1)
    [promo] = [r for r in texts.rows() if r.rule == "promo"]
    assert promo.note == "no consent to marketing SMS (consent.sms is not recorded)"
    engine.ingest(contact(at="2026-11-02T13:00:00Z", consent={"sms": True}))
    engine.ingest(booked("2026-11-02T13:00:00Z", n=2))
    texts.clock.set(datetime.fromisoformat("2026-11-02T13:00:00+00:00"))
    assert engine.dispatch().outcomes["done"] == 2


def test_a_stop_reply_vetoes_later_and_queued_texts_and_start_resumes(texts, gateway):
    use_gateway(texts, gateway)
    texts.ruleset(
        sms_rule(category="transactional"),
        {
            "id": "follow-up",
            "when": {"event": "appointment.booked"},
            "then": [
                {
                    "action": "sms.send",
                    "with": {"body": "How did it go?", "category": "marketing"},
                    "after": {"days": 2},
                }
            ],
        },
    )
    engine = texts.open()
    engine.ingest(contact(consent={"sms": True}))
    engine.ingest(booked())
    assert engine.dispatch().outcomes["done"] == 1
    engine.ingest(reply("  Stop. ", "2026-11-03T08:00:00Z"))
    assert engine.contact("c1").consent["sms"] is False
    engine.ingest(booked("2026-11-03T09:00:00Z", n=2))
    texts.clock.set(datetime.fromisoformat("2026-11-05T12:00:00+00:00"))
    report = engine.dispatch()
    assert report.outcomes["vetoed"] == 3  # the queued follow-up, and both of the new booking
    notes = {r.note for r in texts.rows() if r.status == "vetoed"}
    assert notes == {"replied STOP at 2026-11-03T08:00:00Z (consent.sms is false)"}
    assert len(gateway.received) == 1
    engine.ingest(reply("START", "2026-11-05T12:00:00Z"))
    engine.ingest(booked("2026-11-05T12:00:01Z", n=3))
    texts.clock.set(datetime.fromisoformat("2026-11-05T12:00:01+00:00"))
    assert engine.dispatch().outcomes["done"] == 1
    assert len(gateway.received) == 2


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ("STOP", True),
        ("stop please", True),
        ("Arrêt", True),
        ("UNSUBSCRIBE", True),
        ("stopping by later", False),
        ("thanks!", False),
        ("", False),
    ],
)
def test_stop_words(body, word):
    from clm_sms.inbound import STOP_WORDS, keyword

    assert (keyword(body) in STOP_WORDS) is word


def test_an_invalid_or_missing_number_fails_at_once_naming_why(texts, gateway):
    use_gateway(texts, gateway)
    texts.ruleset(sms_rule(category="transactional"))
    engine = texts.open()
    engine.ingest(contact(phone="+1 555 0100"))
    engine.ingest(contact("c2", phone=None))
    engine.ingest(contact("c3", phone="0612345678"))  # no +, no region
    for cid in ("c1", "c2", "c3"):
        engine.ingest(booked(contact_id=cid))
    assert engine.dispatch().outcomes["failed"] == 3
    assert texts.rows()[0].note == (
        "'+1 555 0100' is not a valid number in its country's numbering plan"
    )
    assert texts.rows(contact="c2")[0].note == "the contact has no 'phone' attribute"
    assert "has no country code" in texts.rows(contact="c3")[0].note
    assert gateway.received == []


def test_a_provider_outage_is_retried_and_a_refusal_is_not(texts, gateway):
    use_gateway(texts, gateway)
    texts.ruleset(sms_rule(category="transactional"))
    gateway.failures = [503, 429]
    engine = texts.open()
    engine.ingest(contact())
    engine.ingest(booked())
    assert engine.dispatch().outcomes["retried"] == 1
    [row] = texts.rows()
    assert "provider answered HTTP 503" in row.note
    for _ in range(2):
        texts.clock.set(datetime.fromisoformat(texts.rows()[0].due_at))
        engine.dispatch()
    assert texts.rows()[0].status == "done"
    assert len(gateway.received) == 1
    gateway.failures = [400]
    engine.ingest(booked(n=2))
    assert engine.dispatch().outcomes["failed"] == 1
    failed = next(r for r in texts.rows() if r.status == "failed")
    assert failed.note.startswith("provider refused the message: HTTP 400")


def test_a_provider_that_says_when_to_come_back_is_not_asked_before(texts, gateway):
    use_gateway(texts, gateway)
    texts.ruleset(sms_rule(category="transactional"))
    gateway.failures = [429]
    gateway.retry_after = "600"
    engine = texts.open()
    engine.ingest(contact())
    engine.ingest(booked())
    now = texts.clock.now()
    assert engine.dispatch().outcomes["retried"] == 1
    [row] = texts.rows()
    assert "provider answered HTTP 429" in row.note and "(Retry-After: 600)" in row.note
    due = datetime.fromisoformat(row.due_at)
    assert abs((due - now).total_seconds() - 600) < 2  # not the 30 s backoff
    texts.clock.set(due)
    assert engine.dispatch().outcomes["done"] == 1
    assert len(gateway.received) == 1


def test_quiet_hours_defer_to_the_morning_in_the_contacts_timezone(texts, gateway):
    use_gateway(texts, gateway, quiet_hours={"start": "21:00", "end": "08:00"})
    texts.ruleset(sms_rule(category="marketing"))
    texts.clock.set(datetime.fromisoformat("2026-11-02T22:00:00+00:00"))  # 23:00 in Paris
    engine = texts.open()
    engine.ingest(contact(at="2026-11-02T22:00:00Z", consent={"sms": True}))
    engine.ingest(booked("2026-11-02T22:00:00Z"))
    report = engine.dispatch()
    assert report.outcomes["deferred"] == 1, report
    [row] = texts.rows()
    assert row.due_at.startswith("2026-11-03T07:00:00")  # 08:00 in Paris
    assert "quiet hours 21:00-08:00 (Europe/Paris)" in row.note
    texts.clock.set(datetime.fromisoformat("2026-11-03T07:00:00+00:00"))
    assert engine.dispatch().outcomes["done"] == 1


def test_a_text_over_its_segments_fails_saying_which_characters_made_it_ucs2(texts, gateway):
    use_gateway(texts, gateway)
    texts.ruleset(
        sms_rule(
            body="Your visit “confirmed” " + "x" * 200, category="transactional", max_segments=2
        )
    )
    engine = texts.open()
    engine.ingest(contact())
    engine.ingest(booked())
    assert engine.dispatch().outcomes["failed"] == 1
    assert texts.rows()[0].note == (
        "4 segments of UCS-2 (UCS-2 because of '“”'; without them it would be GSM-7); at most 2"
    )


def test_the_file_provider_is_the_default(texts, tmp_path):
    texts.ruleset(sms_rule(category="transactional"))
    engine = texts.open()
    engine.ingest(contact())
    engine.ingest(booked())
    assert engine.dispatch().outcomes["done"] == 1
    [line] = (tmp_path / "outbox" / "sms.jsonl").read_text().splitlines()
    written = json.loads(line)
    assert (written["to"], written["from"], written["segments"]) == ("+33612345678", "CLMENGINE", 1)


def test_clm_validate_reports_a_template_error_with_its_pointer(texts):
    texts.ruleset(sms_rule(body="Hi {{ frist_name }}"))
    result = CliRunner().invoke(cli, ["validate", str(texts.rules)])
    assert result.exit_code != 0
    assert "texts.json" in result.output and "/rules/0/then/0/with" in result.output
    assert "frist_name" in result.output


def test_settings_that_cannot_be_read_stop_the_send_naming_the_plugin(texts, gateway):
    texts.settings(provider="http", sender="not a number")
    texts.ruleset(sms_rule(category="transactional"))
    engine = texts.open()
    engine.ingest(contact())
    engine.ingest(booked())
    assert engine.dispatch().outcomes["vetoed"] == 1
    note = texts.rows()[0].note
    assert "policy of plugin 'sms' failed" in note and "sender" in note
    assert gateway.received == []


def test_clm_sms_commands(texts):
    result = CliRunner().invoke(cli, ["sms", "segments", "--json", "€" * 81])
    assert json.loads(result.output)["segments"] == 2
    result = CliRunner().invoke(cli, ["sms", "number", "06 12 34 56 78", "--region", "FR"])
    assert result.output.strip() == "+33612345678"
    result = CliRunner().invoke(cli, ["sms", "number", "+1 555 0100"])
    assert result.exit_code == 1 and "not a valid number" in result.output


def test_far_future_backlog_uses_real_send_time(texts):
    # A delayed reminder long overdue still goes once, with its planned occurrence.
    texts.ruleset(sms_rule(category="transactional"))
    engine = texts.open()
    engine.ingest(contact())
    engine.ingest(booked())
    texts.clock.advance(timedelta(days=1))
    assert engine.dispatch().outcomes["done"] == 1
    assert engine.dispatch().total == 0
