"""The demo's SMS step: appointments added to a generated history, backtested with the
example ruleset (``rulesets/service-appointments.json``) through ``clm simulate``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from clm_sms.demo import add_to_file, summary
from clm_sms.numbers import NumberError, e164

from clm_engine.cli import cli

ROOT = Path(__file__).resolve().parents[3]


def test_the_example_ruleset_confirms_reminds_and_honours_stop_and_cancellations(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CLM_LOAD_PLUGINS", "sms")
    monkeypatch.delenv("CLM_SMS_SETTINGS", raising=False)
    monkeypatch.delenv("CLM_CHANNEL_POLICY", raising=False)
    history, texts = tmp_path / "history.jsonl", tmp_path / "texts.jsonl"
    runner = CliRunner()
    made = runner.invoke(
        cli,
        ["sample-events", "--contacts", "300", "--months", "2", "--seed", "3", "-o", str(history)],
    )
    assert made.exit_code == 0, made.output
    added = add_to_file(history, texts, seed=3, share=0.5)
    events = [json.loads(line) for line in texts.read_text().splitlines()]
    assert added > 100
    assert [e["occurred_at"] for e in events] == sorted(e["occurred_at"] for e in events)
    phones = [e["properties"]["phone"] for e in events if "phone" in e.get("properties", {})]
    valid = 0
    for phone in phones:
        try:
            e164(phone, None)
            valid += 1
        except NumberError:
            pass
    assert 0.9 < valid / len(phones) < 1  # a few invalid on purpose
    stops = {e["contact_id"] for e in events if e["type"] == "sms.inbound"}
    assert stops

    result = runner.invoke(
        cli,
        [
            "simulate",
            "--rulesets",
            str(ROOT / "rulesets" / "service-appointments.json"),
            "--events",
            str(texts),
            "--from",
            "2026-05-01",
            "--to",
            "2026-07-15",
            "--step",
            "1h",
            "--json",
            "--allow-failures",
        ],
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    confirm = found["per_rule"]["service-appointments/confirm-booking"]
    remind = found["per_rule"]["service-appointments/remind-day-before"]
    booked = sum(1 for e in events if e["type"] == "service.booked")
    assert confirm["fired"] == booked
    # Every booking is confirmed, but for an invalid number (failed) and a STOP that came
    # before the hourly dispatch step reached it (vetoed).
    assert sum(confirm["actions"].values()) == booked
    assert set(confirm["actions"]) <= {"simulated", "failed", "vetoed"}
    assert confirm["actions"]["failed"] >= 1
    assert remind["actions"].get("vetoed", 0) >= 1  # STOP replies stop the reminders
    assert remind["fired"] < booked  # cancelled ones (and those past the end) are not reminded
    text = summary(found)
    assert text.startswith("confirmations: ") and "reminders: " in text
