"""The condition compiler: facts, groups, segments, computed facts, check(), explain, safety.

Every evaluation in these tests goes through both evaluators (the generated code and the
explain interpreter) and asserts that they agree; the property test at the end does the same
on random conditions and contacts.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from clm_engine.builtins import facts as builtin_facts
from clm_engine.conditions import ConditionCompiler
from clm_engine.conditions.ops import OPERATORS
from clm_engine.models import All, Condition, Contact, Event, Leaf, Not
from clm_engine.plugins import FactSpec, OperatorSpec
from clm_engine.registry import Registry
from clm_engine.store.sqlite import _dumps
from clm_engine.types import MISSING, FactContext

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
STAGES = ("awareness", "consideration", "purchase", "retention", "advocacy")

BUILTIN_OPERATORS = {
    op.name: OperatorSpec(
        op.name, op.test, op.prepare, op.accepts_missing, op.description, "builtin"
    )
    for op in OPERATORS
}
BUILTIN_FACTS = {
    name: FactSpec(name, compute, "", "builtin")
    for name, compute in (
        ("events.count", builtin_facts.events_count),
        ("contact.days_since_signup", builtin_facts.days_since_signup),
        ("contact.days_since_last_order", builtin_facts.days_since_last_order),
        ("contact.days_since_last_event", builtin_facts.days_since_last_event),
    )
}

_CONDITION = TypeAdapter(Condition)


def cond(data: Any) -> Condition:
    """A condition from its ruleset JSON."""
    return _CONDITION.validate_python(data)


def make_compiler(
    *,
    segments: dict[str, Any] | None = None,
    operators: dict[str, OperatorSpec] | None = None,
    facts: dict[str, FactSpec] | None = None,
    stages: tuple[str, ...] = (),
) -> ConditionCompiler:
    return ConditionCompiler(
        operators={**BUILTIN_OPERATORS, **(operators or {})},
        facts={**BUILTIN_FACTS, **(facts or {})},
        segments={name: cond(data) for name, data in (segments or {}).items()},
        stages=stages,
    )


def context(
    *,
    event: Event | dict | None = None,
    transition: dict | None = None,
    count_events: Any = None,
    stages: tuple[str, ...] = (),
    now: datetime = NOW,
    **contact: Any,
) -> FactContext:
    if isinstance(event, dict):
        event = Event.model_validate(event)
    return FactContext(
        contact=Contact.model_validate({"id": "c1", **contact}),
        now=now,
        event=event,
        transition=transition,
        count_events=count_events,
        stages=stages,
    )


def both(compiler: ConditionCompiler, condition: Condition | None, ctx: FactContext) -> bool:
    """The condition's result in ``ctx``, asserting that both evaluators agree."""
    compiled = compiler.compile([condition]).matching(ctx) == [0]
    trace = compiler.explain(condition, ctx)
    json.dumps(trace)  # traces are JSON-able
    assert trace["result"] is compiled, (trace, compiled)
    return compiled


def evaluate(data: Any, ctx: FactContext | None = None, **compiler_options: Any) -> bool:
    """Evaluate one condition (JSON) in ``ctx`` with both evaluators."""
    compiler = make_compiler(**compiler_options)
    return both(compiler, cond(data), ctx if ctx is not None else context())


def leaf(fact: str, op: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    return {"fact": fact, "op": op, "value": value, **extra}


# -- registration ------------------------------------------------------------------------------


def test_builtin_operators_and_facts_are_registered_as_plugins():
    registry = Registry()
    operators, facts = registry.operators, registry.facts
    for op in OPERATORS:
        assert operators[op.name].test is op.test
        assert operators[op.name].plugin == "clm_engine.builtins.operators"
    assert {"exists", "is_null", "in_segment"} <= {n for n, s in operators.items()}
    assert operators["exists"].accepts_missing and operators["is_null"].accepts_missing
    assert not operators["eq"].accepts_missing
    for name in BUILTIN_FACTS:
        assert facts[name].plugin == "clm_engine.builtins.facts"


# -- groups ------------------------------------------------------------------------------------


def test_matching_returns_the_indices_of_the_conditions_that_hold():
    compiler = make_compiler()
    conditions = [
        cond(leaf("contact.metrics.orders_count", "gte", 2)),
        None,
        cond(leaf("contact.metrics.orders_count", "lt", 2)),
        cond(
            {
                "all": [
                    leaf("contact.stage", "eq", "purchase"),
                    leaf("contact.tags", "contains", "vip"),
                ]
            }
        ),
    ]
    compiled = compiler.compile(conditions)
    assert len(compiled) == 4
    ctx = context(metrics={"orders_count": 3}, stage="purchase", tags=["vip"])
    assert compiled.matching(ctx) == [0, 1, 3]
    assert compiled.matching(context(metrics={"orders_count": 1})) == [1, 2]
    assert compiler.compile([]).matching(ctx) == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"all": [leaf("contact.stage", "eq", "purchase"), leaf("contact.id", "eq", "c1")]}, True),
        ({"all": [leaf("contact.stage", "eq", "purchase"), leaf("contact.id", "eq", "x")]}, False),
        ({"any": [leaf("contact.stage", "eq", "nope"), leaf("contact.id", "eq", "c1")]}, True),
        ({"any": [leaf("contact.stage", "eq", "nope"), leaf("contact.id", "eq", "x")]}, False),
        ({"not": leaf("contact.stage", "eq", "purchase")}, False),
        ({"not": {"not": leaf("contact.stage", "eq", "purchase")}}, True),
        (
            {
                "all": [
                    {
                        "any": [
                            leaf("contact.id", "eq", "x"),
                            {"not": leaf("contact.id", "eq", "y")},
                        ]
                    },
                    {
                        "not": {
                            "all": [
                                leaf("contact.id", "eq", "c1"),
                                leaf("contact.stage", "eq", "z"),
                            ]
                        }
                    },
                ]
            },
            True,
        ),
    ],
)
def test_all_any_not_nest(data, expected):
    assert evaluate(data, context(stage="purchase")) is expected


