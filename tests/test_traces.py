"""Traces record what a decision saw; `clm explain` rebuilds the condition tree from it.

The tree `clm explain` shows must be the tree the explain interpreter gave when the decision
was taken (what traces used to store): checked here end to end over a ruleset with every kind
of condition, an earlier ruleset version, traces written before m009, and pruning.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from clm_engine import Engine, VirtualClock, hookimpl
from clm_engine.conditions import CompiledConditions, ConditionCompiler
from clm_engine.explain import explain
from clm_engine.models import utc_text
from clm_engine.store.sqlite import _dumps
from tests.helpers import event


@pytest.fixture
def clock():
    return VirtualClock(datetime(2026, 11, 2, 12, 0, tzinfo=UTC))


def write_ruleset(tmp_path, rules, version=1, **extra):
    path = tmp_path / "rules.json"
    ruleset = {"ruleset": "t", "version": version, "trace": "all", "rules": rules, **extra}
    path.write_text(json.dumps(ruleset))
    return path


def tag(name):
    return [{"action": "tag.add", "with": {"tag": name}}]


class PlanFacts:
    """A plugin's facts: a datetime, and a mapping holding one (not plain JSON)."""

    @hookimpl
    def register_facts(self, register):
        def renewal(ctx):
            return datetime(2026, 12, 1, tzinfo=UTC)

        def account(ctx):
            return {"seats": 12, "since": datetime(2025, 1, 1, tzinfo=UTC), "regions": ("eu",)}

        register("account.renewal_at", renewal, type="time")
        register("account.seats", lambda ctx: 12, type="number")
        register("account.details", account)


@pytest.fixture
def plan_facts():
    return {"plan-facts": PlanFacts()}


VARIETY = [
    {
        "id": "pricing-visit",
        "when": {
            "event": "page.viewed",
            "where": {"fact": "event.properties.path", "op": "matches", "value": "^/pricing"},
        },
        "if": {"all": [
            {"fact": "events.count", "args": {"type": "page.viewed", "within": "P7D"},
             "op": "gte", "value": 2},
            {"fact": "events.count", "args": {"type": "page.viewed"}, "op": "lt", "value": 100},
            {"any": [
                {"fact": "contact.created_at", "op": "within_last", "value": "P30D"},
                {"fact": "contact.created_at", "op": "older_than", "value": {"days": 400}},
                {"not": {"fact": "contact.attributes.plan", "op": "in", "value": ["pro", "team"]}},
            ]},
            {"not": {"fact": "contact.tags", "op": "contains", "value": "blocked"}},
            {"fact": "contact.created_at", "op": "before", "value": "now"},
            {"fact": "event.occurred_at", "op": "after", "value": "2026-01-01"},
            {"op": "in_segment", "value": "engaged"},
            {"fact": "contact.attributes.seats", "op": "lte",
             "value": {"fact": "account.seats"}},
            {"fact": "contact.attributes.missing", "op": "exists", "value": False},
        ]},
        "then": tag("warm"),
    },
    {
        "id": "plugin-facts",
        "when": {"event": "page.viewed"},
        "if": {"all": [
            {"fact": "account.renewal_at", "op": "after", "value": "2026-11-15"},
            {"fact": "account.details", "op": "exists", "value": True},
            {"fact": "account.details", "op": "ne", "value": "2026-12-01"},
            {"fact": "contact.stage", "op": "stage_at_least", "value": "consideration"},
            {"fact": "contact.days_since_signup", "op": "between", "value": [0, 10]},
            {"fact": "contact.email", "op": "ends_with", "value": "@example.com"},
        ]},
        "then": tag("renewing"),
    },
    {
        "id": "never",
        "when": {"event": "page.viewed"},
        "if": {"fact": "contact.metrics.total_spent", "op": "gt", "value": 10_000},
        "then": tag("whale"),
    },
    {"id": "always", "when": {"event": "page.viewed"}, "then": tag("visitor")},
]  # fmt: skip

