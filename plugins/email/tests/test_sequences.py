"""Drip sequences: the example onboarding and win-back drips, driven on a virtual clock."""

from __future__ import annotations

import shutil

import pytest

from clm_engine import RulesetError
from conftest import DRIPS, signup


@pytest.fixture
def drips(mail):
    shutil.copy(DRIPS, mail.rules / "email-drips.json")
    return mail


def sent(mail) -> list[tuple[str, str, str]]:
    """(sequence, step, day sent) of each email sent, in order."""
    return [
        (r["sequence"], r["step"], r["sent_at"][:16]) for r in mail.log() if r["status"] == "sent"
    ]


def enrollment(mail, sequence: str = "onboarding") -> dict:
    [row] = mail.engine.store.db.query(
        "SELECT * FROM email_enrollments WHERE sequence = ?", [sequence]
    )
    return row


def run_until(mail, when: str) -> None:
    """Move the clock day by day to ``when``, running everything due on the way."""
    from datetime import datetime

    target = datetime.fromisoformat(when)
    while mail.clock.now() < target:
        mail.clock.advance(hours=1)
        mail.engine.tick()


def test_onboarding_sends_four_steps_on_days_0_2_5_9_at_10_local(drips):
    engine = drips.open()
    engine.ingest(signup())  # Monday 2026-11-02 12:00 UTC; London is on UTC in November
    engine.tick()
    run_until(drips, "2026-11-13T00:00:00+00:00")
    assert sent(drips) == [
        ("onboarding", "welcome", "2026-11-02T12:00"),
        ("onboarding", "tips", "2026-11-04T10:00"),  # day 2, 10:00 local
        ("onboarding", "case-study", "2026-11-07T10:00"),  # day 5
        ("onboarding", "offer", "2026-11-11T10:00"),  # day 9
    ]
    row = enrollment(drips)
    assert (row["status"], row["step"], row["exit_reason"]) == ("completed", "offer", "completed")
    # Each message is a file, with its sequence and step in a header.
    headers = sorted(
        line
        for path in drips.files()
        for line in path.read_text().splitlines()
        if line.startswith("X-CLM-Sequence")
    )
    assert headers == [
        "X-CLM-Sequence: onboarding/case-study",
        "X-CLM-Sequence: onboarding/offer",
        "X-CLM-Sequence: onboarding/tips",
        "X-CLM-Sequence: onboarding/welcome",
    ]


def test_a_purchase_ends_onboarding_and_stops_a_message_already_queued(drips):
    engine = drips.open()
    engine.ingest(signup())
    run_until(drips, "2026-11-06T00:00:00+00:00")  # welcome and tips went
    engine.ingest(
        {
            "contact_id": "c1",
            "type": "purchase",
            "occurred_at": "2026-11-06T00:00:00Z",
            "properties": {"amount": 49, "name": "Smart Kettle"},
        }
    )
    run_until(drips, "2026-11-20T00:00:00+00:00")
    assert [step for _, step, _ in sent(drips)] == ["welcome", "tips"]
    row = enrollment(drips)
    assert (row["status"], row["exit_reason"]) == ("exited", "event purchase")
    steps = [r for r in engine.store.actions_for("c1") if r.action == "email.sequence_step"]
    assert [r.status for r in steps] == ["done", "done", "skipped"]
    assert "left sequence 'onboarding': event purchase" in steps[-1].note


def test_a_queued_sequence_email_is_vetoed_when_the_contact_leaves(drips):
    engine = drips.open()
    engine.ingest(signup(at="2026-11-02T12:00:00Z"))
    # The step ran and queued the welcome email, but the purchase lands before it is sent.
    engine.dispatch(limit=1)  # the first step (start_sequence ran inline); the email waits
    engine.ingest(
        {
            "contact_id": "c1",
            "type": "purchase",
            "occurred_at": "2026-11-02T12:00:00Z",
            "properties": {"amount": 10},
        }
    )
    report = engine.dispatch()
    assert report.outcomes["vetoed"] == 1
    assert "left sequence 'onboarding' (event purchase)" in report.notes[0]
    assert drips.files() == []


def test_a_contact_is_in_a_sequence_once_at_a_time_unless_it_allows_reentry(mail):
    mail.ruleset(
        {
            "id": "start",
            "when": {"event": "page.viewed"},
            "then": [{"action": "email.start_sequence", "with": {"sequence": "onboarding"}}],
        }
    )
    engine = mail.open()
    engine.ingest(signup())
    for minute in ("01", "02"):
        engine.ingest(
            {
                "contact_id": "c1",
                "type": "page.viewed",
                "occurred_at": f"2026-11-02T12:{minute}:00Z",
            }
        )
    mail.clock.advance(minutes=5)
    report = engine.dispatch()
    starts = [r for r in engine.store.actions_for("c1") if r.action == "email.start_sequence"]
    assert [r.status for r in starts] == ["done", "skipped"]
    assert "already in sequence 'onboarding'" in starts[1].note
    assert starts[0].result is not None  # it ran inline, as the page view was ingested
    assert report.outcomes["done"] >= 2  # step, send

    # A sequence that allows re-entry takes the second start as a second enrollment.
    document = (mail.rules / "onboarding.json").read_text()
    (mail.rules / "onboarding.json").write_text(
        document.replace(
            '"category": "marketing",', '"category": "marketing", "allow_reentry": true,'
        )
    )
    engine.load_rulesets([mail.rules])
    engine.ingest(
        {"contact_id": "c1", "type": "page.viewed", "occurred_at": "2026-11-02T12:06:00Z"}
    )
    mail.clock.advance(minutes=5)
    engine.dispatch()
    count = engine.store.db.execute(
        "SELECT count(*) FROM email_enrollments WHERE status = 'active'"
    ).fetchone()[0]
    assert count == 2