def test_not_of_a_missing_fact_is_true():
    # A leaf over a missing fact is false, so its negation is true: documented, deliberate.
    assert evaluate({"not": leaf("contact.metrics.orders_count", "gt", 1)}) is True


# -- facts -------------------------------------------------------------------------------------


def test_contact_fields_and_nested_paths():
    ctx = context(
        email="a@example.com",
        stage="purchase",
        timezone="Europe/Paris",
        tags=["vip"],
        attributes={"company": {"address": {"city": "Lyon"}}, "plan": None},
        metrics={"orders_count": 3},
        scores={"lead": 42.5},
        consent={"email": True},
        created_at="2026-01-01T00:00:00Z",
    )
    assert evaluate(leaf("contact.id", "eq", "c1"), ctx)
    assert evaluate(leaf("contact.email", "ends_with", "@example.com"), ctx)
    assert evaluate(leaf("contact.timezone", "eq", "Europe/Paris"), ctx)
    assert evaluate(leaf("contact.attributes.company.address.city", "eq", "Lyon"), ctx)
    assert evaluate(leaf("contact.metrics.orders_count", "eq", 3), ctx)
    assert evaluate(leaf("contact.scores.lead", "gt", 42), ctx)
    assert evaluate(leaf("contact.consent.email", "eq", True), ctx)
    assert evaluate(leaf("contact.created_at", "before", "2026-01-02"), ctx)
    assert evaluate(leaf("contact.attributes", "exists", True), ctx)
    # a null value is a value: present, and null
    assert evaluate(leaf("contact.attributes.plan", "exists", True), ctx)
    assert evaluate(leaf("contact.attributes.plan", "is_null", True), ctx)
    assert evaluate(leaf("contact.last_event_at", "is_null", True), ctx)


def test_missing_parents_make_a_fact_missing():
    ctx = context(attributes={"company": None, "plan": "pro", "list": [1]})
    for path in (
        "contact.attributes.company.name",  # None on the way
        "contact.attributes.plan.name",  # text on the way
        "contact.attributes.list.0",  # lists are not indexed
        "contact.attributes.nothing.here",
        "contact.metrics.orders_count",
    ):
        assert evaluate(leaf(path, "exists", False), ctx), path
        assert not evaluate(leaf(path, "eq", None), ctx), path


def test_event_transition_and_now():
    event = {
        "contact_id": "c1",
        "type": "purchase",
        "occurred_at": "2026-11-02T10:00:00+02:00",
        "properties": {"amount": 30, "item": {"sku": "A-1"}},
    }
    ctx = context(event=event, transition={"from": None, "to": "purchase"})
    assert evaluate(leaf("event.type", "eq", "purchase"), ctx)
    assert evaluate(leaf("event.contact_id", "eq", "c1"), ctx)
    assert evaluate(leaf("event.id", "starts_with", "h-"), ctx)
    assert evaluate(leaf("event.occurred_at", "eq", None), ctx) is False
    assert evaluate(leaf("event.occurred_at", "before", "2026-11-02T08:00:01Z"), ctx)
    assert evaluate(leaf("event.properties.amount", "gte", 30), ctx)
    assert evaluate(leaf("event.properties.item.sku", "eq", "A-1"), ctx)
    assert evaluate(leaf("event.properties", "exists"), ctx)
    assert evaluate(leaf("transition.to", "eq", "purchase"), ctx)
    assert evaluate(leaf("transition.from", "is_null", True), ctx)
    assert evaluate(leaf("transition.from", "exists", True), ctx)
    assert evaluate(leaf("now", "after", "2026-11-02T11:59:59Z"), ctx)
    # no event, no transition: missing
    bare = context()
    for path in ("event.type", "event.properties.amount", "event.properties", "transition.to"):
        assert evaluate(leaf(path, "exists", False), bare), path
        assert evaluate(leaf(path, "ne", "x"), bare) is False, path


