"""Frequency caps and quiet hours through the engine: deferred with a reason, never dropped."""

from __future__ import annotations

import json

from click.testing import CliRunner

from clm_engine.cli import cli
from clm_engine.explain import explain
from conftest import send_rule, signup


def page_view(at: str) -> dict:
    return {"contact_id": "c1", "type": "page.viewed", "occurred_at": at}


def test_a_capped_message_is_deferred_to_when_the_cap_allows_and_explain_says_why(
    mail, monkeypatch
):
    mail.settings(monkeypatch, frequency_caps=[{"max": 2, "per": "P7D"}])
    mail.ruleset(send_rule("onboarding-tips", event="page.viewed"))
    engine = mail.open()
    engine.ingest(signup())
    for at in ("2026-11-02T12:00:00Z", "2026-11-03T12:00:00Z", "2026-11-04T12:00:00Z"):
        engine.ingest(page_view(at))
        mail.clock.set(mail.clock.now().fromisoformat(at))
        engine.dispatch()
    sends = mail.sends()
    assert [r.status for r in sends] == ["done", "done", "pending"]
    # The oldest of the two sends leaves the 7-day window on 11-09 12:00.
    assert sends[2].due_at.startswith("2026-11-09T12:00:00")
    assert sends[2].note == (
        "deferred to 2026-11-09T12:00:00Z: frequency cap: 2 marketing emails per 7 days"
    )
    why = explain(engine, "c1", rule="send-onboarding-tips")
    notes = [a["note"] for d in why["rules"][0]["decisions"] for a in d["actions"]]
    assert "deferred to 2026-11-09T12:00:00Z: frequency cap: 2 marketing emails per 7 days" in notes
    mail.clock.set(mail.clock.now().fromisoformat("2026-11-09T12:00:00+00:00"))
    assert engine.dispatch().outcomes["done"] == 1
    assert len(mail.files()) == 3  # deferred, never dropped


def test_caps_count_every_ruleset_and_sequence_but_not_transactional_mail(mail, monkeypatch):
    mail.settings(monkeypatch, frequency_caps=[{"max": 1, "per": "P1D"}])
    mail.ruleset(send_rule("onboarding-tips", event="page.viewed"), name="one")
    mail.ruleset(
        send_rule("onboarding-offer", event="page.viewed"),
        send_rule("onboarding-case-study", event="page.viewed", category="transactional"),
        name="two",
    )
    engine = mail.open()
    engine.ingest(signup())
    engine.ingest(page_view("2026-11-02T12:00:00Z"))
    report = engine.dispatch()
    assert (report.outcomes["done"], report.outcomes["deferred"]) == (2, 1)
    templates = sorted(r["template"] for r in mail.log())
    assert templates[0] == "onboarding-case-study"  # transactional: never capped


def test_quiet_hours_in_the_contacts_timezone(mail, monkeypatch):
    mail.settings(monkeypatch, quiet_hours={"start": "21:00", "end": "08:00"})
    mail.ruleset(
        send_rule(), send_rule("onboarding-tips", event="page.viewed", category="transactional")
    )
    engine = mail.open()
    mail.clock.set(mail.clock.now().fromisoformat("2026-11-02T22:30:00+00:00"))
    # 22:30 UTC is 07:30 the next morning in Tokyo: quiet until 08:00 there (23:00 UTC).
    engine.ingest(signup(at="2026-11-02T22:30:00Z", timezone="Asia/Tokyo"))
    engine.ingest(page_view("2026-11-02T22:30:00Z"))
    report = engine.dispatch()
    assert (report.outcomes["deferred"], report.outcomes["done"]) == (1, 1)
    [deferred] = [r for r in mail.sends() if r.status == "pending"]
    assert deferred.note == "deferred to 2026-11-02T23:00:00Z: quiet hours 21:00-08:00 (Asia/Tokyo)"
    mail.clock.set(mail.clock.now().fromisoformat("2026-11-02T23:00:00+00:00"))
    assert engine.dispatch().outcomes["done"] == 1


def test_two_messages_due_together_do_not_both_slip_under_a_cap(mail, monkeypatch):
    # Both are checked before either is sent (external actions run after the batch's claims).
    mail.settings(monkeypatch, frequency_caps=[{"max": 1, "per": "P1D"}])
    mail.ruleset(send_rule(), send_rule("onboarding-tips", event="signup"))
    engine = mail.open()
    engine.ingest(signup())
    report = engine.dispatch()
    assert (report.outcomes["done"], report.outcomes["deferred"]) == (1, 1)


