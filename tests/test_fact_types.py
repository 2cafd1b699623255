"""Facts declare their value type, and ``clm validate`` checks each condition against it.

What an ops person sees: a value that can never match its fact (a string compared with ``gt``
on a numeric metric) is an error at the value's pointer, line and column; an operator that
cannot test the fact's type is an error at the operator; an unknown operator is answered by
meaning (``greater_than`` -> ``gt``) before spelling.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from clm_engine import hookimpl
from clm_engine.cli import cli
from clm_engine.errors import PluginError
from clm_engine.plugins import FACT_TYPES
from clm_engine.registry import Registry


@pytest.fixture
def validate(tmp_path, monkeypatch):
    """Write a ruleset with one rule whose ``if`` is ``condition``; run ``clm validate --json``."""
    monkeypatch.chdir(tmp_path)

    def run(condition=None, *, when=None, text=None, plugins=()):
        if text is None:
            rule = {
                "id": "r",
                "when": when or {"event": "purchase"},
                "then": [{"action": "tag.add", "with": {"tag": "x"}}],
            }
            if condition is not None:
                rule["if"] = condition
            text = json.dumps({"ruleset": "types", "version": 1, "rules": [rule]}, indent=2)
        (tmp_path / "types.json").write_text(text)
        registry = Registry(plugins)
        result = CliRunner().invoke(cli, ["validate", "types.json", "--json"], obj=registry)
        answer = json.loads(result.output)
        assert result.exit_code == (0 if answer["ok"] else 1)
        return answer["problems"]

    return run


def leaf(fact, op, value, **extra):
    return {"fact": fact, "op": op, "value": value, **extra}


def test_a_string_compared_with_gt_on_a_numeric_metric_is_an_error_at_the_value(validate):
    text = """{
  "ruleset": "types",
  "version": 1,
  "rules": [
    {
      "id": "big-buyers",
      "when": {"event": "purchase"},
      "if": {"all": [
        {"fact": "contact.metrics.total_spent", "op": "gt", "value": 100},
        {"fact": "contact.metrics.orders_count", "op": "gt", "value": "three"}
      ]},
      "then": [{"action": "tag.add", "with": {"tag": "big"}}]
    }
  ]
}
"""
    assert validate(text=text) == [
        {
            "file": "types.json",
            "pointer": "/rules/0/if/all/1/value",
            "line": 10,
            "column": 71,
            "message": "contact.metrics.orders_count is a number: compare it with a number, "
            "not a string 'three'",
            "hint": None,
        }
    ]


def test_the_cli_prints_it_with_file_line_and_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rule = {
        "id": "r",
        "when": {"event": "purchase"},
        "if": leaf("contact.metrics.orders_count", "gte", "2"),
        "then": [{"action": "tag.add", "with": {"tag": "x"}}],
    }
    text = json.dumps({"ruleset": "t", "version": 1, "rules": [rule]})
    (tmp_path / "r.json").write_text(text)
    column = text.index('"value": "2"') + len('"value": ') + 1
    result = CliRunner().invoke(cli, ["validate", "r.json"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"r.json:1:{column}: /rules/0/if/value: contact.metrics.orders_count is a number: "
        "compare it with a number, not a string '2'",
        "1 problem in 1 file",
    ]


WELL_TYPED = [
    leaf("contact.metrics.orders_count", "gte", 2),
    leaf("contact.metrics.total_spent", "between", [100, 500.5]),
    leaf("contact.metrics.orders_count", "in", [1, 2, None]),
    leaf("contact.scores.lead", "lt", 40),
    leaf("contact.stage", "eq", "purchase"),
    leaf("contact.stage", "stage_at_least", "purchase"),
    leaf("contact.email", "ends_with", "@example.com"),
    leaf("contact.email", "eq", None),
    leaf("contact.email", "contains", "@"),
    leaf("contact.tags", "contains", "vip"),
    leaf("contact.tags", "not_contains", "churned"),
    leaf("contact.consent.email", "eq", True),
    leaf("contact.consent.sms", "in", [True, None]),
    leaf("contact.created_at", "before", "2026-01-01"),
    leaf("contact.created_at", "gte", "2026-01-01T00:00:00Z"),
    leaf("contact.metrics.last_order_at", "within_last", "P30D"),
    leaf("contact.metrics.nps_category", "in", ["promoter", "passive"]),
    leaf("contact.metrics.last_order_at", "after", {"fact": "contact.created_at"}),
    leaf("contact.attributes", "exists", True),
    leaf("contact.metrics.orders_count", "is_null", False),
    leaf("events.count", "gte", 3, args={"type": "page.viewed", "within": "P30D"}),
    leaf("contact.days_since_last_active", "gt", 90),
    leaf("event.type", "starts_with", "email."),
    leaf("event.occurred_at", "after", "2026-01-01"),
    leaf("now", "before", "2030-01-01"),
    # Undeclared ("any"): attributes, event properties, plugin metrics are not checked.
    leaf("contact.attributes.plan", "gt", 3),
    leaf("contact.attributes.renewal_at", "eq", "2027-01-01"),
    leaf("event.properties.amount", "gt", "abc"),
    leaf("contact.metrics.email_bounces", "eq", "x"),
]


def test_well_typed_conditions_are_valid(validate):
    assert validate({"all": WELL_TYPED}) == []


@pytest.mark.parametrize(
    ("condition", "pointer", "message"),
    [
        (
            leaf("contact.stage", "gt", 5),
            "/value",
            "contact.stage is text: compare it with a string, not an integer 5",
        ),
        (
            leaf("contact.consent.email", "eq", "yes"),
            "/value",
            "contact.consent.email is true/false: it never equals a string 'yes' "
            "(write true or false or null)",
        ),
        (
            leaf("contact.metrics.orders_count", "eq", True),
            "/value",
            "contact.metrics.orders_count is a number: it never equals a boolean true "
            "(write a number or null)",
        ),
        (
            leaf("contact.created_at", "gt", 5),
            "/value",
            "contact.created_at is a time: compare it with an ISO date like '2026-11-02', "
            "not an integer 5",
        ),
        (
            leaf("contact.created_at", "eq", "2026-01-01"),
            "/value",
            "contact.created_at is a time: it never equals a string '2026-01-01'; compare "
            "times with before, after or between",
        ),
        (
            leaf("contact.metrics.last_order_at", "lt", "last week"),
            "/value",
            "contact.metrics.last_order_at is a time: compare it with an ISO date like "
            "'2026-11-02', not a string 'last week'",
        ),
        (
            leaf("contact.metrics.orders_count", "in", [1, "2"]),
            "/value",
            "contact.metrics.orders_count is a number: the list may hold numbers and null, "
            "not a string '2'",
        ),
        (
            leaf("contact.scores.lead", "between", ["10", "90"]),
            "/value",
            "contact.scores.lead is a number: compare it with a number, not a string '10'",
        ),
        (
            leaf("contact.email", "contains", 3),
            "/value",
            "contact.email is text: it can only contain a string, not an integer 3",
        ),
        (
            leaf("events.count", "gt", "3", args={"type": "signup"}),
            "/value",
            "events.count is a number: compare it with a number, not a string '3'",
        ),
        (
            leaf("contact.tags", "eq", "vip"),
            "/op",
            "eq tests a number, text, true/false or a time, and contact.tags is a list; "
            "use contains or not_contains",
        ),
        (
            leaf("contact.metrics.orders_count", "contains", 1),
            "/op",
            "contains tests text or a list, and contact.metrics.orders_count is a number",
        ),
        (
            leaf("contact.scores.lead", "starts_with", "1"),
            "/op",
            "starts_with tests text, and contact.scores.lead is a number",
        ),
        (
            leaf("contact.days_since_signup", "before", "2026-01-01"),
            "/op",
            "before tests a time, and contact.days_since_signup is a number",
        ),
        (
            leaf("contact.consent.email", "gt", 0),
            "/op",
            "gt tests a number, text or a time, and contact.consent.email is true/false",
        ),
        (
            leaf("contact.consent", "eq", True),
            "/op",
            "eq tests a number, text, true/false or a time, and contact.consent is a "
            "mapping; read one of its keys (a dotted path), or use exists",
        ),
        (
            leaf("contact.created_at", "before", {"fact": "contact.metrics.orders_count"}),
            "/value/fact",
            "before tests a time, and contact.metrics.orders_count is a number",
        ),
        (
            leaf("contact.metrics.orders_count", "eq", {"fact": "contact.stage"}),
            "/value/fact",
            "contact.metrics.orders_count is a number and contact.stage is text: eq never "
            "matches them",
        ),
    ],
)
def test_a_value_or_operator_that_does_not_suit_the_fact_type_is_an_error(
    validate, condition, pointer, message
):
    problems = validate(condition)
    assert [(p["pointer"], p["message"]) for p in problems] == [("/rules/0/if" + pointer, message)]
    assert problems[0]["line"] is not None


def test_every_mistake_is_reported_at_once(validate):
    problems = validate(
        {
            "any": [
                leaf("contact.metrics.orders_count", "gt", "1"),
                leaf("contact.tags", "eq", "vip"),
                leaf("contact.consent.email", "eq", "true"),
            ]
        }
    )
    assert [p["pointer"] for p in problems] == [
        "/rules/0/if/any/0/value",
        "/rules/0/if/any/1/op",
        "/rules/0/if/any/2/value",
    ]


def test_types_are_checked_in_where_and_in_segments_too(validate):
    text = json.dumps(
        {
            "ruleset": "types",
            "version": 1,
            "segments": {"vip": leaf("contact.metrics.total_spent", "gte", "1000")},
            "rules": [
                {
                    "id": "r",
                    "when": {
                        "event": "purchase",
                        "where": leaf("event.occurred_at", "eq", "2026-01-01"),
                    },
                    "then": [{"action": "tag.add", "with": {"tag": "x"}}],
                }
            ],
        },
        indent=2,
    )
    assert [p["pointer"] for p in validate(text=text)] == [
        "/segments/vip/value",
        "/rules/0/when/where/value",
    ]


@pytest.mark.parametrize(
    ("op", "meant"),
    [
        ("greater_than", "gt"),
        ("greaterThan", "gt"),
        ("equals", "eq"),
        ("Equals", "eq"),
        ("<=", "lte"),
        (">=", "gte"),
        ("==", "eq"),
        ("!=", "ne"),
        ("not_equal", "ne"),
        ("neq", "ne"),
        ("less_than", "lt"),
        ("at_least", "gte"),
        ("one_of", "in"),
        ("includes", "contains"),
        ("regex", "matches"),
        ("GTE", "gte"),
        ("not-in", "not_in"),
        ("gtee", "gte"),  # no synonym: spelling still answers
        ("exsts", "exists"),
    ],
)
def test_unknown_operators_are_answered_by_meaning_then_spelling(validate, op, meant):
    problems = validate(leaf("contact.metrics.orders_count", op, 1))
    assert len(problems) == 1
    assert problems[0]["pointer"] == "/rules/0/if/op"
    assert problems[0]["message"].endswith(f"; did you mean {meant!r}?")


def test_greater_than_is_no_longer_answered_with_older_than(validate):
    (problem,) = validate(leaf("contact.metrics.orders_count", "greater_than", 1))
    assert problem["message"] == "unknown operator 'greater_than'; did you mean 'gt'?"


# -- facts that plugins register ---------------------------------------------------------------


class TypedFacts:
    @hookimpl
    def register_facts(self, register):
        register("test.vip", lambda ctx: True, type="boolean", description="A flag.")
        register("test.renews_at", lambda ctx: {"p-1": "2027-01-01"}, type="dates")
        register("test.level", lambda ctx: 3, type="number")
        register("test.untyped", lambda ctx: 3)


class ShoutOperator:
    @hookimpl
    def register_operators(self, register):
        register(
            "shouts",
            lambda fact, value: fact.isupper(),
            fact_types=["text"],
            check=lambda fact_type, value: None if value is True else "write true",
        )


def test_computed_facts_declare_their_type_and_the_default_is_any():
    facts = Registry({"typed": TypedFacts()}).facts
    assert facts["test.vip"].type == "boolean"
    assert facts["test.untyped"].type == "any"
    assert facts["events.count"].type == "number"
    assert facts["contact.days_since_signup"].type == "number"
    assert set(FACT_TYPES) >= {"any", "number", "text", "boolean", "time", "list", "dates"}


def test_a_plugin_fact_is_checked_by_its_declared_type(validate):
    problems = validate(
        {
            "all": [
                leaf("test.vip", "eq", 1),
                leaf("test.level", "gte", 2),
                leaf("test.untyped", "eq", "anything"),
                leaf("test.renews_at", "before", "2027-01-01"),
            ]
        },
        plugins={"typed": TypedFacts()},
    )
    assert [(p["pointer"], p["message"]) for p in problems] == [
        (
            "/rules/0/if/all/0/value",
            "test.vip is true/false: it never equals an integer 1 (write true or false or null)",
        ),
        (
            "/rules/0/if/all/3/op",
            "before tests a time, and test.renews_at is dates by entity; a fact of dates by "
            'entity is for relative-time triggers ({"before": ..., "days": 30}), or exists',
        ),
    ]


def test_a_relative_trigger_needs_a_date_fact(validate):
    typed = {"typed": TypedFacts()}
    assert validate(when={"before": "test.renews_at", "days": 30}, plugins=typed) == []
    (problem,) = validate(when={"after": "test.level", "days": 1}, plugins=typed)
    assert problem["pointer"] == "/rules/0/when/after"
    assert problem["message"] == (
        "'test.level' is not a date (its type is 'number'): before/after/on need a date fact"
    )


def test_a_plugin_operator_says_which_fact_types_it_tests_and_checks_its_value(validate):
    problems = validate(
        {
            "all": [
                leaf("contact.email", "shouts", True),
                leaf("contact.email", "shouts", 1),
                leaf("contact.scores.lead", "shouts", True),
                leaf("event.properties.name", "shouts", 1),
            ]
        },
        plugins={"shout": ShoutOperator()},
    )
    assert [(p["pointer"], p["message"]) for p in problems] == [
        ("/rules/0/if/all/1/value", "contact.email is text: write true"),
        ("/rules/0/if/all/2/op", "shouts tests text, and contact.scores.lead is a number"),
    ]


def test_a_fact_type_outside_the_set_is_refused_at_load():
    class Bad:
        @hookimpl
        def register_facts(self, register):
            register("test.bad", lambda ctx: 1, type="integer")

    with pytest.raises(PluginError, match="type 'integer'"):
        Registry({"bad": Bad()}).facts  # noqa: B018 (reading them checks them)