def test_a_fact_ref_compares_two_facts():
    ctx = context(
        metrics={
            "first_order_at": "2026-01-01T00:00:00Z",
            "last_order_at": "2026-03-01",
            "orders_count": 3,
            "target": 3,
        }
    )
    ref = {"fact": "contact.metrics.last_order_at"}
    assert evaluate(leaf("contact.metrics.first_order_at", "before", ref), ctx)
    assert not evaluate(leaf("contact.metrics.first_order_at", "after", ref), ctx)
    assert evaluate(
        leaf("contact.metrics.orders_count", "eq", {"fact": "contact.metrics.target"}), ctx
    )
    assert evaluate(
        leaf("contact.created_at", "before", {"fact": "now"}),
        context(created_at=NOW - timedelta(days=1)),
    )
    # the other fact missing, or unusable for the operator: false, never an error
    assert not evaluate(
        leaf("contact.metrics.orders_count", "eq", {"fact": "contact.metrics.nope"}), ctx
    )
    assert evaluate(
        {"not": leaf("contact.metrics.orders_count", "ne", {"fact": "contact.metrics.nope"})}, ctx
    )
    assert not evaluate(
        leaf("contact.metrics.first_order_at", "before", {"fact": "contact.metrics.orders_count"}),
        ctx,
    )
    trace = make_compiler().explain(
        cond(leaf("contact.metrics.orders_count", "eq", {"fact": "contact.metrics.target"})), ctx
    )
    assert trace["value_fact"] == "contact.metrics.target"
    assert trace["value"] == 3
    missing = make_compiler().explain(
        cond(leaf("contact.metrics.orders_count", "eq", {"fact": "contact.metrics.nope"})), ctx
    )
    assert missing["value_missing"] is True and missing["result"] is False


# -- computed facts ----------------------------------------------------------------------------


def _counting_fact(calls: list) -> FactSpec:
    def compute(ctx: FactContext, factor: int = 1) -> Any:
        calls.append(factor)
        orders = ctx.contact.metrics.get("orders_count")
        return MISSING if orders is None else orders * factor

    return FactSpec("test.orders", compute, "", "tests")


def test_a_computed_fact_is_computed_once_per_context_across_rules():
    calls: list = []
    compiler = make_compiler(facts={"test.orders": _counting_fact(calls)})
    conditions = [cond(leaf("test.orders", "gte", n)) for n in range(20)] + [
        cond({"not": leaf("test.orders", "eq", 7)}),
        cond(leaf("test.orders", "eq", 10, args={"factor": 2})),
    ]
    compiled = compiler.compile(conditions)
    ctx = context(metrics={"orders_count": 5})
    assert compiled.matching(ctx) == [*range(6), 20, 21]
    assert sorted(calls) == [1, 2]  # once per distinct args
    compiled.matching(ctx)
    compiler.explain(conditions[0], ctx)
    assert sorted(calls) == [1, 2]  # the context's cache serves later evaluations too
    compiled.matching(context(metrics={"orders_count": 5}))
    assert len(calls) == 4  # a new context computes again


def test_a_computed_fact_is_not_computed_when_no_rule_reaches_it():
    calls: list = []
    compiler = make_compiler(facts={"test.orders": _counting_fact(calls)})
    compiled = compiler.compile(
        [cond({"all": [leaf("contact.stage", "eq", "nope"), leaf("test.orders", "gt", 1)]})]
    )
    assert compiled.matching(context()) == []
    assert calls == []


def test_events_count():
    asked = []

    def count_events(event_type: str, since: datetime | None) -> int:
        asked.append((event_type, since))
        return 4 if since is None else 2

    ctx = context(count_events=count_events)
    assert evaluate(leaf("events.count", "gte", 3, args={"type": "page.viewed"}), ctx)
    assert evaluate(
        leaf("events.count", "eq", 2, args={"type": "page.viewed", "within": "P30D"}), ctx
    )
    assert evaluate(
        leaf("events.count", "eq", 2, args={"type": "page.viewed", "within": {"days": 7}}), ctx
    )
    assert ("page.viewed", None) in asked
    assert ("page.viewed", NOW - timedelta(days=30)) in asked
    assert ("page.viewed", NOW - timedelta(days=7)) in asked
    # without a counter (the engine did not supply one): missing
    assert evaluate(leaf("events.count", "exists", False, args={"type": "x"}), context())


def test_days_since_facts():
    ctx = context(
        created_at=NOW - timedelta(days=10, hours=5),
        last_event_at=NOW - timedelta(hours=47),
        metrics={"last_order_at": "2026-10-01T12:00:00Z"},
    )
    assert evaluate(leaf("contact.days_since_signup", "eq", 10), ctx)
    assert evaluate(leaf("contact.days_since_last_event", "eq", 1), ctx)
    assert evaluate(leaf("contact.days_since_last_order", "eq", 32), ctx)
    bare = context()
    for name in ("signup", "last_order", "last_event"):
        assert evaluate(leaf(f"contact.days_since_{name}", "exists", False), bare)


# -- segments ----------------------------------------------------------------------------------

SEGMENTS = {
    "buyers": leaf("contact.metrics.orders_count", "gte", 1),
    "vip_buyers": {
        "all": [{"op": "in_segment", "value": "buyers"}, leaf("contact.tags", "contains", "vip")]
    },
}


def test_in_segment():
    vip = context(metrics={"orders_count": 2}, tags=["vip"])
    assert evaluate({"op": "in_segment", "value": "vip_buyers"}, vip, segments=SEGMENTS)
    assert not evaluate(
        {"op": "in_segment", "value": "vip_buyers"}, context(tags=["vip"]), segments=SEGMENTS
    )
    assert evaluate({"not": {"op": "in_segment", "value": "buyers"}}, context(), segments=SEGMENTS)
    trace = make_compiler(segments=SEGMENTS).explain(
        cond({"op": "in_segment", "value": "vip_buyers"}), vip
    )
    assert trace["segment"]["name"] == "vip_buyers"
    inner = trace["segment"]["trace"]["all"][0]
    assert inner["segment"]["trace"] == {
        "fact": "contact.metrics.orders_count",
        "op": "gte",
        "value": 1,
        "actual": 2,
        "result": True,
    }


