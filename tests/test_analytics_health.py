"""The health score: hand-worked parts and scores on both stores, as a fact rules use, in
``clm explain`` and ``clm report``; its definition edited, and refused with file, line and
pointer when wrong."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clm_engine import Engine, VirtualClock
from clm_engine.analytics.definitions import DefinitionsError
from clm_engine.analytics.figures import kpis
from clm_engine.analytics.health import DEFAULT_PATH, health_in_context, health_of, load_health
from clm_engine.errors import RulesetError
from clm_engine.evaluation import EventCounter
from clm_engine.store.analytics_dialect import analytics_db
from clm_engine.types import FactContext

from .helpers import event, store_in
from .test_analytics_kpis import HISTORY, NOW, STAGES

#: b opened two support tickets in March.
TICKETS = [event("b", "support.ticket", day, status="open") for day in ("2026-03-02", "2026-03-20")]

#: Scores as of NOW (window 2026-01-01 to 04-01), default definition: usage = page views,
#: 20 for full marks; tickets: 5 is 0; nps: the latest answer x 10. Weights .5 / .2 / .3.
#: a: 2 views -> 10, no ticket -> 100, nps 10 -> 100: (5 + 20 + 30) = 55.
#: b: no view -> 0, 2 tickets -> 60, nps 8 -> 80: (0 + 12 + 24) = 36.
#: d: 1 view -> 5, no ticket -> 100, no answer (left out): (2.5 + 20) / .7 = 32.14.
#: e: no view, no ticket, nps 3 in 2025-07 is outside the window: 20 / .7 = 28.57.
EXPECTED = {"a": 55.0, "b": 36.0, "c": 47.0, "d": 32.1, "e": 28.6, "f": 28.6}

RULES = {
    "ruleset": "success",
    "version": 1,
    "rules": [
        {
            "id": "healthy-promoter",
            "when": {"event": "nps.answered"},
            "if": {"fact": "contact.health.score", "op": "gte", "value": 50},
            "then": [{"action": "tag.add", "with": {"tag": "healthy"}}],
        }
    ],
}


def _history():
    return sorted([*HISTORY, *TICKETS], key=lambda e: e["occurred_at"])


def test_scores_and_parts_worked_by_hand(tmp_path, on_store):
    rules = tmp_path / "success.json"
    rules.write_text(json.dumps(RULES))
    with Engine(store_in(tmp_path), clock=VirtualClock(NOW), rulesets=[rules]) as engine:
        engine.ingest_many(_history())
        db, definition = analytics_db(engine.store), load_health()
        scores = {c: health_of(db, c, definition, NOW).score for c in EXPECTED}
        assert scores == EXPECTED
        b = health_of(db, "b", definition, NOW).as_dict()
        assert [(p["name"], p["value"], p["score"]) for p in b["parts"]] == [
            ("usage", 0, 0.0),
            ("tickets", 2, 60.0),
            ("nps", 8, 80.0),
        ]
        # The fact, when each NPS answer came in (the answer itself counts): a on 02-20
        # (1 view -> 5, 100, 10 -> 100: 52.5); c on 03-05 (0, 100, 9 -> 90: 47); b on 02-10
        # (0, 100, 5 -> 50: 35) and 02-25 (0, 100, 8 -> 80: 44); e's 2025 answer (0, 100,
        # 3 -> 30: 29). Only a is tagged.
        tagged = sorted(c.id for c in engine.store.iter_contacts() if "healthy" in c.tags)
        assert tagged == ["a"]
        summary = kpis(db, now=NOW, stages=STAGES_MODEL)["health"]
    # seven contacts (the marketing contact too, like e): (55 + 36 + 47 + 32.14 + 3 x 28.57) / 7
    assert summary["contacts"] == 7 and summary["mean"] == 36.6
    assert [h["contacts"] for h in summary["histogram"]][2:6] == [3, 2, 1, 1]
    assert {p["name"]: p["contacts"] for p in summary["parts"]} == {
        "usage": 7,
        "tickets": 7,
        "nps": 3,
    }


STAGES_MODEL = ("awareness", "consideration", "purchase", "retention", "advocacy")


def test_explain_shows_the_parts(run, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in _history()) + "\n")
    rules = tmp_path / "stages.json"
    rules.write_text(json.dumps(STAGES))
    assert run("ingest", "--rulesets", str(rules), str(events)).exit_code == 0
    # as of now (2026-11-02, the CLI's clock is the system's): b's March events are out of a
    # 90-day window, so explain as of the data with a definition whose window reaches back.
    wide = json.loads(DEFAULT_PATH.read_text())
    wide["window"] = "P3650D"
    (tmp_path / "health.json").write_text(json.dumps(wide))
    done = run(
        "explain", "b", "--rulesets", str(rules), "--rulesets", str(tmp_path / "health.json")
    )
    assert done.exit_code == 0, done.output
    assert "health score 36" in done.output
    assert "tickets: 60" in done.output and "(weight 0.2; count 2)" in done.output
    assert "nps: 80" in done.output and "value 8" in done.output
    answer = json.loads(
        run(
            "explain",
            "d",
            "--json",
            "--rulesets",
            str(rules),
            "--rulesets",
            str(tmp_path / "health.json"),
        ).output
    )
    assert answer["health"]["score"] == 32.1
    assert answer["health"]["parts"][2] == {
        "name": "nps",
        "measure": "value",
        "weight": 0.3,
        "value": None,
        "score": None,
    }


def test_an_edited_definition_beside_the_rulesets(tmp_path, on_store):
    edited = json.loads(DEFAULT_PATH.read_text())
    edited["parts"] = [
        {
            "name": "tickets",
            "weight": 1,
            "measure": "count",
            "events": ["support.ticket"],
            "target": 4,
            "better": "lower",
        },
    ]
    (tmp_path / "health.json").write_text(json.dumps(edited))
    with Engine(
        store_in(tmp_path), clock=VirtualClock(NOW), rulesets=[tmp_path / "health.json"]
    ) as engine:
        engine.ingest_many(_history())
        figures = kpis(
            analytics_db(engine.store),
            now=NOW,
            stages=STAGES_MODEL,
            health=engine.rulebook.documents["health"]["default"],
        )
    # b: 2 tickets of 4 -> 50; the six others 100.
    assert figures["health"]["mean"] == round((50 + 6 * 100) / 7, 1)


def test_a_wrong_definition_names_file_line_and_pointer(run, tmp_path):
    bad = tmp_path / "health.json"
    shutil.copy(DEFAULT_PATH, bad)
    text = (
        bad.read_text()
        .replace('"target": 20', '"target": 0')
        .replace('"fact": "metrics.nps_score", ', "")
    )
    bad.write_text(text)
    with pytest.raises(DefinitionsError) as caught:
        load_health(bad)
    pointers = [p.pointer for p in caught.value.problems]
    assert pointers == ["/parts/0/target", "/parts/2"]
    done = run("analytics", "validate", str(bad))
    assert done.exit_code == 1
    lines = text.splitlines()
    line = lines.index(next(text for text in lines if '"target": 0' in text)) + 1
    assert f"{bad}:{line}:" in done.output and "/parts/0/target" in done.output
    assert "needs the contact's value it reads" in done.output
    with pytest.raises(RulesetError, match=r"health.json:\d+:\d+: /parts/0/target"):
        Engine(tmp_path / "clm.db", rulesets=[bad])
    good = run("analytics", "validate", str(DEFAULT_PATH))
    assert good.exit_code == 0 and "usage x 0.5, tickets x 0.2, nps x 0.3" in good.output


day = st.integers(0, 200)
history_events = st.lists(
    st.tuples(
        st.sampled_from(["page.viewed", "login", "support.ticket", "nps.answered"]),
        day,
        st.integers(0, 10),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(history=history_events, at=day)
def test_the_fact_and_the_store_agree(history, at):
    """``contact.health.score`` (the contact as rules see it) and the store's query give the
    same score and parts for any history, as of any day."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    now = start + timedelta(days=at, hours=12)
    events = [
        event("c", kind, (start + timedelta(days=d)).date().isoformat(), score=score, status="open")
        for kind, d, score in history
        if start + timedelta(days=d) <= now
    ]
    definition = load_health()
    with Engine(":memory:", clock=VirtualClock(now)) as engine:
        engine.ingest_many([event("c", "signup", "2025-12-31"), *events])
        contact = engine.contact("c")
        assert contact is not None
        ctx = FactContext(
            contact=contact, now=now, count_events=EventCounter(engine.store.read(), "c")
        )
        rules_see = health_in_context(ctx, definition)
        stored = health_of(analytics_db(engine.store), "c", definition, now)
    assert rules_see.score == stored.score
    assert [p["score"] for p in rules_see.parts] == [p["score"] for p in stored.parts]
