"""RFM scores and segments on five customers worked out by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from clm_engine import Engine, VirtualClock
from clm_engine.analytics import refresh
from clm_engine.store import analytics as sql
from clm_engine.store.analytics_dialect import analytics_db

from .helpers import event, store_in

NOW = datetime(2026, 4, 1, 6, 0, tzinfo=UTC)  # calibration end 2026-03-31, window from 2025-04-01

PURCHASES = {
    "c1": [("2026-03-30", 100)],
    "c2": [("2026-03-01", 20), ("2026-03-20", 20)],
    "c3": [("2026-01-01", 10), ("2026-01-10", 10), ("2026-02-01", 10)],
    "c4": [("2025-06-01", 5), ("2025-06-02", 5), ("2025-06-03", 5), ("2025-06-04", 5)],
    "c5": [("2024-12-01", 50), ("2025-01-01", 50)],  # both before the window
}


#: A rule on the change event and the fact: both stores give the facts to conditions.
RULES = {
    "ruleset": "rfm-rules",
    "version": 1,
    "rules": [
        {
            "id": "loyal-again",
            "when": {"event": "rfm.segment_changed"},
            "if": {"fact": "contact.rfm.segment", "op": "eq", "value": "loyal"},
            "then": [{"action": "tag.add", "with": {"tag": "loyal"}}],
        }
    ],
}


def test_scores_segments_and_changes(tmp_path, on_store):
    rules = tmp_path / "rfm-rules.json"
    rules.write_text(json.dumps(RULES))
    with Engine(store_in(tmp_path), clock=VirtualClock(NOW), rulesets=[rules]) as engine:
        engine.ingest_many(
            [
                event(who, "purchase", day, amount=amount)
                for who, days in PURCHASES.items()
                for day, amount in days
            ]
        )
        result = refresh(engine)
        db = analytics_db(engine.store)
        scores = {
            who: sql.rfm_of(db, who) for who in PURCHASES
        }  # (r, f, m, segment, recency_days, frequency, monetary)
        # recency days 1, 11, 58, 300, 454 -> r 5..1; frequency 1, 2, 3, 4, 0; monetary
        # 100, 40, 30, 20, 0: five customers, so each score is the rank.
        assert scores == {
            "c1": (5, 2, 5, "potential loyalist", 1, 1, 100),
            "c2": (4, 3, 4, "potential loyalist", 11, 2, 40),
            "c3": (3, 4, 3, "loyal", 58, 3, 30),
            "c4": (2, 5, 2, "at risk", 300, 4, 20),
            "c5": (1, 1, 1, "lost", 454, 0, 0),
        }
        assert result.segment_changes == 5
        changed = engine.store.last_event("c3", "rfm.segment_changed")
        assert changed is not None
        assert changed.properties == {"from": None, "to": "loyal", "r": 3, "f": 4, "m": 3}
        # the engine's own event: it does not make the contact look active
        contact = engine.store.get_contact("c3")
        assert contact is not None
        assert contact.metrics["last_active_at"] == "2026-02-01T10:00:00Z"
        assert [c.id for c in engine.store.iter_contacts() if "loyal" in c.tags] == ["c3"]