def test_a_segment_is_evaluated_once_per_context():
    calls = []

    def spy(fact: Any, value: Any) -> bool:
        calls.append(fact)
        return fact == value

    ops = {"spy": OperatorSpec("spy", spy, None, False, "", "tests")}
    compiler = make_compiler(
        segments={"s": leaf("contact.stage", "spy", "purchase")}, operators=ops
    )
    compiled = compiler.compile([cond({"op": "in_segment", "value": "s"})] * 5)
    assert compiled.matching(context(stage="purchase")) == [0, 1, 2, 3, 4]
    assert len(calls) == 1


def test_segment_cycles_are_refused_with_their_names():
    segments = {
        "a": {"op": "in_segment", "value": "b"},
        "b": {"any": [leaf("contact.id", "eq", "x"), {"op": "in_segment", "value": "c"}]},
        "c": {"not": {"op": "in_segment", "value": "a"}},
        "self": {"op": "in_segment", "value": "self"},
    }
    compiler = make_compiler(segments=segments)
    with pytest.raises(ValueError, match="segments form a cycle: a -> b -> c -> a"):
        compiler.compile([cond({"op": "in_segment", "value": "a"})])
    problems = compiler.check(
        cond({"all": [leaf("contact.id", "eq", "c1"), {"op": "in_segment", "value": "self"}]})
    )
    assert problems == [("/all/1/value", "segments form a cycle: self -> self")]


def test_unknown_segment():
    compiler = make_compiler(segments={"buyers": leaf("contact.id", "eq", "x")})
    assert compiler.check(cond({"op": "in_segment", "value": "buyer"})) == [
        ("/value", "unknown segment 'buyer'; did you mean 'buyers'? (the segments are: buyers)")
    ]
    with pytest.raises(ValueError, match="unknown segment 'buyer'"):
        compiler.compile([cond({"op": "in_segment", "value": "buyer"})])


# -- check() -----------------------------------------------------------------------------------


def test_check_reports_every_problem_with_its_pointer():
    compiler = make_compiler(stages=STAGES)
    problems = compiler.check(
        cond(
            {
                "all": [
                    leaf("contact.metrics.orders_count", "gte", 2),
                    leaf("contact.metrics.orders_count", "gtee", 2),
                    {"not": leaf("contact.attributes.plan", "in", "pro")},
                    {
                        "any": [
                            leaf("contact.emial", "eq", "x"),
                            leaf("contact.stage", "stage_at_least", "purchse"),
                        ]
                    },
                    leaf("contact.attributes.name", "matches", "(unclosed"),
                    leaf("contact.id", "eq", 1, args={"x": 1}),
                    leaf("events.count", "gt", 1, args={"within": "P30D"}),
                    leaf("events.count", "gt", 1, args={"type": "x", "within": "30 days"}),
                    leaf("events.count", "gt", 1, args={"type": "x", "per": "day"}),
                    leaf("contact.created_at", "within_last", "P1M"),
                    leaf("product.warranty_ends_at", "before", "now"),
                    {"fact": None, "op": "eq", "value": 1},
                ]
            }
        )
    )
    found = dict(problems)
    assert len(problems) == len(found) == 12, problems
    assert found["/all/1/op"] == "unknown operator 'gtee'; did you mean 'gte'?"
    assert found["/all/2/not/value"] == "in needs a list of values like ['a', 'b'] (got 'pro')"
    assert found["/all/3/any/0/fact"].startswith(
        "a contact has no field 'emial'; did you mean 'email'?"
    )
    assert found["/all/3/any/1/value"].startswith(
        "unknown stage 'purchse'; did you mean 'purchase'?"
    )
    assert "not a valid regular expression" in found["/all/4/value"]
    assert found["/all/5/args"] == "only computed facts take args, and 'contact.id' is not one"
    assert 'events.count: needs "type"' in found["/all/6/args"]
    assert "'30 days' is not a duration" in found["/all/7/args"]
    assert "unexpected keyword argument 'per'" in found["/all/8/args"]
    assert found["/all/9/value"].startswith("within_last 'P1M' is not a duration like 'P30D'")
    assert found["/all/10/fact"].startswith("unknown fact 'product.warranty_ends_at'")
    assert found["/all/11/fact"] == "operator 'eq' needs a fact to test"


def test_check_of_a_good_condition_is_empty():
    compiler = make_compiler(segments=SEGMENTS, stages=STAGES)
    good = cond(
        {
            "all": [
                leaf("contact.stage", "stage_at_least", "purchase"),
                {"op": "in_segment", "value": "vip_buyers"},
                leaf(
                    "events.count", "gte", 3, args={"type": "page.viewed", "within": {"days": 30}}
                ),
                leaf(
                    "contact.metrics.first_order_at",
                    "before",
                    {"fact": "contact.metrics.last_order_at"},
                ),
            ]
        }
    )
    assert compiler.check(good) == []


def test_conditions_nested_too_deep_are_refused():
    data: dict[str, Any] = leaf("contact.id", "eq", "c1")
    for _ in range(40):
        data = {"not": data}
    problems = make_compiler().check(cond(data))
    assert len(problems) == 1 and "deeper than 32 levels" in problems[0][1]
    with pytest.raises(ValueError, match="deeper than 32"):
        make_compiler().compile([cond(data)])


