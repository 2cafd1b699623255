"""Each built-in operator, with its edge cases: missing facts, nulls, wrong types, bool vs
number, dates with offsets, date-only and naive times, bounds, and the regex guard.

Every case runs through both evaluators (compiled and explain), which must agree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clm_engine.conditions.ops import OPERATORS
from clm_engine.conditions.values import parse_datetime, parse_duration, strict_eq
from clm_engine.models import Leaf

from .test_conditions import NOW, STAGES, cond, context, evaluate, leaf, make_compiler

FACT = "contact.attributes.x"


_ABSENT = object()  # the attribute is not there at all


def check(op: str, value: Any, fact: Any) -> bool:
    """Does ``op value`` hold for a contact whose attribute ``x`` is ``fact``?"""
    attributes = {} if fact is _ABSENT else {"x": fact}
    return evaluate(leaf(FACT, op, value), context(attributes=attributes))


def problems(op: str, value: Any) -> list[str]:
    """What check() says about ``op value``, messages only."""
    return [message for _, message in make_compiler().check(cond(leaf(FACT, op, value)))]


# -- equality ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fact", "expected"),
    [
        ("pro", "pro", True),
        ("pro", "Pro", False),
        (2, 2, True),
        (2, 2.0, True),
        (2.5, 2.5, True),
        (1, True, False),  # true is not 1
        (True, 1, False),
        (0, False, False),
        (False, 0, False),
        (True, True, True),
        (False, False, True),
        (None, None, True),
        (None, _ABSENT, False),  # missing is not null
        ("1", 1, False),
        (1, "1", False),
        ("pro", ["pro"], False),
        ("pro", _ABSENT, False),
    ],
)
def test_eq(value, fact, expected):
    assert check("eq", value, fact) is expected


@pytest.mark.parametrize(
    ("value", "fact", "expected"),
    [
        ("pro", "free", True),
        ("pro", "pro", False),
        (1, True, True),  # true is not 1, so it differs
        (True, 1, True),
        (2, 2.0, False),
        (None, None, False),
        (None, "x", True),
        ("pro", None, True),
        ("pro", _ABSENT, False),  # missing: ne is false too
        (None, _ABSENT, False),
    ],
)
def test_ne(value, fact, expected):
    assert check("ne", value, fact) is expected


def test_eq_and_ne_refuse_lists_and_durations():
    assert problems("eq", ["a", "b"]) == [
        "eq compares with one value (a string, number, true/false or null); to test "
        "membership in a list use 'in'"
    ]
    assert problems("ne", {"days": 3})[0].startswith("ne compares with one value")


# -- ordering ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "fact", "expected"),
    [
        ("gt", 2, 3, True),
        ("gt", 2, 2, False),
        ("gte", 2, 2, True),
        ("gte", 2, 2.0, True),
        ("lt", 2, 1.5, True),
        ("lte", 2, 2, True),
        ("lt", 2, 3, False),
        ("gt", 0, True, False),  # booleans are not numbers
        ("lt", 2, False, False),
        ("gt", 2, "3", False),  # text is not a number
        ("gt", "b", "c", True),  # text with text
        ("lt", "b", "a", True),
        ("gt", "b", 3, False),
        ("gt", 2, None, False),
        ("gt", 2, _ABSENT, False),
        ("gt", 2, [3], False),
        ("gt", 2, float("nan"), False),
        ("gt", 2, float("inf"), True),
        # dates: an ISO value compares as a date with datetimes and ISO text
        ("gt", "2026-11-01", "2026-11-02", True),
        ("gt", "2026-11-02T10:00:00Z", "2026-11-02T11:00:00+02:00", False),  # 09:00Z
        ("lt", "2026-11-02T10:00:00Z", "2026-11-02T11:00:00+02:00", True),
        ("gte", "2026-11-02", datetime(2026, 11, 2, tzinfo=UTC), True),
        ("gt", "2026-11-02", datetime(2026, 11, 2, 0, 0, 1), True),  # naive: UTC
        ("gt", "2026-11-02T00:00:00+01:00", "2026-11-02", True),  # date-only: midnight UTC
        ("gt", "2026-11-01", "not a date", False),
        ("gt", "2026-11-01", 20261102, False),
    ],
)
def test_ordering(op, value, fact, expected):
    assert check(op, value, fact) is expected


def test_ordering_refuses_unusable_values():
    hint = "lt needs a number, a string or an ISO date like '2026-11-02'"
    assert problems("lt", True) == [f"{hint} (got true)"]
    assert problems("lt", None) == [f"{hint} (got null)"]
    assert problems("lt", [1]) == [f"{hint} (got [1])"]
    assert problems("gt", float("inf")) == ["gt needs a finite number (got inf)"]


@pytest.mark.parametrize(
    ("value", "fact", "expected"),
    [
        ([1, 5], 1, True),
        ([1, 5], 5, True),
        ([1, 5], 5.0, True),
        ([1, 5], 5.01, False),
        ([1, 5], 0, False),
        ([1, 5], True, False),
        ([1, 5], "3", False),
        ([1, 5], _ABSENT, False),
        (["b", "d"], "c", True),
        (["b", "d"], "e", False),
        (["2026-01-01", "2026-12-31T23:59:59Z"], "2026-06-01T00:00:00+02:00", True),
        (["2026-01-01", "2026-12-31"], "2027-01-01", False),
        (["2026-01-01", "2026-12-31"], datetime(2026, 12, 31, tzinfo=UTC), True),
    ],
)
def test_between(value, fact, expected):
    assert check("between", value, fact) is expected


def test_between_refuses_bad_bounds():
    assert problems("between", [5, 1]) == ["between: the low bound 5 is above the high bound 1"]
    assert problems("between", [1, "b"])[0].endswith("got a number and a text")
    assert problems("between", 3)[0].startswith("between needs [low, high]")
    assert problems("between", [1, 2, 3])[0].startswith("between needs [low, high]")


# -- membership --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "fact", "expected"),
    [
        ("in", ["pro", "team"], "pro", True),
        ("in", ["pro", "team"], "free", False),
        ("in", ["pro", "team"], _ABSENT, False),
        ("in", ["pro", "team"], ["pro"], False),  # a list fact is not one of the values
        ("in", [1, 2], 2.0, True),
        ("in", [1, 2], True, False),  # true is not 1
        ("in", [True], 1, False),
        ("in", [True, None], None, True),
        ("in", [True, None], True, True),
        ("in", [True, None], False, False),
        ("in", ["1", 1], 1, True),
        ("in", [], "x", False),
        ("not_in", ["pro", "team"], "free", True),
        ("not_in", ["pro", "team"], "pro", False),
        ("not_in", ["pro", "team"], _ABSENT, False),  # missing: false
        ("not_in", ["pro", "team"], None, True),  # null is a value, and not in the list
        ("not_in", [1], True, True),
        ("not_in", [1], {"a": 1}, True),
    ],
)
def test_in_and_not_in(op, value, fact, expected):
    assert check(op, value, fact) is expected


def test_in_refuses_non_lists():
    assert problems("in", "pro") == ["in needs a list of values like ['a', 'b'] (got 'pro')"]
    nested = Leaf.model_construct(fact=FACT, op="not_in", value=[[1]], args=None)
    assert make_compiler().check(nested) == [
        ("/value", "not_in: the list may hold strings, numbers, true/false and null, not [1]")
    ]


@pytest.mark.parametrize(
    ("op", "value", "fact", "expected"),
    [
        ("contains", "vip", ["vip", "new"], True),
        ("contains", "vip", ["new"], False),
        ("contains", "vip", "a vip person", True),  # text: substring
        ("contains", "vip", "VIP", False),
        ("contains", 1, [1, 2], True),
        ("contains", 1, [True], False),  # strict
        ("contains", True, [1], False),
        ("contains", True, [True], True),
        ("contains", 1, "1", False),
        ("contains", "vip", {"vip": 1}, False),  # a mapping is neither a list nor text
        ("contains", "vip", _ABSENT, False),
        ("contains", "vip", None, False),
        ("not_contains", "vip", ["new"], True),
        ("not_contains", "vip", ["vip"], False),
        ("not_contains", "vip", "very important", True),
        ("not_contains", "vip", None, False),  # not a list: false
        ("not_contains", "vip", 3, False),
        ("not_contains", "vip", _ABSENT, False),
        ("not_contains", 1, [True], True),
    ],
)
def test_contains_and_not_contains(op, value, fact, expected):
    assert check(op, value, fact) is expected


def test_contains_the_contact_tags():
    assert evaluate(leaf("contact.tags", "contains", "vip"), context(tags=["new", "vip"]))
    assert evaluate(leaf("contact.tags", "not_contains", "vip"), context())


# -- text --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "fact", "expected"),
    [
        ("starts_with", "ab", "abc", True),
        ("starts_with", "ab", "cab", False),
        ("starts_with", "", "x", True),
        ("starts_with", "1", 10, False),
        ("starts_with", "a", ["abc"], False),
        ("starts_with", "a", _ABSENT, False),
        ("ends_with", "@acme.com", "ada@acme.com", True),
        ("ends_with", "@acme.com", "ada@acme.com.evil", False),
        ("ends_with", "x", None, False),
    ],
)
def test_starts_and_ends_with(op, value, fact, expected):
    assert check(op, value, fact) is expected
    assert problems(op, 1) == [f"{op} needs a string (got 1)"]


@pytest.mark.parametrize(
    ("pattern", "fact", "expected"),
    [
        (r"^\+33", "+33 6 12", True),
        (r"^\+33", "0033", False),
        (r"(?i)^pro", "PROfessional", True),
        (r"\d{3}", "ab123", True),  # search, not full match
        (r"^\d{3}$", "ab123", False),
        ("é+", "café", True),
        ("a", 1, False),
        ("a", None, False),
        ("a", _ABSENT, False),
        ("a", ["a"], False),
        ("a+", "a" * 10_000, True),
        ("a+", "a" * 10_001, False),  # longer than 10,000 characters: not matched
    ],
)
def test_matches(pattern, fact, expected):
    assert check("matches", pattern, fact) is expected


def test_matches_refuses_bad_patterns():
    (message,) = problems("matches", "(unclosed")
    assert message.startswith("matches: '(unclosed' is not a valid regular expression (missing )")
    (message,) = problems("matches", r"(a)\1")  # no backreferences in RE2
    assert "RE2 syntax" in message
    (message,) = problems("matches", "(?=a)")  # no lookaround
    assert "not a valid regular expression" in message
    assert problems("matches", "a" * 1000) == []
    assert problems("matches", "a" * 1001) == [
        "matches: the pattern is 1,001 characters long; the limit is 1,000"
    ]
    assert problems("matches", 3) == ["matches needs a regular expression as a string (got 3)"]


def test_matches_is_linear_time():
    # ^(a+)+$ on "aaaa...!" takes exponential time with backtracking engines.
    import time

    start = time.perf_counter()
    assert not check("matches", "^(a+)+$", "a" * 5_000 + "!")
    assert time.perf_counter() - start < 1


# -- presence ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "fact", "expected"),
    [
        ("exists", True, "x", True),
        ("exists", True, None, True),  # null is present
        ("exists", True, _ABSENT, False),
        ("exists", False, _ABSENT, True),
        ("exists", False, 0, False),
        ("exists", None, "x", True),  # no value: reads as true
        ("is_null", True, None, True),
        ("is_null", True, _ABSENT, True),
        ("is_null", True, "", False),
        ("is_null", True, False, False),
        ("is_null", False, "x", True),
        ("is_null", False, None, False),
        ("is_null", False, _ABSENT, False),
    ],
)
def test_exists_and_is_null(op, value, fact, expected):
    assert check(op, value, fact) is expected


def test_exists_needs_true_or_false():
    assert problems("exists", "yes") == ["exists needs true or false (got 'yes')"]
    assert problems("is_null", 1) == ["is_null needs true or false (got 1)"]


# -- dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "fact", "expected"),
    [
        ("before", "2026-11-02", "2026-11-01T23:59:59Z", True),
        ("before", "2026-11-02", "2026-11-02", False),
        ("before", "2026-11-02", "2026-11-02T00:30:00+01:00", True),  # 23:30Z the day before
        ("after", "2026-11-02", "2026-11-02T00:30:00-01:00", True),  # 01:30Z
        ("after", "2026-11-02T10:00:00Z", datetime(2026, 11, 2, 10, 0, 1, tzinfo=UTC), True),
        ("after", "2026-11-02T10:00:00Z", datetime(2026, 11, 2, 10, 0, 1), True),  # naive: UTC
        ("after", "2026-11-02T10:00:00", "2026-11-02T10:00:00Z", False),  # naive value: UTC
        ("before", "now", "2026-11-02T11:59:59Z", True),
        ("before", "now", "2026-11-02T12:00:00Z", False),
        ("after", "now", "2027-01-01", True),
        ("before", "2026-11-02", "yesterday", False),
        ("before", "2026-11-02", 20261101, False),
        ("before", "2026-11-02", None, False),
        ("before", "2026-11-02", _ABSENT, False),
        ("before", "2026-11-02", "2026-13-45", False),
    ],
)
def test_before_and_after(op, value, fact, expected):
    assert check(op, value, fact) is expected


def test_before_needs_a_date():
    (message,) = problems("before", "next week")
    assert message.startswith("before needs an ISO date or time like '2026-11-02'")
    assert problems("after", "2026-02-30") != []
    assert problems("after", 5) != []


@pytest.mark.parametrize(
    ("op", "value", "fact", "expected"),
    [
        ("within_last", "P30D", NOW - timedelta(days=29), True),
        ("within_last", "P30D", NOW - timedelta(days=30), True),  # inclusive
        ("within_last", "P30D", NOW - timedelta(days=30, seconds=1), False),
        ("within_last", "P30D", NOW + timedelta(seconds=1), False),  # the future is not "last"
        ("within_last", {"days": 30}, "2026-10-10T00:00:00+02:00", True),
        ("within_last", "PT12H", "2026-11-02", True),  # midnight UTC, 12 hours before now
        ("within_last", "PT11H", "2026-11-02", False),
        ("within_last", "P1W", "2026-10-27", True),
        ("within_last", "P30D", "soon", False),
        ("within_last", "P30D", _ABSENT, False),
        ("older_than", "P30D", NOW - timedelta(days=31), True),
        ("older_than", "P30D", NOW - timedelta(days=30), False),  # strictly older
        ("older_than", {"hours": 1}, "2026-11-02T10:00:00Z", True),
        ("older_than", {"hours": 1}, "2026-11-02T11:30:00Z", False),
        ("older_than", "P30D", None, False),
    ],
)
def test_within_last_and_older_than(op, value, fact, expected):
    assert check(op, value, fact) is expected


def test_durations_must_be_durations():
    assert problems("within_last", "30 days") == [
        "within_last '30 days' is not a duration like 'P30D', 'PT12H' or {\"days\": 30}"
    ]
    assert problems("older_than", 30)[0].startswith("older_than needs a duration")
    assert problems("older_than", "P1M") != []  # months are not a fixed length


# -- stages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "stage", "expected"),
    [
        ("stage_at_least", "purchase", "purchase", True),
        ("stage_at_least", "purchase", "advocacy", True),
        ("stage_at_least", "purchase", "awareness", False),
        ("stage_at_most", "purchase", "awareness", True),
        ("stage_at_most", "purchase", "retention", False),
        ("stage_at_least", "purchase", "lost", False),  # unknown stage: false
        ("stage_at_least", "purchase", None, False),
    ],
)
def test_stage_order(op, value, stage, expected):
    assert (
        evaluate(leaf("contact.stage", op, value), context(stage=stage, stages=STAGES)) is expected
    )


def test_stage_order_follows_the_context_stages():
    stages = ("lead", "customer", "fan")
    ctx = context(stage="customer", stages=stages)
    assert evaluate(leaf("contact.stage", "stage_at_least", "lead"), ctx)
    assert not evaluate(leaf("contact.stage", "stage_at_least", "fan"), ctx)
    # no stages in the context: the default lifecycle
    assert evaluate(leaf("contact.stage", "stage_at_least", "awareness"), context(stage="purchase"))
    assert not evaluate(leaf("contact.stage", "stage_at_least", "lead"), context(stage="purchase"))
    compiler = make_compiler(stages=stages)
    assert compiler.check(cond(leaf("contact.stage", "stage_at_least", "purchase"))) == [
        ("/value", "unknown stage 'purchase' (the stages are: lead, customer, fan)")
    ]


# -- helpers -----------------------------------------------------------------------------------


def test_every_builtin_operator_is_covered_here():
    covered = {
        "eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "contains",
        "not_contains", "starts_with", "ends_with", "matches", "exists", "is_null", "before",
        "after", "within_last", "older_than", "stage_at_least", "stage_at_most", "in_segment",
    }  # fmt: skip
    assert {op.name for op in OPERATORS} == covered


def test_date_and_duration_parsing():
    assert parse_datetime("2026-11-02") == datetime(2026, 11, 2, tzinfo=UTC)
    assert parse_datetime("2026-11-02T10:15:00Z") == datetime(2026, 11, 2, 10, 15, tzinfo=UTC)
    assert parse_datetime("2026-11-02T10:15") == datetime(2026, 11, 2, 10, 15, tzinfo=UTC)
    assert parse_datetime("2026-11-02T12:15:00+02:00") == datetime(2026, 11, 2, 10, 15, tzinfo=UTC)
    assert parse_datetime("20261102") is None
    assert parse_datetime("2026-11-02T25:00:00Z") is None
    assert parse_duration("P1W2DT3H") == timedelta(days=9, hours=3)
    assert parse_duration({"weeks": 1, "minutes": 5}) == timedelta(days=7, minutes=5)
    assert strict_eq(1, 1.0) and not strict_eq(True, 1) and not strict_eq(1, True)
