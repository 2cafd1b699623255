"""The demo's referral step on a small sample history: extra events in, a summary out."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from clm_referral import ledger
from clm_referral.demo import add_to_history, demo_decisions, extra_events, summary

from clm_engine import Engine, VirtualClock
from clm_engine.simulation import read_events
from clm_engine.synthetic import bad_lines, generate_events, write_jsonl

#: The example ruleset the repository ships, in rulesets/ at its root.
RULESET = Path(__file__).resolve().parents[3] / "rulesets" / "referral-rewards.json"


def test_extra_events_are_deterministic_and_plausible():
    events = list(generate_events(400, months=3, seed=5))
    extras = extra_events(events, seed=5)
    assert extras == extra_events(events, seed=5)
    kinds = Counter(e["type"] for e in extras)
    assert kinds["onboarding.completed"] > 10 and kinds["purchase.refunded"] >= 1
    assert kinds["signup"] == kinds["referral.signup"] == 11  # 3 self, 2 devices, 6 burst
    assert len({e["id"] for e in extras}) == len(extras)
    assert [e["occurred_at"] for e in extras] == sorted(e["occurred_at"] for e in extras)


def test_a_small_history_gives_granted_held_and_reversed_rewards(monkeypatch, tmp_path):
    path = tmp_path / "events.jsonl"
    write_jsonl([*generate_events(600, months=4, seed=7), *bad_lines(2)], path)
    added = add_to_history(path, seed=7)
    assert added > 20
    monkeypatch.setenv("CLM_LOAD_PLUGINS", "referral")
    clock = VirtualClock(datetime(2026, 12, 1, tzinfo=UTC))
    db = tmp_path / "clm.db"
    with (
        Engine(db, clock=clock, rulesets=[RULESET]) as engine,
    ):
        engine.ingest_many(read_events(path).events)
        engine.dispatch()
        rows = ledger.rewards(engine.store.tables)
        states = Counter("held" if r["held_reasons"] else r["state"] for r in rows)
        assert states["approved"] > 5 and states["held"] >= 4 and states["reversed"] >= 1
        assert ledger.check_balanced(engine.store.tables) == {}
    picks = demo_decisions(db)
    assert set(picks) == {"approve", "reject", "redeem"}
    text = summary(db)
    for wanted in (
        "referral rate",
        "held for review",
        "reversed",
        "top referrers",
        "self-referral",
    ):
        assert wanted in text, text