def test_compile_names_the_condition_and_place_of_each_problem():
    with pytest.raises(ValueError) as error:
        make_compiler().compile([None, cond({"any": [leaf("contact.id", "eqq", 1)]})])
    assert "condition 1: /any/0/op: unknown operator 'eqq'" in str(error.value)


# -- explain -----------------------------------------------------------------------------------


def test_explain_trace():
    ctx = context(metrics={"orders_count": 1}, created_at="2026-10-01T00:00:00+02:00")
    compiler = make_compiler()
    trace = compiler.explain(
        cond(
            {
                "all": [
                    leaf("contact.metrics.orders_count", "gte", 2),
                    leaf("contact.attributes.plan", "eq", "pro"),
                    {"not": leaf("contact.created_at", "within_last", {"days": 7})},
                ]
            }
        ),
        ctx,
    )
    assert trace == {
        "all": [
            {
                "fact": "contact.metrics.orders_count",
                "op": "gte",
                "value": 2,
                "actual": 1,
                "result": False,
            },
            {
                "fact": "contact.attributes.plan",
                "op": "eq",
                "value": "pro",
                "actual": None,
                "missing": True,
                "result": False,
            },
            {
                "not": {
                    "fact": "contact.created_at",
                    "op": "within_last",
                    "value": {"days": 7},
                    "actual": "2026-10-01T00:00:00+02:00",
                    "compared_to": ["2026-10-26T12:00:00+00:00", "2026-11-02T12:00:00+00:00"],
                    "result": False,
                },
                "result": True,
            },
        ],
        "result": False,
    }
    assert compiler.explain(None, ctx) == {"result": True, "note": "no condition: always true"}


def test_explain_notes_say_why_a_leaf_is_false():
    compiler = make_compiler()
    long_text = "a" * 10_001
    ctx = context(attributes={"bio": long_text, "flag": True, "n": "12"})
    trace = compiler.explain(cond(leaf("contact.attributes.bio", "matches", "a+")), ctx)
    assert trace["result"] is False
    assert trace["note"].startswith("input longer than 10,000 characters")
    trace = compiler.explain(cond(leaf("contact.attributes.flag", "eq", 1)), ctx)
    assert trace["note"] == "true/false is not a number: they never compare equal"
    trace = compiler.explain(cond(leaf("contact.attributes.n", "gt", 3)), ctx)
    assert trace["note"] == "the fact (str) cannot be compared with number"


# -- plugin operators --------------------------------------------------------------------------


def test_a_plugin_operator_is_called_with_its_prepared_value_and_never_with_missing():
    seen = []

    def longer_than(fact: Any, size: int) -> bool:
        seen.append(fact)
        return isinstance(fact, str) and len(fact) > size

    def prepare(value: Any) -> int:
        if type(value) is not int:
            raise ValueError("longer_than needs a whole number")
        return value

    ops = {"longer_than": OperatorSpec("longer_than", longer_than, prepare, False, "", "tests")}
    ctx = context(attributes={"name": "Ada Lovelace"})
    assert evaluate(leaf("contact.attributes.name", "longer_than", 5), ctx, operators=ops)
    assert not evaluate(leaf("contact.attributes.nick", "longer_than", 5), ctx, operators=ops)
    assert MISSING not in seen
    assert make_compiler(operators=ops).check(cond(leaf("contact.id", "longer_than", "x"))) == [
        ("/value", "longer_than needs a whole number")
    ]


# -- safety: nothing from a ruleset becomes code -----------------------------------------------

INJECTIONS = [
    "x'); __import__('os').system('touch {marker}'); ('",
    'x"); __import__("os").system("touch {marker}"); ("',
    "x\n__import__('os').system('touch {marker}')\n",
    "__class__",
    "__builtins__",
    "{{0.__class__}}",
    "\\'; import os; os.system('touch {marker}') #",
    "é\u2028\u0000ü🙂",
]


def _raw_leaf(fact: str | None, op: str, value: Any, args: Any = None) -> Leaf:
    """A leaf as an attacker could hand it to the compiler, bypassing pydantic's patterns."""
    return Leaf.model_construct(fact=fact, op=op, value=value, args=args)