def test_a_backlog_is_capped_by_when_messages_really_leave(mail, monkeypatch):
    # The engine was down for a month: the whole onboarding drip is due at once. Steps keep
    # their planned times, but caps count real send times: two go now, two wait a week.
    import shutil

    from conftest import DRIPS

    shutil.copy(DRIPS, mail.rules / "email-drips.json")
    mail.settings(monkeypatch, frequency_caps=[{"max": 2, "per": "P7D"}])
    engine = mail.open()
    engine.ingest(signup(at="2026-10-01T12:00:00Z"))
    report = engine.dispatch()
    assert report.outcomes["deferred"] == 2
    sent = [(r["step"], r["sent_at"][:16]) for r in mail.log()]
    assert sent == [("welcome", "2026-11-02T12:00"), ("tips", "2026-11-02T12:00")]
    deferred = [r for r in mail.sends() if r.status == "pending"]
    assert {r.due_at[:16] for r in deferred} == {"2026-11-09T12:00"}


def test_a_simulation_sends_nothing_but_caps_what_it_would_have_sent(mail, monkeypatch):
    from clm_engine import Engine

    mail.settings(monkeypatch, frequency_caps=[{"max": 1, "per": "P1D"}])
    mail.ruleset(send_rule(), send_rule("onboarding-tips", event="signup"))
    mail.engine = engine = Engine(mail.root / "clm.db", clock=mail.clock, dry_run_external=True)
    engine.load_rulesets([mail.rules])
    engine.ingest(signup())
    report = engine.dispatch()
    assert (report.outcomes["simulated"], report.outcomes["deferred"]) == (1, 1)
    assert mail.files() == []  # nothing left the engine
    [logged] = mail.log()
    assert (logged["status"], logged["template"]) == ("sent", "onboarding-welcome")
    [simulated] = [r for r in mail.sends() if r.status == "simulated"]
    assert simulated.result["location"] == "simulated: not sent"


def test_explain_and_the_queue_keep_each_actions_history_after_it_was_sent(mail, monkeypatch):
    mail.settings(monkeypatch, frequency_caps=[{"max": 1, "per": "P7D"}])
    mail.ruleset(send_rule("onboarding-tips", event="page.viewed"))
    engine = mail.open()
    engine.ingest(signup())
    for at in ("2026-11-02T12:00:00Z", "2026-11-03T12:00:00Z"):
        engine.ingest(page_view(at))
        mail.clock.set(mail.clock.now().fromisoformat(at))
        engine.dispatch()
    mail.clock.set(mail.clock.now().fromisoformat("2026-11-09T12:00:00+00:00"))
    assert engine.dispatch().outcomes["done"] == 1
    why = explain(engine, "c1", rule="send-onboarding-tips")
    capped = why["rules"][0]["decisions"][0]["actions"][0]  # newest first: the 11-03 one
    assert capped["status"] == "done"
    assert [(e["event"], e["at"], e["until"]) for e in capped["history"]] == [
        ("queued", capped["history"][0]["at"], None),
        ("deferred", "2026-11-03T12:00:00Z", "2026-11-09T12:00:00Z"),
        ("sent", "2026-11-09T12:00:00Z", None),
    ]
    assert "frequency cap: 1 marketing emails per 7 days" in capped["history"][1]["note"]
    # A finished row says when it finished, and its due time is not the end of the lease.
    assert capped["finished_at"] == "2026-11-09T12:00:00Z"
    assert capped["due_at"] == "2026-11-09T12:00:00Z"
    engine.close()
    mail.engine = None
    runner = CliRunner()
    db = ["--db", str(mail.root / "clm.db")]
    queued = json.loads(runner.invoke(cli, ["email", "queue", "c1", *db, "--json"]).output)
    [second] = [a for a in queued["actions"] if a["action"] == "email.send"][1:]
    assert [e["event"] for e in second["history"]] == ["queued", "deferred", "sent"]
    assert second["finished_at"].startswith("2026-11-09T12:00:00")
    text = runner.invoke(
        cli, ["email", "queue", "c1", *db], env={"COLUMNS": "250"}, terminal_width=250
    ).output
    assert "2026-11-09T12:00 (finished)" in text
    assert "deferred 11-03 12:00 (until 11-09 12:00) → sent 11-09 12:00" in text
    tsv = runner.invoke(cli, ["email", "queue", "c1", *db, "--tsv"]).output.splitlines()
    assert tsv[0].split("\t") == [
        "due_at",
        "finished_at",
        "action",
        "sequence",
        "template_or_step",
        "status",
        "note",
        "history",
    ]
    sent = [line.split("\t") for line in tsv[1:] if "deferred" in line]
    assert sent and sent[0][1].startswith("2026-11-09T12:00:00") and sent[0][5] == "done"
    shown = runner.invoke(cli, ["explain", "c1", *db, "--rulesets", str(mail.rules)]).output
    assert "deferred until 2026-11-09T12:00:00Z" in shown and "sent" in shown