def test_stop_sequence_from_a_rule(drips):
    engine = drips.open()
    engine.ingest(signup())
    engine.tick()
    engine.ingest(
        {
            "contact_id": "c1",
            "type": "support.ticket",
            "occurred_at": "2026-11-02T12:00:00Z",
            "properties": {"ticket_id": "t1", "status": "open", "priority": "urgent"},
        }
    )
    engine.tick()
    row = enrollment(drips)
    assert (row["status"], row["exit_reason"]) == ("stopped", "urgent support ticket")
    run_until(drips, "2026-11-13T00:00:00+00:00")
    assert [step for _, step, _ in sent(drips)] == ["welcome"]


def test_win_back_starts_90_days_after_the_last_order(drips):
    engine = drips.open()
    engine.ingest(signup(at="2026-11-02T12:00:00Z"))
    engine.ingest(
        {
            "contact_id": "c1",
            "type": "purchase",
            "occurred_at": "2026-11-02T12:00:00Z",
            "properties": {"amount": 120, "name": "Robot Vacuum"},
        }
    )
    engine.ingest(
        {
            "contact_id": "c1",
            "type": "clm.stage.set",
            "occurred_at": "2026-11-02T12:00:00Z",
            "properties": {"stage": "purchase"},
        }
    )
    run_until(drips, "2027-02-15T00:00:00+00:00")
    win_back = [(step, at[:10]) for seq, step, at in sent(drips) if seq == "win-back"]
    assert win_back == [("miss-you", "2027-02-01"), ("offer", "2027-02-08")]
    body = next(p for p in drips.files() if "We miss you" in p.read_text()).read_text()
    assert "Robot Vacuum" in body  # {{ product }}: the last product bought


def test_sequence_mistakes_fail_validation(mail):
    mail.write(
        "bad.json",
        {
            "sequence": "bad",
            "exit": {"stage": "purchased", "if": {"fact": "contact.nope", "op": "eq", "value": 1}},
            "steps": [
                {"id": "a", "template": "onboarding-welcom"},
                {"id": "a", "template": "onboarding-tips", "at": "25:00"},
            ],
        },
    )
    with pytest.raises(RulesetError) as error:
        mail.open()
    text = str(error.value)
    assert "bad.json" in text and "/steps/1/at" in text  # the model: not a time of day
    mail.write(
        "bad.json",
        {
            "sequence": "bad",
            "exit": {"stage": "purchased", "if": {"fact": "contact.nope", "op": "eq", "value": 1}},
            "steps": [
                {"id": "a", "template": "onboarding-welcom"},
                {"id": "a", "template": "onboarding-tips", "at": "10:00"},
            ],
        },
    )
    with pytest.raises(RulesetError) as error:
        mail.open()
    text = str(error.value)
    assert "/steps/0/template: no template 'onboarding-welcom'; did you mean" in text
    assert "/steps/1/id: step id 'a' is used twice" in text
    assert "/exit/stage: no stage 'purchased'" in text
    assert "/exit/if" in text


def test_an_exit_condition_is_checked_at_each_step(mail):
    mail.write(
        "vip.json",
        {
            "sequence": "nurture",
            "exit": {"if": {"fact": "contact.tags", "op": "contains", "value": "vip"}},
            "steps": [
                {"id": "one", "template": "onboarding-welcome"},
                {"id": "two", "template": "onboarding-tips", "after": "P1D"},
            ],
        },
    )
    mail.ruleset(
        {
            "id": "start",
            "when": {"event": "signup"},
            "then": [{"action": "email.start_sequence", "with": {"sequence": "nurture"}}],
        },
        {
            "id": "vip",
            "when": {"event": "purchase"},
            "then": [{"action": "tag.add", "with": {"tag": "vip"}}],
        },
    )
    engine = mail.open()
    engine.ingest(signup())
    engine.tick()
    engine.ingest(
        {
            "contact_id": "c1",
            "type": "purchase",
            "occurred_at": "2026-11-02T13:00:00Z",
            "properties": {"amount": 10},
        }
    )
    run_until(mail, "2026-11-04T00:00:00+00:00")
    assert [step for _, step, _ in sent(mail)] == ["one"]
    row = enrollment(mail, "nurture")
    assert (row["status"], row["exit_reason"]) == ("exited", "exit condition holds")