@pytest.mark.parametrize("template", INJECTIONS)
def test_ruleset_text_never_becomes_code(template, tmp_path):
    marker = tmp_path / "pwned"
    evil = template.format(marker=marker)
    key = evil.replace(".", "_")  # a dot in a fact path separates keys
    calls = []

    def count_events(event_type: str, since: Any) -> int:
        calls.append(event_type)
        return 3 if event_type == evil else 0

    ctx = context(
        attributes={key: evil, "plain": evil, "tags": [evil]},
        event={
            "contact_id": "c1",
            "type": "x",
            "occurred_at": "2026-11-02T10:00:00Z",
            "properties": {key: 1},
        },
        count_events=count_events,
    )
    segments = {evil: cond(leaf("contact.attributes.plain", "eq", evil))}
    compiler = ConditionCompiler(
        operators=BUILTIN_OPERATORS, facts=BUILTIN_FACTS, segments=segments
    )
    conditions = [
        _raw_leaf(f"contact.attributes.{key}", "eq", evil),  # a key that is code
        _raw_leaf("contact.attributes.plain", "in", [evil, "other"]),
        _raw_leaf("contact.attributes.plain", "starts_with", evil),
        _raw_leaf("contact.attributes.tags", "contains", evil),
        _raw_leaf(None, "in_segment", evil),
        All.model_construct(all=[_raw_leaf(f"event.properties.{key}", "eq", 1)]),
        _raw_leaf("events.count", "eq", 3, args={"type": evil}),
        Not.model_construct(not_=_raw_leaf("contact.attributes.plain", "ne", evil)),
        _raw_leaf("contact.attributes.plain", "matches", "^" + re_escape(evil) + "$"),
    ]
    compiled = compiler.compile(conditions)
    # The generated source holds no string literal at all, so no ruleset text.
    assert "'" not in compiled.source and '"' not in compiled.source
    assert evil not in compiled.source
    assert compiled.matching(ctx) == list(range(len(conditions)))
    for condition in conditions:
        assert compiler.explain(condition, ctx)["result"] is True
    assert not marker.exists()


def re_escape(text: str) -> str:
    """RE2-safe literal text (re.escape's output is valid RE2)."""
    import re

    return re.escape(text)


def test_code_in_fact_names_is_an_unknown_fact_not_an_attribute_lookup(tmp_path):
    marker = tmp_path / "pwned"
    compiler = make_compiler()
    for fact in (
        "contact.__class__",
        "contact.__dict__",
        "__import__('os').system('touch " + str(marker) + "')",
        "contact.model_fields",
        "event.__class__",
        "transition.__class__",
        "now.year",
    ):
        problems = compiler.check(_raw_leaf(fact, "exists", True))
        assert [pointer for pointer, _ in problems] == ["/fact"], fact
        with pytest.raises(ValueError):
            compiler.compile([_raw_leaf(fact, "exists", True)])
    assert not marker.exists()


def test_malicious_regexes_are_refused_or_safe():
    compiler = make_compiler()
    assert compiler.check(
        _raw_leaf("contact.id", "matches", "x'); __import__('os').system('x'); ('")
    )
    assert (
        "1,001 characters long; the limit is 1,000"
        in compiler.check(_raw_leaf("contact.id", "matches", "a" * 1001))[0][1]
    )
    # a pattern that backtracks catastrophically in Python's re is linear in RE2
    ctx = context(attributes={"s": "a" * 9_999 + "!"})
    assert evaluate(leaf("contact.attributes.s", "matches", "^(a+)+$"), ctx) is False


def test_generated_code_runs_without_builtins():
    compiled = make_compiler().compile([cond(leaf("contact.id", "eq", "c1"))])
    assert "_factory" in compiled.source
    function = compiled._function
    # the factory's globals are the fresh namespace, with no builtins in it
    assert function.__globals__["__builtins__"] == {}


# -- property: the compiled evaluator and the interpreter agree --------------------------------

_TEXT = st.sampled_from(
    [
        "",
        "a",
        "ab",
        "pro",
        "purchase",
        "2026-11-02",
        "2026-11-02T10:00:00+02:00",
        "2026-10-01T00:00:00Z",
        "2026-11-02T12:00:00",
    ]
)
_NUMBER = st.one_of(st.integers(-2, 3), st.sampled_from([0.0, 1.0, 2.5, -1.5, 1e9]))
_SCALAR = st.one_of(st.none(), st.booleans(), _NUMBER, _TEXT)
_DATETIME = st.sampled_from(
    [
        datetime(2026, 11, 2, 12, 0, tzinfo=UTC),
        datetime(2026, 10, 30, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 2, 10, 0),  # naive: UTC
    ]
)
# What a fact may hold, each kind about as likely: more than a ruleset may say (NaN, infinity,
# datetimes, mappings).
_FACT_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    _NUMBER,
    _TEXT,
    _TEXT,
    st.lists(_SCALAR, max_size=4),
    _DATETIME,
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.dictionaries(st.sampled_from(["x", "y"]), _SCALAR, max_size=2),
)
_NEEDLE = st.one_of(st.booleans(), _NUMBER, _TEXT)
_KEYS = ("a", "b", "c", "d")

FACT_PATHS = [
    "contact.attributes.a",
    "contact.attributes.b",
    "contact.attributes.c",
    "contact.attributes.a.x",
    "contact.metrics.d",
    "contact.metrics.a",
    "contact.tags",
    "contact.stage",
    "contact.email",
    "contact.created_at",
    "contact.last_event_at",
    "event.type",
    "event.occurred_at",
    "event.properties.a",
    "event.properties.a.x",
    "transition.to",
    "transition.from",
    "now",
    "test.double",
    "contact.days_since_signup",
    "contact.scores.lead",
    "contact.scores",
    "events.count",
]


def _double(ctx: FactContext) -> Any:
    value = ctx.contact.attributes.get("a")
    return value * 2 if type(value) in (int, float) else MISSING


def _odd_length(fact: Any, value: Any) -> bool:
    return isinstance(fact, str | list) and len(fact) % 2 == 1


