"""email.send end to end: a rule fires, dispatch renders and delivers, the log records it."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default

import pytest
from clm_email.message import message_id

from clm_engine import RulesetError
from conftest import send_rule, signup, use_smtp


def test_a_rule_sends_an_email_through_the_file_transport(mail):
    mail.ruleset(send_rule())
    engine = mail.open()
    engine.ingest(signup())
    report = engine.dispatch()
    assert report.outcomes["done"] == 1
    [path] = mail.files()
    message = message_from_bytes(path.read_bytes(), policy=default)
    [row] = mail.sends()
    assert message["Message-ID"] == message_id(row.key, "example.com")
    assert message["Subject"] == "Welcome to Acme, Ada"
    assert message["To"] == "c1@example.com"
    assert "for Engines Ltd" in message.get_body(("plain",)).get_content()
    assert str(message["List-Unsubscribe"]).strip().startswith("<https://example.com/unsubscribe?")
    [logged] = mail.log()
    assert logged["status"] == "sent"
    assert logged["message_id"] == message["Message-ID"]
    assert logged["idempotency_key"] == row.key
    assert (logged["template"], logged["category"]) == ("onboarding-welcome", "marketing")
    assert logged["location"] == str(path)
    contact = engine.contact("c1")
    assert contact.metrics["emails_sent"] == 1
    # Nothing is due any more, and ingesting the signup again sends nothing.
    engine.ingest(signup())
    assert engine.dispatch().total == 0
    assert len(mail.files()) == 1


def test_smtp_delivery_with_personalization_and_unsubscribe_link(mail, smtp_server, monkeypatch):
    use_smtp(monkeypatch, smtp_server)
    mail.ruleset(send_rule("onboarding-offer", reply_to="Sales <sales@acme.example>"))
    engine = mail.open()
    engine.ingest(signup(company="Initech", plan="free"))
    engine.dispatch()
    [got] = smtp_server.messages
    assert got.rcpt_tos == ["c1@example.com"]
    message = got.message
    assert message["Subject"] == "Ada, 20% off your first year of Acme Pro"
    assert message["Reply-To"] == "Sales <sales@acme.example>"
    assert message["X-CLM-Template"] == "onboarding-offer"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Upgrade Initech from free to Pro" in text
    assert "Upgrade Initech from free to Pro" in html
    link = str(message["List-Unsubscribe"]).strip().split(",")[0].strip("<>")
    assert link.startswith("https://example.com/unsubscribe?contact=c1&token=")
    assert link in text
    assert mail.log()[0]["status"] == "sent"


def test_a_temporary_smtp_failure_is_retried_with_backoff_under_the_same_message_id(
    mail, smtp_server, monkeypatch
):
    use_smtp(monkeypatch, smtp_server)
    smtp_server.handler.data_replies.append("451 4.3.0 Mailbox busy, try again later")
    mail.ruleset(send_rule())
    engine = mail.open()
    engine.ingest(signup())
    report = engine.dispatch()
    assert report.outcomes["retried"] == 1
    [row] = mail.sends()
    assert row.status == "pending" and "451 4.3.0" in row.note and row.attempts == 1
    assert mail.log() == []  # nothing was sent, nothing is logged as sent
    mail.clock.advance(seconds=29)
    assert engine.dispatch().total == 0  # the backoff is 30 s
    mail.clock.advance(seconds=2)
    assert engine.dispatch().outcomes["done"] == 1
    [got] = smtp_server.messages
    assert got.message["Message-ID"] == message_id(row.key, "example.com")
    assert mail.log()[0]["status"] == "sent"


def test_a_permanent_failure_suppresses_the_address_and_stops_what_is_queued(
    mail, smtp_server, monkeypatch
):
    use_smtp(monkeypatch, smtp_server)
    smtp_server.handler.rcpt_replies["c1@example.com"] = "550 5.1.1 No such user here"
    tips = send_rule("onboarding-tips", event="page.viewed", category="transactional")
    mail.ruleset(send_rule(), tips)
    engine = mail.open()
    engine.ingest(signup())
    report = engine.dispatch()
    assert report.outcomes["failed"] == 1, report.as_dict()
    [row] = mail.sends()
    assert row.status == "failed" and "550 5.1.1" in row.note
    [logged] = mail.log()
    assert logged["status"] == "bounced" and "550 5.1.1 No such user" in logged["error"]
    suppressed = list(engine.store.db.query("SELECT * FROM email_suppressions"))
    assert [(s["address"], s["reason"]) for s in suppressed] == [("c1@example.com", "hard_bounce")]
    assert engine.contact("c1").consent["email"] is False  # the bounce reducer
    # Even a transactional email is not sent to an address that does not exist.
    engine.ingest(
        {"contact_id": "c1", "type": "page.viewed", "occurred_at": "2026-11-02T12:05:00Z"}
    )
    mail.clock.advance(minutes=10)
    report = engine.dispatch()
    assert report.outcomes["vetoed"] == 1
    assert "c1@example.com is suppressed (hard_bounce" in report.notes[0]
    assert smtp_server.messages == []


def test_a_template_that_fails_at_send_time_is_a_recorded_failure_never_half_sent(mail):
    mail.write(
        "ratio.json",
        {
            "email_template": "ratio",
            "subject": "Your ratio",
            # Valid, and renders for the sample contacts; fails for a real one with seats 0.
            "text": "{{ (attributes.users | default(1)) // (attributes.seats | default(1)) }}",
        },
    )
    mail.ruleset(send_rule("ratio"))
    engine = mail.open()
    engine.ingest(signup(seats=0))
    report = engine.dispatch()
    assert report.outcomes["failed"] == 1
    [row] = mail.sends()
    assert "template 'ratio', text: ZeroDivisionError" in row.note
    [logged] = mail.log()
    assert logged["status"] == "failed" and "ZeroDivisionError" in logged["error"]
    assert mail.files() == []


def test_template_mistakes_and_unknown_templates_fail_validation(mail):
    mail.write(
        "broken.json", {"email_template": "broken", "subject": "Hi {{ first_name", "text": "x"}
    )
    mail.ruleset(send_rule("onboarding-welcom"))
    with pytest.raises(RulesetError) as error:
        mail.open()
    text = str(error.value)
    assert "broken.json" in text and "/subject" in text and "template syntax error" in text
    assert "/rules/0/then/0/with" in text and "did you mean 'onboarding-welcome'?" in text


def test_no_marketing_email_without_consent_but_transactional_goes(mail):
    mail.ruleset(
        send_rule(),
        send_rule("onboarding-tips", event="page.viewed", category="transactional"),
    )
    engine = mail.open()
    engine.ingest(signup(consent={"email": False}))
    engine.ingest(
        {"contact_id": "c1", "type": "page.viewed", "occurred_at": "2026-11-02T12:01:00Z"}
    )
    mail.clock.advance(minutes=10)
    report = engine.dispatch()
    assert (report.outcomes["vetoed"], report.outcomes["done"]) == (1, 1)
    assert "no consent to marketing email (consent.email is false)" in report.notes[0]
    assert [r["template"] for r in mail.log()] == ["onboarding-tips"]


def test_an_unsubscribe_stops_messages_already_queued(mail):
    rule = send_rule()
    rule["then"][0]["after"] = "P1D"
    mail.ruleset(rule)
    engine = mail.open()
    engine.ingest(signup())
    engine.ingest(
        {"contact_id": "c1", "type": "unsubscribed", "occurred_at": "2026-11-02T13:00:00Z"}
    )
    mail.clock.advance(days=2)
    report = engine.dispatch()
    assert report.outcomes["vetoed"] == 1
    [row] = mail.sends()
    assert row.status == "vetoed"
    assert "is suppressed (unsubscribed" in row.note
    suppressed = engine.store.db.execute("SELECT reason FROM email_suppressions").fetchall()
    assert suppressed == [("unsubscribed",)]
    # Subscribing again lifts it.
    engine.ingest({"contact_id": "c1", "type": "subscribed", "occurred_at": "2026-11-05T13:00:00Z"})
    assert engine.store.db.execute("SELECT count(*) FROM email_suppressions").fetchone() == (0,)


def test_a_contact_without_an_address_is_skipped(mail):
    mail.ruleset(send_rule())
    engine = mail.open()
    props = signup()
    del props["properties"]["email"]
    engine.ingest(props)
    assert engine.dispatch().outcomes["skipped"] == 1
    assert mail.sends()[0].note == "the contact has no email address"


def test_forget_removes_the_contacts_messages(mail):
    mail.ruleset(send_rule())
    engine = mail.open()
    engine.ingest(signup())
    engine.ingest(signup("c2"))
    engine.dispatch()
    removed = engine.forget("c1").removed
    assert removed["email_messages"] == 1
    assert [r["contact_id"] for r in mail.log()] == ["c2"]


def test_a_bounce_reported_later_marks_the_message_and_suppresses_the_address(mail):
    # A provider's webhook turns an asynchronous bounce into an event naming the Message-ID.
    mail.ruleset(send_rule())
    engine = mail.open()
    engine.ingest(signup())
    engine.dispatch()
    [logged] = mail.log()
    engine.ingest(
        {
            "contact_id": "c1",
            "type": "email.bounced",
            "occurred_at": "2026-11-02T12:30:00Z",
            "properties": {"type": "hard", "message_id": logged["message_id"]},
        }
    )
    [logged] = mail.log()
    assert (logged["status"], logged["error"]) == ("bounced", "hard bounce")
    suppressed = engine.store.db.execute("SELECT address, reason FROM email_suppressions")
    assert suppressed.fetchall() == [("c1@example.com", "hard_bounce")]


def test_data_from_whoever_queued_the_message_reaches_the_template(mail):
    # Another plugin's follow-up (a warranty offer) passes its own values as `data`.
    mail.write(
        "offer.json",
        {
            "email_template": "offer",
            "subject": "{{ data.product_name }}: {{ data.months }} more months",
            "text": "Extend it for {{ data.price }}.",
        },
    )
    mail.ruleset(
        send_rule("offer", data={"product_name": "Robot Vacuum", "months": 24, "price": "$49.00"})
    )
    engine = mail.open()
    engine.ingest(signup())
    engine.dispatch()
    body = mail.files()[0].read_text()
    assert "Subject: Robot Vacuum: 24 more months" in body
    assert "Extend it for $49.00." in body
    # Without the data, the same template fails at send time (recorded, nothing sent).
    engine.ingest(signup("c2"))
    mail.ruleset(send_rule("offer"), name="bare")
    engine.load_rulesets([mail.rules])
    engine.ingest(signup("c3"))
    engine.dispatch()
    failed = [r for r in mail.log() if r["status"] == "failed"]
    assert failed and "'dict object' has no attribute 'product_name'" in failed[0]["error"]


def test_the_warranty_offer_templates_render_with_the_data_the_warranty_plugin_passes(mail):
    # The keys plugins/warranty/README.md documents for its email.send follow-ups.
    data = {
        "offer_id": "of-1",
        "offer_kind": "extension",
        "product_id": "p-1",
        "product_sku": "AUR-HUB-2",
        "product_name": "Aurora Hub 2",
        "serial": "HUB0000001ABC",
        "offered_sku": "AUR-HUB-2-EXT24",
        "offered_name": "Aurora Care 24",
        "months": 24,
        "price_minor": 3900,
        "price": "39.00",
        "currency": "USD",
        "expires_at": "2027-03-01T00:00:00Z",
        "expires_on": "2027-03-01",
        "warranty_ends_at": "2027-03-01T00:00:00Z",
    }
    names = [
        "warranty-extension",
        "warranty-extension-reminder",
        "warranty-extension-last-call",
        "warranty-service-agreement",
        "warranty-upgrade",
    ]
    mail.ruleset(*(send_rule(name, data=data) for name in names))
    engine = mail.open()
    engine.ingest(signup())
    assert engine.dispatch().outcomes["done"] == len(names)
    subjects = sorted(r["subject"] for r in mail.log())
    assert "Ada, extend the warranty of your Aurora Hub 2" in subjects
    assert "Ada, meet the successor of your Aurora Hub 2" in subjects
    body = next(p for p in mail.files() if "extend the warranty" in p.read_text()).read_text()
    assert "ends on 2027-03-01" in body and "39.00 USD" in body
