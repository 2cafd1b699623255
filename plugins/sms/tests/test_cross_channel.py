"""Cross-channel policies (``clm_engine.channels``): one cap and one quiet time over email,
SMS and webhooks together, deferring, never dropping."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from sms_workspace import Workspace

EMAIL_TEMPLATES = Path(__file__).resolve().parents[3] / "rulesets" / "templates"
WEEK_CAP = {
    "name": "marketing-pressure",
    "categories": ["marketing"],
    "frequency_caps": [{"max": 2, "per": "P7D"}],
}


@pytest.fixture
def space(tmp_path, monkeypatch):
    monkeypatch.setenv("CLM_LOAD_PLUGINS", "email,sms,webhook")
    for name in ("CLM_SMS_SETTINGS", "CLM_EMAIL_SETTINGS", "CLM_WEBHOOK_SETTINGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLM_EMAIL_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("CLM_SMS_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("CLM_EMAIL_UNSUBSCRIBE_SECRET", "test-secret")
    monkeypatch.setenv("CLM_WEBHOOK_SECRET", "a-webhook-secret-for-tests")
    workspace = Workspace(tmp_path, monkeypatch)
    shutil.copy(EMAIL_TEMPLATES / "onboarding-welcome.json", workspace.rules)
    yield workspace
    if workspace.engine is not None:
        workspace.engine.close()


def person(at: str = "2026-11-02T12:00:00Z") -> dict:
    return {
        "contact_id": "c1",
        "type": "signup",
        "occurred_at": at,
        "properties": {
            "email": "ada@example.com",
            "first_name": "Ada",
            "phone": "+33612345678",
            "timezone": "Europe/Paris",
            "consent": {"email": True, "sms": True},
        },
    }


def promo(n: int, at: str) -> dict:
    return {"id": f"promo-{n}", "contact_id": "c1", "type": "promo.day", "occurred_at": at}


def rules(*calls: tuple[str, str, dict]) -> list[dict]:
    return [
        {"id": rule_id, "when": {"event": "promo.day"}, "then": [{"action": action, "with": w}]}
        for rule_id, action, w in calls
    ]


EMAIL = ("by-email", "email.send", {"template": "onboarding-welcome"})
SMS = ("by-sms", "sms.send", {"body": "20% off this week", "category": "marketing"})
REMINDER = ("reminder", "sms.send", {"body": "See you at 9", "category": "transactional"})


def messages(space: Workspace) -> list:
    assert space.engine is not None
    found = space.engine.store.actions_for("c1")
    return [r for r in found if r.action in ("email.send", "sms.send", "webhook.post")]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_weekly_cap_counts_email_and_sms_together_and_defers_the_rest(space):
    space.policy(WEEK_CAP)
    space.ruleset(*rules(EMAIL, SMS, REMINDER))
    engine = space.open()
    engine.ingest(person())
    engine.ingest(promo(1, "2026-11-02T12:00:00Z"))
    report = engine.dispatch()
    assert report.outcomes["done"] == 3  # one email, one marketing SMS, the reminder
    space.clock.set(at("2026-11-03T12:00:00Z"))
    engine.ingest(promo(2, "2026-11-03T12:00:00Z"))
    report = engine.dispatch()
    # Two marketing messages this week already (one per channel): both of today's wait; the
    # transactional reminder is not capped and goes.
    assert (report.outcomes["deferred"], report.outcomes["done"]) == (2, 1)
    waiting = [r for r in messages(space) if r.status == "pending"]
    assert {r.action for r in waiting} == {"email.send", "sms.send"}
    for row in waiting:
        assert row.due_at.startswith("2026-11-09T12:00:00")
        assert row.note == (
            "deferred to 2026-11-09T12:00:00Z: policy 'marketing-pressure': at most 2 marketing "
            "messages per 7 days (any channel)"
        )
    space.clock.set(at("2026-11-09T12:00:00Z"))
    assert engine.dispatch().outcomes["done"] == 2  # deferred, never dropped
    assert all(r.status == "done" for r in messages(space))


def test_a_webhook_of_a_capped_category_counts_too(space, monkeypatch, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "webhook" / "tests"))
    from webhook_receiver import Receiver  # the webhook plugin's test server

    receiver = Receiver()
    try:
        path = tmp_path / "webhook-settings.json"
        path.write_text(json.dumps({"allowed_networks": ["127.0.0.1/32"]}))
        monkeypatch.setenv("CLM_WEBHOOK_SETTINGS", str(path))
        space.policy({**WEEK_CAP, "frequency_caps": [{"max": 1, "per": "P1D"}]})
        push = (
            "by-push",
            "webhook.post",
            {"url": f"{receiver.url}/push", "body": {"text": "20% off"}, "category": "marketing"},
        )
        space.ruleset(*rules(push))
        engine = space.open()
        engine.ingest(person())
        engine.ingest(promo(1, "2026-11-02T12:00:00Z"))
        assert engine.dispatch().outcomes["done"] == 1
        space.ruleset(*rules(push, SMS), name="texts")
        engine.close()
        engine = space.open()
        space.clock.set(at("2026-11-02T15:00:00Z"))
        engine.ingest(promo(2, "2026-11-02T15:00:00Z"))
        report = engine.dispatch()
        assert report.outcomes["deferred"] == 2
        assert all(
            r.due_at.startswith("2026-11-03T12:00:00")
            for r in messages(space)
            if r.status == "pending"
        )
        assert len(receiver.received) == 1
    finally:
        receiver.close()


def test_two_messages_due_together_on_two_channels_do_not_both_slip_under_the_cap(space):
    space.policy({**WEEK_CAP, "frequency_caps": [{"max": 1, "per": "P1D"}]})
    space.ruleset(*rules(EMAIL, SMS))
    engine = space.open()
    engine.ingest(person())
    engine.ingest(promo(1, "2026-11-02T12:00:00Z"))
    report = engine.dispatch()
    assert (report.outcomes["done"], report.outcomes["deferred"]) == (1, 1)


def test_cross_channel_quiet_hours_hold_email_and_sms_until_morning(space):
    space.policy(
        {
            "name": "nights",
            "categories": ["marketing"],
            "quiet_hours": {"start": "20:00", "end": "09:00"},
        }
    )
    space.ruleset(*rules(EMAIL, SMS, REMINDER))
    space.clock.set(at("2026-11-02T21:30:00Z"))  # 22:30 in Paris
    engine = space.open()
    engine.ingest(person("2026-11-02T21:30:00Z"))
    engine.ingest(promo(1, "2026-11-02T21:30:00Z"))
    report = engine.dispatch()
    assert (report.outcomes["deferred"], report.outcomes["done"]) == (2, 1)
    for row in messages(space):
        if row.status == "pending":
            assert row.due_at.startswith("2026-11-03T08:00:00")  # 09:00 in Paris
            assert "policy 'nights': quiet hours 20:00-09:00 (Europe/Paris)" in row.note


def test_a_policy_limited_to_some_channels_leaves_the_others_alone(space):
    space.policy({**WEEK_CAP, "channels": ["sms"], "frequency_caps": [{"max": 1, "per": "P1D"}]})
    space.ruleset(*rules(EMAIL, SMS))
    engine = space.open()
    engine.ingest(person())
    engine.ingest(promo(1, "2026-11-02T12:00:00Z"))
    assert engine.dispatch().outcomes["done"] == 2
    space.clock.set(at("2026-11-02T13:00:00Z"))
    engine.ingest(promo(2, "2026-11-02T13:00:00Z"))
    report = engine.dispatch()
    assert (report.outcomes["done"], report.outcomes["deferred"]) == (1, 1)
    [waiting] = [r for r in messages(space) if r.status == "pending"]
    assert waiting.action == "sms.send"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"name": "x", "categories": []}, "categories"),
        ({"name": "x", "categories": ["marketing"]}, "neither frequency_caps nor quiet_hours"),
        (
            {
                "name": "x",
                "categories": ["marketing"],
                "channels": ["fax"],
                "quiet_hours": {"start": "20:00", "end": "09:00"},
            },
            "unknown channel(s) fax",
        ),
        (
            {
                "name": "x",
                "categories": ["marketing"],
                "quiet_hours": {"start": "25:00", "end": "09:00"},
            },
            "quiet_hours",
        ),
    ],
)
def test_a_bad_policy_file_vetoes_naming_the_file_and_the_field(space, policy, expected):
    space.policy(policy)
    space.ruleset(*rules(SMS))
    engine = space.open()
    engine.ingest(person())
    engine.ingest(promo(1, "2026-11-02T12:00:00Z"))
    assert engine.dispatch().outcomes["vetoed"] == 1
    [row] = messages(space)
    assert "channel-policy.json is not valid" in row.note and expected in row.note