SEGMENTS = {"engaged": {"fact": "contact.tags", "op": "not_contains", "value": "churned"}}


def test_explain_rebuilds_the_tree_the_interpreter_gave_when_deciding(
    tmp_path, clock, plan_facts, monkeypatch
):
    """Old style (the whole tree, built as the decision was taken) against rebuilt."""
    live: dict[tuple[int, str, str], dict] = {}
    compile_, record = ConditionCompiler.compile, CompiledConditions.record

    def compile_and_remember(self, conditions):
        compiled = compile_(self, conditions)
        compiled.explaining = (self, list(conditions))
        return compiled

    def record_and_explain(self, index, ctx):
        compiler, conditions = self.explaining
        if conditions[index] is not None:
            tree = compiler.explain(conditions[index], ctx)
            stored = json.loads(_dumps(tree))  # as a trace stored it
            live[(id(conditions[index]), ctx.contact.id, utc_text(ctx.now))] = stored
        return record(self, index, ctx)

    monkeypatch.setattr(ConditionCompiler, "compile", compile_and_remember)
    monkeypatch.setattr(CompiledConditions, "record", record_and_explain)
    rules = write_ruleset(tmp_path, VARIETY, segments=SEGMENTS)
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[rules], plugins=plan_facts)
    engine.ingest(event("c1", "signup", "2026-10-20", email="ann@example.com", plan="pro", seats=3))
    for day, path in (
        ("2026-10-28", "/pricing"),
        ("2026-10-30", "/blog"),
        ("2026-11-01", "/pricing/team"),
    ):
        engine.ingest(event("c1", "page.viewed", day, path=path))  # fmt: skip
    engine.ingest(event("c2", "page.viewed", "2026-11-01", path="/pricing"))

    compared = 0
    for contact in ("c1", "c2"):
        for entry in explain(engine, contact, limit=50)["rules"]:
            compiled = engine.rulebook.rules[("t", entry["rule"])]
            for decision in entry["decisions"]:
                if compiled.condition is None:
                    assert decision["conditions"] is None
                    continue
                at, condition = decision["at"][:19], id(compiled.condition)
                [key] = [k for k in live if k[:2] == (condition, contact) and k[2][:19] == at]
                assert decision["conditions"] == live[key], entry["rule"]
                compared += 1
    assert compared >= 9
    decisions = {
        e["rule"]: [d["decision"] for d in e["decisions"]] for e in explain(engine, "c1")["rules"]
    }
    assert decisions["pricing-visit"][0] == "fired" and "no_match" in decisions["never"]
    assert len(decisions["plugin-facts"]) == 3
    engine.close()


def test_a_trace_holds_the_values_read_not_the_tree(tmp_path, clock):
    rules = write_ruleset(
        tmp_path,
        [
            {
                "id": "recent",
                "when": {"event": "purchase"},
                "if": {
                    "all": [
                        {"fact": "event.properties.amount", "op": "gte", "value": 10},
                        {"fact": "contact.created_at", "op": "within_last", "value": "P30D"},
                        {"fact": "contact.attributes.plan", "op": "eq", "value": "pro"},
                    ]
                },
                "then": tag("recent"),
            }
        ],
    )
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[rules])
    engine.ingest(event("c1", "signup", "2026-10-20"))
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=25))
    [trace] = engine.store.traces("c1", rule="recent")
    assert trace.tree is None
    assert trace.seen == {
        "event.properties.amount": 25,
        "contact.created_at": {"dt": "2026-10-20T10:00:00+00:00"},
    }  # contact.attributes.plan is missing: no key
    [decision] = explain(engine, "c1", rule="recent")["rules"][0]["decisions"]
    amount, created, plan = decision["conditions"]["all"]
    assert (amount["actual"], created["result"], plan["missing"]) == (25, True, True)
    assert created["compared_to"] == ["2026-10-02T10:00:00+00:00", "2026-11-01T10:00:00+00:00"]
    engine.close()