PROPERTY_OPERATORS = {
    "odd_length": OperatorSpec("odd_length", _odd_length, None, False, "", "tests"),
    "missing_or_odd": OperatorSpec(
        "missing_or_odd", lambda f, v: f is MISSING or _odd_length(f, v), None, True, "", "tests"
    ),
}
PROPERTY_FACTS = {"test.double": FactSpec("test.double", _double, "", "tests")}
PROPERTY_SEGMENTS = {
    "seg_a": leaf("contact.attributes.a", "gt", 1),
    "seg_b": {
        "any": [{"op": "in_segment", "value": "seg_a"}, leaf("contact.tags", "contains", "vip")]
    },
}

_OP_VALUES: dict[str, Any] = {
    "eq": _SCALAR,
    "ne": _SCALAR,
    "lt": st.one_of(_NUMBER, _TEXT),
    "lte": st.one_of(_NUMBER, _TEXT),
    "gt": st.one_of(_NUMBER, _TEXT),
    "gte": st.one_of(_NUMBER, _TEXT),
    "between": st.one_of(
        st.lists(_NUMBER, min_size=2, max_size=2).map(sorted),
        st.lists(_TEXT, min_size=2, max_size=2).map(sorted),
    ),
    "in": st.lists(_SCALAR, max_size=4),
    "not_in": st.lists(_SCALAR, max_size=4),
    "contains": _NEEDLE,
    "not_contains": _NEEDLE,
    "starts_with": _TEXT,
    "ends_with": _TEXT,
    "matches": st.sampled_from(["^a", "b$", "p.o", "[0-9]{4}-", "(?i)PRO"]),
    "exists": st.sampled_from([True, False, None]),
    "is_null": st.booleans(),
    "before": st.one_of(_TEXT, st.just("now")),
    "after": st.one_of(_TEXT, st.just("now")),
    "within_last": st.sampled_from(["P1D", "P30D", "PT12H", {"days": 3}, {"weeks": 60}]),
    "older_than": st.sampled_from(["P1D", "P30D", "PT12H", {"days": 3}, {"weeks": 60}]),
    "stage_at_least": st.sampled_from((*STAGES, "unknown")),
    "stage_at_most": st.sampled_from((*STAGES, "unknown")),
    "odd_length": st.none(),
    "missing_or_odd": st.none(),
}


@st.composite
def leaves(draw: Any) -> dict[str, Any]:
    if draw(st.integers(0, 30)) == 0:
        return {"op": "in_segment", "value": draw(st.sampled_from(["seg_a", "seg_b"]))}
    op = draw(st.sampled_from(sorted(_OP_VALUES)))
    fact = draw(st.sampled_from(FACT_PATHS))
    node: dict[str, Any] = {"fact": fact, "op": op}
    if draw(st.integers(0, 6)) == 0:
        node["value"] = {"fact": draw(st.sampled_from(FACT_PATHS[:-1]))}
    else:
        node["value"] = draw(_OP_VALUES[op])
    if fact == "events.count":
        node["args"] = {"type": "page.viewed"}
        if draw(st.booleans()):
            node["args"]["within"] = draw(st.sampled_from(["P7D", {"days": 30}]))
    return node


conditions_strategy = st.recursive(
    leaves(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda c: {"all": c}),
        st.lists(children, min_size=1, max_size=3).map(lambda c: {"any": c}),
        children.map(lambda c: {"not": c}),
    ),
    max_leaves=10,
)


def _bounded_depth(data: Any, depth: int = 1) -> int:
    if isinstance(data, dict) and ("all" in data or "any" in data):
        return max(_bounded_depth(c, depth + 1) for c in data.get("all", data.get("any")))
    if isinstance(data, dict) and "not" in data:
        return _bounded_depth(data["not"], depth + 1)
    return depth


@st.composite
def contexts(draw: Any) -> FactContext:
    def maybe(strategy: Any) -> dict[str, Any]:
        present = draw(st.lists(st.sampled_from(_KEYS), max_size=6, unique=True))
        return {key: draw(strategy) for key in present}

    attributes = maybe(_FACT_VALUE)
    if draw(st.booleans()):
        attributes["a"] = {"x": draw(_FACT_VALUE)}
    event = None
    if draw(st.booleans()):
        # Built without validation, as the store reads events back: an ingested event cannot
        # hold NaN or infinity any more, but conditions must stay total over whatever they see.
        event = Event.model_construct(
            id="e1",
            contact_id="c1",
            type=draw(st.sampled_from(["purchase", "page.viewed"])),
            occurred_at=draw(_DATETIME.filter(lambda d: d.tzinfo is not None)),
            properties=maybe(_FACT_VALUE),
        )
    counts = draw(st.sampled_from([None, 0, 3, 10]))
    metrics = maybe(_FACT_VALUE)
    scores = {}
    if draw(st.booleans()):  # a score, fading or not, last changed before or after now
        scores["lead"] = draw(st.floats(-100, 100, allow_nan=False))
        if draw(st.booleans()):
            metrics["scores_changed_at"] = {
                "lead": draw(st.sampled_from(["2026-10-01T00:00:00Z", "2026-12-01T00:00:00Z"]))
            }
            metrics["score_half_lives"] = {"lead": draw(st.sampled_from([3600.0, 2592000.0]))}
    contact = Contact.model_construct(
        id="c1",
        email=draw(st.sampled_from([None, "a@example.com"])),
        stage=draw(st.sampled_from([None, "unknown", *STAGES])),
        attributes=attributes,
        metrics=metrics,
        scores=scores,
        tags=draw(st.lists(st.sampled_from(["vip", "a", "b"]), max_size=3)),
        consent={},
        timezone="UTC",
        created_at=draw(st.one_of(st.none(), _DATETIME)),
        updated_at=None,
        last_event_at=draw(st.one_of(st.none(), _DATETIME)),
    )
    return FactContext(
        contact=contact,
        now=NOW,
        event=event,
        transition=draw(
            st.sampled_from([None, {"from": None, "to": "purchase"}, {"from": "a", "to": "b"}])
        ),
        count_events=None if counts is None else (lambda t, since, n=counts: n if since else n + 1),
        stages=draw(st.sampled_from([(), STAGES])),
    )


