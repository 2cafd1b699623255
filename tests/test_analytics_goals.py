"""Conversions and revenue attributed to rules that declare a goal, and the journey map's
counts, on both stores against a history worked out by hand; the goal filter's SQL held to the
rule language's own evaluation by a property test."""

from __future__ import annotations

import json
import sqlite3
from contextlib import nullcontext
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from clm_engine import Engine, VirtualClock
from clm_engine.analytics.figures import kpis
from clm_engine.conditions import ConditionCompiler
from clm_engine.errors import RulesetError
from clm_engine.models import Condition, Contact, Event, Goal
from clm_engine.registry import Registry
from clm_engine.rulesets.goals import goal_issues, goal_query
from clm_engine.store import analytics as sql
from clm_engine.store.analytics_dialect import POSTGRES, SQLITE, PostgresAnalytics, analytics_db
from clm_engine.types import FactContext

from .helpers import store_in
from .plugins.notify_plugin import installed
from .test_analytics_kpis import HISTORY, NOW, STAGES

NUDGES = {
    "ruleset": "nudges",
    "version": 1,
    "rules": [
        {
            "id": "welcome-note",
            "when": {"event": "signup"},
            "then": [{"action": "test.notify"}],
            "goal": {"event": "purchase", "within": "P30D", "revenue": "amount"},
        },
        {
            "id": "browsing-note",
            "when": {"event": "page.viewed"},
            "if": {"fact": "contact.stage", "op": "in", "value": ["awareness"]},
            "then": [{"action": "test.notify"}],
            "goal": {
                "event": "purchase",
                "where": {"fact": "event.properties.amount", "op": "gte", "value": 50},
                "within": {"days": 60},
                "revenue": "amount",
            },
        },
    ],
}


@pytest.fixture
def figures(tmp_path, on_store):
    files = []
    for name, document in (("stages", STAGES), ("nudges", NUDGES)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps(document))
    with Engine(
        store_in(tmp_path), clock=VirtualClock(NOW), rulesets=files, plugins=installed()
    ) as engine:
        engine.ingest_many(sorted(HISTORY, key=lambda e: e["occurred_at"]))
        yield kpis(
            analytics_db(engine.store),
            now=NOW,
            stages=engine.stages,
            rulesets=[loaded.ruleset for loaded in engine.rulebook.rulesets],
        )


def test_conversions_and_revenue_per_rule_goal(figures):
    goals = {g["rule"]: g for g in figures["goals"]}
    assert set(goals) == {"welcome-note", "browsing-note"}
    # welcome-note fires on the signups of a (01-05), b (01-20), c (02-03), d (02-10); within
    # 30 days: a's 100 on 01-10 (a's 50 on 02-15 is 41 days on; b's 30 on 03-01, 40 days).
    welcome = goals["welcome-note"]
    assert (welcome["exposed"], welcome["converted"], welcome["conversions"]) == (4, 1, 1)
    assert (welcome["revenue"], welcome["conversion_rate"]) == (100, 0.25)
    assert welcome["revenue_per_exposed"] == 25.0
    # browsing-note fires for page views in awareness: a 01-07, d 02-11 (a's 03-03 view is in
    # retention). a bought 100 and 50 within 60 days, both at least 50.
    browsing = goals["browsing-note"]
    assert (browsing["exposed"], browsing["converted"], browsing["conversions"]) == (2, 1, 2)
    assert (browsing["revenue"], browsing["conversion_rate"]) == (150, 0.5)
    assert browsing["goal"] == (
        "purchase within 60 days of the first exposure (filtered); revenue: amount"
    )


def test_the_journey_map_counts(figures):
    journey = figures["journey"]
    stages = {s["stage"]: s for s in journey["stages"]}
    assert [s["stage"] for s in journey["stages"]] == list(STAGES_ORDER)
    assert (stages["awareness"]["reached"], stages["awareness"]["entered_first"]) == (7, 7)
    assert (stages["retention"]["reached"], stages["retention"]["contacts_now"]) == (2, 1)
    moves = {m["rule"]: m for m in journey["moves"]}
    # looking: a and d; first-order: a, b, e, f; repeat-order: a, e; unhappy-customer: e back.
    assert {rule: m["transitions"] for rule, m in moves.items()} == {
        "signed-up": 0,
        "looking": 2,
        "first-order": 4,
        "repeat-order": 2,
        "unhappy-customer": 1,
    }
    assert moves["looking"]["from"] == ["awareness"]
    assert moves["first-order"]["from"] == ["any stage"]
    assert (
        moves["unhappy-customer"]["from"] == ["retention"] and moves["unhappy-customer"]["backward"]
    )
    touchpoints = {t["rule"]: t for t in journey["touchpoints"]}
    assert touchpoints["welcome-note"]["stages"] == ["any stage"]
    assert (touchpoints["welcome-note"]["fires"], touchpoints["welcome-note"]["contacts"]) == (4, 4)
    assert touchpoints["browsing-note"]["stages"] == ["awareness"]
    assert touchpoints["browsing-note"]["fires"] == 2


STAGES_ORDER = ("awareness", "consideration", "purchase", "retention", "advocacy")