def test_a_decision_of_an_earlier_version_is_explained_with_that_versions_conditions(
    tmp_path, clock
):
    def version(number, threshold):
        condition = {"fact": "event.properties.amount", "op": "gte", "value": threshold}
        rule = {"id": "big", "when": {"event": "purchase"}, "if": condition, "then": tag("big")}
        return write_ruleset(tmp_path, [rule], version=number)

    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[version(1, 10)])
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=25))
    version(2, 50)
    engine.reload_rulesets()
    engine.ingest(event("c1", "purchase", "2026-11-02", amount=25))
    newer, older = explain(engine, "c1", rule="big")["rules"][0]["decisions"]
    assert (newer["version"], newer["conditions"]["value"], newer["decision"]) == (
        2,
        50,
        "no_match",
    )
    assert (older["version"], older["conditions"]["value"], older["decision"]) == (1, 10, "fired")
    assert older["conditions"]["result"] is True and older["conditions"]["actual"] == 25
    engine.close()


def test_traces_written_before_m009_keep_their_tree(tmp_path, clock):
    rules = write_ruleset(tmp_path, [{"id": "r", "when": {"event": "purchase"}, "then": tag("x")}])
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[rules])
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=25))
    old_tree = {"fact": "event.properties.amount", "op": "gte", "value": 10, "actual": 25}
    with engine.store.write() as tx:  # a trace as m002 to m008 wrote them: a tree, no seen
        tx.conn.execute(
            "UPDATE traces SET tree = ?, seen = NULL WHERE rule = 'r'",
            [json.dumps({**old_tree, "result": True})],
        )
    [decision] = explain(engine, "c1", rule="r")["rules"][0]["decisions"]
    assert decision["conditions"] == {**old_tree, "result": True}
    engine.close()


def test_pruned_traces_go_and_explain_says_so(tmp_path, clock):
    rules = write_ruleset(
        tmp_path,
        [
            {
                "id": "buyer",
                "when": {"event": "purchase"},
                "if": {"fact": "event.properties.amount", "op": "gt", "value": 0},
                "then": tag("buyer"),
            },
            {"id": "visitor", "when": {"event": "page.viewed"}, "then": tag("visitor")},
        ],
    )
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[rules])
    engine.ingest(event("c1", "purchase", "2026-06-01", amount=5, order_id="o1"))
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=7, order_id="o2"))
    engine.ingest(event("c1", "page.viewed", "2026-06-02"))
    before = utc_text(datetime(2026, 8, 1, tzinfo=UTC))
    now = utc_text(clock.now())
    assert engine.store.traces_pruned_before() is None
    assert engine.store.prune_traces(before, at=now, dry_run=True) == 2
    assert len(engine.store.traces("c1")) == 3  # a dry run changes nothing
    assert engine.store.prune_traces(before, at=now, batch_size=1) == 2
    assert [t.at[:10] for t in engine.store.traces("c1")] == ["2026-11-01"]
    assert engine.store.traces_pruned_before() == before
    assert len(engine.store.actions_for("c1")) == 3  # the outbox rows (the keys) stay

    by_rule = {e["rule"]: e for e in explain(engine, "c1")["rules"]}
    recent, pruned = by_rule["buyer"]["decisions"]
    assert recent["conditions"]["actual"] == 7 and "pruned" not in recent
    assert pruned["pruned"] is True and pruned["conditions"] is None
    assert "trace was pruned" in pruned["detail"] and pruned["at"].startswith("2026-06-01")
    assert pruned["actions"][0]["status"] == "done"
    [visit] = by_rule["visitor"]["decisions"]
    assert visit["pruned"] is True and visit["occurrence"]
    # The same purchase again is still a no-op: what makes a decision happen once stayed.
    assert (
        engine.ingest(event("c1", "purchase", "2026-06-01", amount=5, order_id="o1")).enqueued == 0
    )
    engine.close()