_EDGE_VALUES = {
    **dict.fromkeys(("eq", "ne", "lt", "lte", "gt", "gte", "contains"), lambda fact: fact),
    **dict.fromkeys(("in", "not_in"), lambda fact: [fact]),
    "between": lambda fact: [fact, fact],
}


@settings(max_examples=200, deadline=None)
@given(
    fact=_FACT_VALUE,
    ops=st.lists(st.sampled_from(sorted(_OP_VALUES)), min_size=10, max_size=30),
    data=st.data(),
)
def test_each_operator_agrees_with_its_function_on_any_fact_value(fact, ops, data):
    """Leaf by leaf: the inlined operators against the functions that define them."""
    leaves_ = []
    for op in ops:
        value = data.draw(_OP_VALUES[op])
        if data.draw(st.integers(0, 3)) == 0 and op in _EDGE_VALUES:
            value = _EDGE_VALUES[op](fact)  # bounds and equal values matter most
        leaves_.append(leaf("contact.attributes.a", op, value))
    ctx = context(attributes={"a": fact}, stages=STAGES)
    compiler = make_compiler(operators=PROPERTY_OPERATORS, stages=STAGES)
    conditions = [c for c in map(cond_or_none, leaves_) if c is not None and not compiler.check(c)]
    matched = compiler.compile(conditions).matching(ctx)
    assert matched == [i for i, c in enumerate(conditions) if compiler.explain(c, ctx)["result"]]
    missing = context()
    assert compiler.compile(conditions).matching(missing) == [
        i for i, c in enumerate(conditions) if compiler.explain(c, missing)["result"]
    ]


def cond_or_none(data: Any) -> Condition | None:
    try:
        return cond(data)
    except ValueError:  # a value the ruleset model itself refuses (a datetime, a mapping)
        return None


def _subtrees(data: Any) -> list[Any]:
    """The condition and each condition inside it: a wrong leaf cannot hide in a big tree."""
    found = [data]
    for key in ("all", "any"):
        for child in data.get(key, ()):
            found.extend(_subtrees(child))
    if "not" in data:
        found.extend(_subtrees(data["not"]))
    return found


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(conditions_strategy, min_size=1, max_size=3), ctx=contexts())
def test_compiled_and_explained_results_agree(data, ctx):
    assume(all(_bounded_depth(d) <= 4 for d in data))
    compiler = ConditionCompiler(
        operators={**BUILTIN_OPERATORS, **PROPERTY_OPERATORS},
        facts={**BUILTIN_FACTS, **PROPERTY_FACTS},
        segments={name: cond(d) for name, d in PROPERTY_SEGMENTS.items()},
        stages=STAGES,
    )
    conditions = [cond(d) for whole in data for d in _subtrees(whole)]
    assume(all(not compiler.check(c) for c in conditions))
    matched = compiler.compile(conditions).matching(ctx)
    expected = [i for i, c in enumerate(conditions) if compiler.explain(c, ctx)["result"]]
    assert matched == expected
    # and on a fresh context, where computed facts are not cached yet (explain first)
    fresh = FactContext(**{**ctx.__dict__, "cache": {}})
    explained = [i for i, c in enumerate(conditions) if compiler.explain(c, fresh)["result"]]
    assert explained == compiler.compile(conditions).matching(fresh)
    json.dumps([compiler.explain(c, ctx) for c in conditions])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(conditions_strategy, min_size=1, max_size=3), ctx=contexts())
def test_a_tree_rebuilt_from_what_a_decision_saw_is_the_tree_explain_gave(data, ctx):
    """What `clm explain` shows: the tree rebuilt from the values a decision recorded (stored
    as JSON and read back) is the tree the interpreter gave in the decision's context (what
    traces stored before), for any condition and any values, NaN and dates included."""
    assume(all(_bounded_depth(d) <= 4 for d in data))
    compiler = ConditionCompiler(
        operators={**BUILTIN_OPERATORS, **PROPERTY_OPERATORS},
        facts={**BUILTIN_FACTS, **PROPERTY_FACTS},
        segments={name: cond(d) for name, d in PROPERTY_SEGMENTS.items()},
        stages=STAGES,
    )
    conditions = [cond(d) for whole in data for d in _subtrees(whole)]
    assume(all(not compiler.check(c) for c in conditions))
    # Only what explain has when it rebuilds: the decision's time and the ruleset's stages.
    later = FactContext(contact=Contact.model_construct(id="c1"), now=ctx.now, stages=ctx.stages)
    for condition in conditions:
        stored = _dumps(compiler.explain(condition, ctx))
        seen = json.loads(_dumps(compiler.record(condition, ctx)))
        assert _dumps(compiler.rebuild(condition, seen, later)) == stored