def test_a_goal_the_store_cannot_count_is_a_ruleset_error(tmp_path):
    bad = json.loads(json.dumps(NUDGES))
    bad["rules"][1]["goal"]["where"] = {
        "all": [
            {"fact": "contact.stage", "op": "eq", "value": "x"},
            {"fact": "event.properties.sku", "op": "matches", "value": "^A"},
            {"fact": "event.properties.amount", "op": "gt", "value": "50"},
        ]
    }
    path = tmp_path / "nudges.json"
    path.write_text(json.dumps(bad, indent=2))
    with pytest.raises(RulesetError) as caught:
        Engine(tmp_path / "clm.db", rulesets=[path], plugins=installed())
    message = str(caught.value)
    assert "/rules/1/goal/where/all/0/fact: a goal's where tests the goal event's" in message
    assert "/rules/1/goal/where/all/1/op: a goal's where cannot use 'matches'" in message
    assert "/rules/1/goal/where/all/2/value: gt takes a number here" in message
    assert f"{path}:" in message
    bad = json.loads(json.dumps(NUDGES))
    bad["rules"][0]["goal"]["within"] = "P1Q"
    path.write_text(json.dumps(bad, indent=2))
    with pytest.raises(RulesetError, match=r"nudges.json:\d+:\d+: /rules/0/goal/within: 'P1Q'"):
        Engine(tmp_path / "clm.db", rulesets=[path], plugins=installed())


# -- the goal filter's SQL and the rule language agree -------------------------------------------

KEYS = ("a", "b")
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, -1.5, 2.0]),
    st.sampled_from(["x", "y", "1", ""]),
    st.lists(st.integers(0, 2), max_size=2),
    st.fixed_dictionaries({"c": st.integers(0, 2)}),
)
properties = st.dictionaries(st.sampled_from(KEYS), values, max_size=2)
numbers = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 2.0]))
texts = st.sampled_from(["x", "y", "1"])
facts = st.sampled_from(["event.properties.a", "event.properties.b", "event.properties.a.c"])
leaves = st.one_of(
    st.fixed_dictionaries(
        {
            "fact": facts,
            "op": st.sampled_from(["eq", "ne"]),
            "value": st.one_of(numbers, texts, st.booleans()),
        }
    ),
    st.fixed_dictionaries(
        {"fact": facts, "op": st.sampled_from(["lt", "lte", "gt", "gte"]), "value": numbers}
    ),
    st.fixed_dictionaries(
        {
            "fact": facts,
            "op": st.sampled_from(["in", "not_in"]),
            "value": st.one_of(
                st.lists(numbers, min_size=1, max_size=3), st.lists(texts, min_size=1, max_size=3)
            ),
        }
    ),
    st.fixed_dictionaries({"fact": facts, "op": st.just("exists"), "value": st.booleans()}),
)
conditions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.fixed_dictionaries({"all": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"not": inner}),
    ),
    max_leaves=5,
)
_REGISTRY = Registry()
_COMPILER = ConditionCompiler(operators=_REGISTRY.operators, facts=_REGISTRY.facts)
_CONDITION = TypeAdapter(Condition)
_DB = sqlite3.connect(":memory:")
_MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


def sql_says(condition: Condition, props: dict) -> bool:
    query = goal_query(Goal(event="x", where=condition))
    params: dict = {"p": json.dumps(props)}
    assert query.where is not None
    where = sql.goal_filter(SQLITE, query.where, "properties", params)
    return bool(_DB.execute(f"SELECT {where} FROM (SELECT :p AS properties)", params).fetchone()[0])


@settings(max_examples=400, deadline=None)
@given(condition=conditions, props=properties)
def test_goal_filter_sql_agrees_with_the_rule_language(condition, props):
    parsed = _CONDITION.validate_python(condition)
    assert goal_issues(Goal(event="x", where=parsed), "") == []
    compiled = _COMPILER.compile([parsed])
    event = Event(contact_id="c", type="x", occurred_at=_MOMENT, properties=props)
    ctx = FactContext(contact=Contact(id="c"), now=_MOMENT, event=event)
    python = compiled.matching(ctx) == [0]
    assert sql_says(parsed, props) == python, (condition, props)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(condition=conditions, props=properties)
def test_goal_filter_sql_agrees_on_postgresql(postgres_url, condition, props):
    """The same on PostgreSQL's jsonb (read-only queries: one database for every example)."""
    import psycopg

    parsed = _CONDITION.validate_python(condition)
    compiled = _COMPILER.compile([parsed])
    event = Event(contact_id="c", type="x", occurred_at=_MOMENT, properties=props)
    python = compiled.matching(FactContext(contact=Contact(id="c"), now=_MOMENT, event=event))
    query = goal_query(Goal(event="x", where=parsed))
    assert query.where is not None
    params: dict = {"p": json.dumps(props)}
    where = sql.goal_filter(POSTGRES, query.where, "properties", params)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        db = PostgresAnalytics(lambda: nullcontext(conn))
        row = db.execute(
            f"SELECT {where} FROM (SELECT CAST(:p AS jsonb) AS properties) AS t", params
        ).fetchone()
    assert bool(row[0]) == (python == [0]), (condition, props)
