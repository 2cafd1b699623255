"""Templates, messages and transports, against a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from clm_email import templates
from clm_email.message import build_message, message_id
from clm_email.settings import EmailSettings, resolve_settings
from clm_email.transports import (
    FileTransport,
    PermanentDeliveryError,
    SmtpTransport,
    TemporaryDeliveryError,
)

from clm_engine import Contact

NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
SECRET = b"test-secret"


def template(**fields) -> templates.EmailTemplate:
    data = {
        "email_template": "welcome",
        "subject": "Welcome, {{ first_name }}",
        "text": ["Hi {{ first_name }} from {{ company }},", "your plan: {{ plan }}."],
        "html": "<p>Hi {{ first_name }} from {{ company }}</p>",
        "fallbacks": {"first_name": "there", "company": "your team", "plan": "free"},
    }
    return templates.EmailTemplate.model_validate({**data, **fields})


def ada(**attributes) -> Contact:
    return Contact(
        id="c1",
        email="ada@example.com",
        attributes={"first_name": "Ada", "company": "Engines & Co", "plan": "pro", **attributes},
    )


def message_for(contact: Contact, tpl: templates.EmailTemplate | None = None, key: str = "k1"):
    tpl = tpl or template()
    link = templates.unsubscribe_link("https://acme.example/u", contact.id, SECRET)
    rendered = templates.render(tpl, templates.context_for(contact, tpl, unsubscribe_url=link))
    return build_message(
        rendered,
        to=contact.email,
        sender="Acme <hello@acme.example>",
        message_id=message_id(key, "acme.example"),
        date=NOW,
        unsubscribe_url=link,
        unsubscribe_mailto="unsubscribe@acme.example",
    )


# -- templates -----------------------------------------------------------------------------------


def test_personal_fields_fill_in_and_missing_ones_fall_back():
    tpl = template()
    link = "https://acme.example/u?x=1"
    full = templates.render(tpl, templates.context_for(ada(), tpl, unsubscribe_url=link))
    assert full.subject == "Welcome, Ada"
    assert full.text.startswith("Hi Ada from Engines & Co,\nyour plan: pro.")
    assert "Engines &amp; Co" in full.html  # the HTML part escapes what it inserts
    bare = Contact(id="c2", email="b@example.com")
    empty = templates.render(tpl, templates.context_for(bare, tpl, unsubscribe_url=link))
    assert empty.subject == "Welcome, there"
    assert empty.text.startswith("Hi there from your team,\nyour plan: free.")


def test_the_unsubscribe_link_is_added_when_the_template_leaves_it_out():
    tpl = template()
    link = templates.unsubscribe_link("https://acme.example/u", "c1", SECRET)
    rendered = templates.render(tpl, templates.context_for(ada(), tpl, unsubscribe_url=link))
    assert rendered.text.rstrip().endswith(f"Unsubscribe: {link}")
    assert "Unsubscribe</a>" in rendered.html
    token = link.split("token=")[1]
    assert templates.verify_unsubscribe_token("c1", token, SECRET)
    assert not templates.verify_unsubscribe_token("c2", token, SECRET)


def test_the_product_comes_from_the_last_purchase_when_no_attribute_names_it():
    tpl = template(text="Your {{ product }}", fallbacks={"first_name": "x", "product": "order"})
    contact = ada()
    contact.metrics["last_product"] = "Smart Kettle"
    rendered = templates.render(tpl, templates.context_for(contact, tpl, unsubscribe_url="u"))
    assert rendered.text.startswith("Your Smart Kettle")


@pytest.mark.parametrize(
    ("fields", "pointer", "message"),
    [
        ({"subject": "Hi {{ frist_name }}"}, "/subject", "did you mean 'first_name'?"),
        ({"text": "{{ country }}"}, "/text", 'give the template a fallback ("fallbacks"'),
        ({"text": "{% if %}"}, "/text", "template syntax error: line 1"),
        ({"html": "{{ ''.__class__.__mro__ }}"}, "/html", "not allowed in a template"),
        (
            {"text": "{% include 'secrets.txt' %}"},
            "/text",
            "include, extends and import are not available",
        ),
        ({"text": "{{ attributes.pop('plan') }}"}, "/text", "not allowed in a template"),
    ],
)
def test_template_mistakes_are_found_before_anything_is_sent(fields, pointer, message):
    problems = templates.check_template(template(**fields))
    assert len(problems) == 1, problems
    assert problems[0][0] == pointer
    assert message in problems[0][1]


def test_a_render_failure_at_send_time_names_template_and_part():
    tpl = template(text="{{ attributes.score // 0 }}")  # fine in validation? no: checked below
    contact = ada(score=3)
    with pytest.raises(templates.RenderError, match=r"'welcome', text: ZeroDivisionError"):
        templates.render(tpl, templates.context_for(contact, tpl, unsubscribe_url="u"))


def test_a_subject_is_one_line_whatever_the_data():
    tpl = template(subject="Hello {{ first_name }}")
    contact = ada(first_name="Ada\r\nBcc: everyone@example.com")
    rendered = templates.render(tpl, templates.context_for(contact, tpl, unsubscribe_url="u"))
    assert rendered.subject == "Hello Ada Bcc: everyone@example.com"


# -- messages ------------------------------------------------------------------------------------


def test_message_ids_derive_from_the_outbox_key():
    assert message_id("rs/r/c1/once/0", "acme.example") == message_id(
        "rs/r/c1/once/0", "acme.example"
    )
    assert message_id("rs/r/c1/once/0", "acme.example") != message_id(
        "rs/r/c1/once/1", "acme.example"
    )
    assert message_id("k", "acme.example").endswith("@acme.example>")


# -- transports ----------------------------------------------------------------------------------


def test_file_transport_writes_one_eml_per_message_id(tmp_path):
    transport = FileTransport(tmp_path / "outbox")
    message = message_for(ada())
    path = transport.send(message, sender="hello@acme.example", recipients=["ada@example.com"])
    again = transport.send(message, sender="hello@acme.example", recipients=["ada@example.com"])
    assert path == again  # sent twice after a crash: one file
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == [path.rsplit("/", 1)[1]]
    parsed = message_from_bytes(
        (tmp_path / "outbox" / path.rsplit("/", 1)[1]).read_bytes(), policy=default
    )
    assert parsed["Subject"] == "Welcome, Ada"
    assert parsed["Message-ID"] == message["Message-ID"]


def smtp_settings(server, security="none", **smtp) -> EmailSettings:
    return EmailSettings(
        transport="smtp",
        smtp={"host": server.host, "port": server.port, "security": security, **smtp},
    )


def test_smtp_delivers_headers_parts_and_personalization(smtp_server):
    transport = SmtpTransport(smtp_settings(smtp_server))
    try:
        transport.send(
            message_for(ada()), sender="hello@acme.example", recipients=["ada@example.com"]
        )
    finally:
        transport.close()
    [got] = smtp_server.messages
    assert (got.mail_from, got.rcpt_tos) == ("hello@acme.example", ["ada@example.com"])
    message = got.message
    assert message["Subject"] == "Welcome, Ada"
    assert message["From"] == "Acme <hello@acme.example>"
    assert message["Message-ID"] == message_id("k1", "acme.example")
    unsubscribe = str(message["List-Unsubscribe"]).strip()
    assert unsubscribe.startswith("<https://acme.example/u?contact=c1&token=")
    assert "<mailto:unsubscribe@acme.example?subject=unsubscribe>" in unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Hi Ada from Engines & Co" in text and "Engines &amp; Co" in html
    link = unsubscribe.split(",")[0].strip("<>")
    assert link in text and link.replace("&", "&amp;") in html


def test_smtp_keeps_one_connection_for_many_messages(smtp_server):
    transport = SmtpTransport(smtp_settings(smtp_server))
    try:
        for n in range(5):
            message = message_for(ada(), key=f"k{n}")
            transport.send(message, sender="hello@acme.example", recipients=["ada@example.com"])
    finally:
        transport.close()
    assert len({m.message["Message-ID"] for m in smtp_server.messages}) == 5


def test_smtp_4xx_is_temporary_and_5xx_permanent(smtp_server):
    transport = SmtpTransport(smtp_settings(smtp_server))
    smtp_server.handler.data_replies.append("451 4.3.0 Mailbox busy, try later")
    smtp_server.handler.rcpt_replies["gone@example.com"] = "550 5.1.1 No such user"
    try:
        with pytest.raises(TemporaryDeliveryError, match="451"):
            transport.send(
                message_for(ada()), sender="h@acme.example", recipients=["ada@example.com"]
            )
        with pytest.raises(PermanentDeliveryError, match=r"550 5\.1\.1 No such user") as error:
            transport.send(
                message_for(ada()), sender="h@acme.example", recipients=["gone@example.com"]
            )
        assert error.value.code == 550
        # The connection is still usable after both refusals.
        transport.send(message_for(ada()), sender="h@acme.example", recipients=["ada@example.com"])
    finally:
        transport.close()
    assert len(smtp_server.messages) == 1


def test_smtp_unreachable_is_temporary():
    with socket_closed() as port:
        settings = EmailSettings(smtp={"host": "127.0.0.1", "port": port, "security": "none"})
        with pytest.raises(TemporaryDeliveryError, match=r"cannot reach 127\.0\.0\.1"):
            SmtpTransport(settings).send(
                message_for(ada()), sender="h@a.example", recipients=["x@y.example"]
            )


def socket_closed():
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        yield port  # nothing listens there any more

    return closed()


def test_starttls_and_login_from_the_environment(starttls_server, monkeypatch):
    monkeypatch.setenv("CLM_SMTP_USER", "mailer")
    monkeypatch.setenv("CLM_SMTP_PASSWORD", "s3cret")
    settings = smtp_settings(starttls_server, "starttls", ca_file=starttls_server.ca_file)
    transport = SmtpTransport(settings)
    try:
        transport.send(
            message_for(ada()), sender="hello@acme.example", recipients=["ada@example.com"]
        )
    finally:
        transport.close()
    assert starttls_server.handler.logins == [("mailer", "s3cret")]
    assert len(starttls_server.messages) == 1


def test_a_refused_login_is_our_problem_not_the_recipients(starttls_server, monkeypatch):
    # Temporary: retried, then dead-lettered with the reason; the address is not suppressed.
    monkeypatch.setenv("CLM_SMTP_USER", "mailer")
    monkeypatch.setenv("CLM_SMTP_PASSWORD", "wrong")
    settings = smtp_settings(
        starttls_server, "starttls", ca_file=starttls_server.ca_file, timeout=5
    )
    with pytest.raises(TemporaryDeliveryError, match=r"refused the login \(535.*CLM_SMTP_PASSWORD"):
        SmtpTransport(settings).send(
            message_for(ada()), sender="h@a.example", recipients=["a@b.example"]
        )


def test_implicit_tls(tls_server):
    settings = smtp_settings(tls_server, "tls", ca_file=tls_server.ca_file)
    transport = SmtpTransport(settings)
    try:
        transport.send(
            message_for(ada()), sender="hello@acme.example", recipients=["ada@example.com"]
        )
    finally:
        transport.close()
    assert tls_server.messages[0].message["Subject"] == "Welcome, Ada"


def test_an_untrusted_certificate_is_refused(tls_server):
    settings = smtp_settings(tls_server, "tls")  # the system's CAs do not know the test's
    with pytest.raises(TemporaryDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        SmtpTransport(settings).send(
            message_for(ada()), sender="h@a.example", recipients=["a@b.example"]
        )


# -- settings ------------------------------------------------------------------------------------


def test_settings_layers_defaults_file_environment(tmp_path):
    assert resolve_settings(environ={}).transport == "file"
    path = tmp_path / "email-settings.json"
    path.write_text(
        json.dumps({"outbox_dir": "mail", "frequency_caps": [{"max": 2, "per": "P7D"}]})
    )
    settings = resolve_settings(
        environ={
            "CLM_EMAIL_SETTINGS": str(path),
            "CLM_EMAIL_OUTBOX": "/tmp/x",
            "CLM_SMTP_PORT": "2525",
        }
    )
    assert (settings.outbox_dir, settings.smtp.port) == ("/tmp/x", 2525)
    assert settings.frequency_caps[0].max == 2
    with pytest.raises(ValueError, match=r"\$CLM_SMTP_PORT"):
        resolve_settings(environ={"CLM_SMTP_PORT": "many"})
    path.write_text(json.dumps({"quiet_hours": {"start": "25:00", "end": "08:00"}}))
    with pytest.raises(ValueError, match=r"email-settings.json is not valid.*quiet_hours.start"):
        resolve_settings(environ={"CLM_EMAIL_SETTINGS": str(path)})


def test_the_example_settings_file_is_valid():
    example = Path(__file__).parent.parent / "examples" / "email-settings.json"
    settings = resolve_settings(environ={"CLM_EMAIL_SETTINGS": str(example)})
    assert settings.quiet_hours is not None and settings.frequency_caps
