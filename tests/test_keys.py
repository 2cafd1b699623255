"""Decision keys cannot collide, whatever ids hold; older databases keep their keys working."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlite_utils
from hypothesis import given
from hypothesis import strategies as st

from clm_engine import Engine, VirtualClock
from clm_engine.evaluation import decision_key
from clm_engine.store.sqlite_schema import migrations

HOSTILE = st.text(alphabet="ab/%2F:x", min_size=1, max_size=8)


@given(
    a=st.tuples(HOSTILE, HOSTILE, st.integers(0, 3)),
    b=st.tuples(HOSTILE, HOSTILE, st.integers(0, 3)),
)
def test_no_two_decisions_share_a_key(a, b):
    if a != b:
        assert decision_key("rs", "rule", *a) != decision_key("rs", "rule", *b)


def test_contacts_whose_ids_and_event_ids_would_have_collided_keep_their_own_actions(tmp_path):
    rules = tmp_path / "tags.json"
    rules.write_text(
        json.dumps(
            {
                "ruleset": "tags",
                "version": 1,
                "rules": [
                    {
                        "id": "welcome",
                        "when": {"event": "signup"},
                        "then": [{"action": "tag.add", "with": {"tag": "new"}}],
                    }
                ],
            }
        )
    )
    clock = VirtualClock(datetime(2026, 11, 1, tzinfo=UTC))
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=[rules]) as engine:
        when = "2026-10-01T10:00:00Z"
        engine.ingest({"id": "x", "contact_id": "a/b", "type": "signup", "occurred_at": when})
        engine.ingest({"id": "b/x", "contact_id": "a", "type": "signup", "occurred_at": when})
        engine.ingest({"id": "%2F", "contact_id": "a%", "type": "signup", "occurred_at": when})
        for contact_id in ("a/b", "a", "a%"):
            [row] = engine.store.actions_for(contact_id)
            assert row.status == "done"
            assert engine.contact(contact_id).tags == ["new"]
        keys = {r.key for c in ("a/b", "a", "a%") for r in engine.store.actions_for(c)}
        assert keys == {
            "tags/welcome/a%2Fb/x/0",
            "tags/welcome/a/b%2Fx/0",
            "tags/welcome/a%25/%252F/0",
        }


def test_the_migration_re_encodes_the_keys_of_older_databases():
    db = sqlite_utils.Database(memory=True)
    migrations.apply(db, stop_before="m007_same_history_same_outcome")
    old = "rs/welcome/a/b/evt/1/0"  # contact "a/b", event "evt/1", as keys were joined
    db.execute(
        "INSERT INTO outbox (key, ruleset, version, content_hash, rule, contact_id, action, "
        "params, due_at, created_at) VALUES (?, 'rs', 1, 'h', 'welcome', 'a/b', 'tag.add', "
        "'{}', '2026-01-01', '2026-01-01')",
        [old],
    )
    db.execute(  # its follow-up (a drip step)
        "INSERT INTO outbox (key, ruleset, version, content_hash, rule, contact_id, action, "
        "params, due_at, created_at) VALUES (?, 'rs', 1, 'h', 'welcome', 'a/b', 'x.step', "
        "'{}', '2026-01-01', '2026-01-01')",
        [old + "/step-2"],
    )
    db.execute(
        "INSERT INTO traces (contact_id, ruleset, version, content_hash, rule, occurrence, "
        "trigger, decision, actions, at, recorded_at) VALUES ('a/b', 'rs', 1, 'h', 'welcome', "
        "'evt/1', 'signup event', 'fired', ?, '2026-01-01', '2026-01-01')",
        [json.dumps([old])],
    )
    migrations.apply(db)
    new = decision_key("rs", "welcome", "a/b", "evt/1", 0)
    assert new == "rs/welcome/a%2Fb/evt%2F1/0"
    keys = [row[0] for row in db.execute("SELECT key FROM outbox ORDER BY seq")]
    assert keys == [new, new + "/step-2"]
    [actions] = db.execute("SELECT actions FROM traces").fetchone()
    assert json.loads(actions) == [new]
