"""The transport hook, `clm email` commands, and the demo's summary."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from clm_email import demo
from clm_email.cli import email as email_commands
from clm_email.transports import TemporaryDeliveryError, transport_factories

from clm_engine import Registry, hookimpl
from clm_engine.errors import PluginError
from conftest import send_rule, signup

# The email group as `clm email` runs it. (`clm` adds plugins' commands once per process, and
# in a full test run that happens before this plugin is registered.)
cli = click.Group(commands={"email": email_commands})


class Postbox:
    """A transport plugin: keeps messages in a list (what an API-based provider would get)."""

    def __init__(self) -> None:
        self.messages: list = []
        self.fail_next = False

    @hookimpl(optionalhook=True)
    def register_email_transports(self, register):
        register("postbox", lambda settings: self)

    def send(self, message, *, sender, recipients):
        if self.fail_next:
            self.fail_next = False
            raise TemporaryDeliveryError("provider said: slow down")
        self.messages.append((recipients, message))
        return f"postbox:{len(self.messages)}"

    def close(self) -> None:
        pass


@pytest.fixture
def postbox():
    return Postbox()


def test_a_plugin_adds_a_transport_that_settings_choose_by_name(mail, postbox, monkeypatch):
    import clm_email

    registry = Registry({"email": clm_email, "postbox": postbox}, installed=False)
    assert {"file", "smtp", "postbox"} <= set(transport_factories(registry))
    monkeypatch.setenv("CLM_EMAIL_TRANSPORT", "postbox")
    mail.ruleset(send_rule())
    engine = mail.open(plugins={"postbox": postbox})
    engine.ingest(signup())
    postbox.fail_next = True
    assert engine.dispatch().outcomes["retried"] == 1
    mail.clock.advance(minutes=1)
    assert engine.dispatch().outcomes["done"] == 1
    [(recipients, message)] = postbox.messages
    assert recipients == ["c1@example.com"]
    assert message.to_email_message()["Subject"] == "Welcome to Acme, Ada"
    assert mail.log()[0]["location"] == "postbox:1"


def test_two_transports_with_one_name_are_an_error(postbox):
    import clm_email

    class Again:
        @hookimpl(optionalhook=True)
        def register_email_transports(self, register):
            register("postbox", lambda settings: None)

    registry = Registry({"email": clm_email, "postbox": postbox, "again": Again()}, installed=False)
    with pytest.raises(PluginError, match="'postbox' is registered by both"):
        transport_factories(registry)


def test_transports_belong_to_their_engine_and_need_no_email_plugin_to_load(postbox):
    """Two engines in one process, one with the transport plugin: each sees its own. Without
    the email plugin, a transport plugin's hook is optional: nothing to check it against."""
    import clm_email

    with_it = Registry({"email": clm_email, "postbox": postbox}, installed=False)
    without = Registry({"email": clm_email}, installed=False)
    assert "postbox" in transport_factories(with_it)
    assert set(transport_factories(without)) == {"file", "smtp"}
    assert Registry({"postbox": postbox}, installed=False).actions  # loads, checks, no error


def test_an_unknown_transport_is_retried_with_the_reason(mail, monkeypatch):
    monkeypatch.setenv("CLM_EMAIL_TRANSPORT", "carrier-pigeon")
    mail.ruleset(send_rule())
    engine = mail.open()
    engine.ingest(signup())
    report = engine.dispatch()
    assert "no email transport 'carrier-pigeon'; registered: file, smtp" in report.notes[0]


def test_preview_renders_a_template_for_a_real_contact(mail, tmp_path):
    mail.ruleset(send_rule())
    engine = mail.open()
    engine.ingest(signup(company="Globex"))
    engine.close()
    mail.engine = None
    runner = CliRunner()
    args = ["--db", str(mail.root / "clm.db"), "--rulesets", str(mail.rules)]
    eml = tmp_path / "preview.eml"
    result = runner.invoke(
        cli, ["email", "preview", "onboarding-welcome", "--contact", "c1", *args, "--eml", str(eml)]
    )
    assert result.exit_code == 0, result.output
    assert "Subject: Welcome to Acme, Ada" in result.output
    assert "for Globex" in result.output
    assert b"List-Unsubscribe:" in eml.read_bytes()
    as_json = runner.invoke(
        cli, ["email", "preview", "onboarding-welcome", "--contact", "c1", *args, "--json"]
    )
    assert json.loads(as_json.output)["subject"] == "Welcome to Acme, Ada"
    missing = runner.invoke(cli, ["email", "preview", "welcome", "--contact", "c1", *args])
    assert missing.exit_code == 1
    assert "no template 'welcome'" in missing.output
    nobody = runner.invoke(
        cli, ["email", "preview", "onboarding-welcome", "--contact", "c9", *args]
    )
    assert "no contact 'c9'" in nobody.output


def test_log_and_suppressions_commands(mail):
    mail.ruleset(send_rule())
    engine = mail.open()
    engine.ingest(signup())
    engine.ingest(signup("c2"))
    engine.dispatch()
    engine.ingest(
        {"contact_id": "c2", "type": "unsubscribed", "occurred_at": "2026-11-02T12:00:00Z"}
    )
    runner = CliRunner()
    db = ["--db", str(mail.root / "clm.db")]
    log = json.loads(runner.invoke(cli, ["email", "log", *db, "--json"]).output)["messages"]
    assert [(m["contact"], m["status"]) for m in log] == [("c2", "sent"), ("c1", "sent")]
    text = runner.invoke(cli, ["email", "suppressions", *db]).output
    assert "c2@example.com" in text and "unsubscribed" in text
    queued = json.loads(runner.invoke(cli, ["email", "queue", "c1", *db, "--json"]).output)
    assert [(a["action"], a["what"], a["status"]) for a in queued["actions"]] == [
        ("email.send", "onboarding-welcome", "done")
    ]


def test_demo_summary(mail, monkeypatch):
    mail.settings(monkeypatch, frequency_caps=[{"max": 1, "per": "P7D"}])
    mail.ruleset(send_rule(), send_rule("onboarding-tips", event="signup"))
    engine = mail.open()
    engine.ingest(signup())
    engine.ingest(signup("c2", consent={"email": False}))
    engine.dispatch()
    text = demo.summary(str(mail.root / "clm.db"), str(mail.outbox))
    assert "(rules)      onboarding-welcome" in text or "(rules)      onboarding-tips" in text
    assert "frequency cap: 1 marketing emails per 7 days" in text
    assert "no consent to marketing email" in text
    assert f"One rendered message: {mail.files()[0]}" in text
