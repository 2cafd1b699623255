"""A workspace for the SMS tests: rulesets, settings files, an engine on a virtual clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from clm_engine import Engine, VirtualClock

START = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


class Workspace:
    def __init__(self, root: Path, monkeypatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.clock = VirtualClock(START)
        self.rules = root / "rules"
        self.rules.mkdir()
        self.engine: Engine | None = None

    def settings(self, **values) -> None:
        path = self.root / "sms-settings.json"
        path.write_text(json.dumps(values))
        self.monkeypatch.setenv("CLM_SMS_SETTINGS", str(path))

    def policy(self, *policies: dict) -> None:
        path = self.root / "channel-policy.json"
        path.write_text(json.dumps({"policies": list(policies)}))
        self.monkeypatch.setenv("CLM_CHANNEL_POLICY", str(path))

    def ruleset(self, *rules: dict, name: str = "texts") -> None:
        document = {"ruleset": name, "version": 1, "rules": list(rules)}
        (self.rules / f"{name}.json").write_text(json.dumps(document))

    def open(self) -> Engine:
        self.engine = Engine(self.root / "clm.db", clock=self.clock)
        self.engine.load_rulesets([self.rules])
        return self.engine

    def rows(self, action: str = "sms.send", contact: str = "c1") -> list:
        assert self.engine is not None
        return [r for r in self.engine.store.actions_for(contact) if r.action == action]

    def events(self, type_: str, contact: str = "c1") -> list:
        assert self.engine is not None
        found = self.engine.store.recent_events(contact, limit=1000)
        return sorted((e for e in found if e.type == type_), key=lambda e: e.occurred_at)


def sms_rule(rule_id: str = "remind", event: str = "appointment.booked", **with_) -> dict:
    params = {
        "body": "Hi {{ first_name }}, see you {{ event.properties.at }}",
        "fallbacks": {"first_name": "there"},
        **with_,
    }
    return {
        "id": rule_id,
        "when": {"event": event},
        "then": [{"action": "sms.send", "with": params}],
    }


def contact(contact_id: str = "c1", at: str = "2026-11-02T12:00:00Z", **properties) -> dict:
    props = {
        "email": f"{contact_id}@example.com",
        "first_name": "Ada",
        "phone": "+33 6 12 34 56 78",
        "timezone": "Europe/Paris",
        **properties,
    }
    return {"contact_id": contact_id, "type": "signup", "occurred_at": at, "properties": props}


def booked(at: str = "2026-11-02T12:00:00Z", contact_id: str = "c1", n: int = 1) -> dict:
    return {
        "id": f"booked-{contact_id}-{n}",
        "contact_id": contact_id,
        "type": "appointment.booked",
        "occurred_at": at,
        "properties": {"at": "Tuesday 9:00"},
    }


def reply(body: str, at: str, contact_id: str = "c1") -> dict:
    return {
        "contact_id": contact_id,
        "type": "sms.inbound",
        "occurred_at": at,
        "properties": {"from": "+33612345678", "body": body},
    }
