"""Values at the edges of their types: each is a clear rejection or a clear non-value, never a
crash (issue 11). Times outside the supported range, far anchor dates, NaN and infinity, huge
numbers, control characters in ids, deep nesting and very long text.

Each test drives what a user would: ``Engine`` on a real SQLite file, or ``clm`` through
click's runner, and checks what they would see (the rejection, the rejects file, the state).
"""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from clm_engine import Engine, VirtualClock, hookimpl
from clm_engine.conditions import ops
from clm_engine.conditions.values import to_datetime
from clm_engine.errors import ClmError
from clm_engine.models import MAX_NUMBER
from tests.helpers import event

RANGE = "from 1900-01-01T00:00:00Z to 2200-01-01T00:00:00Z (exclusive)"


def short(value: object) -> str:
    """A test id for a value that may be huge (str() of 10**5000 raises)."""
    if isinstance(value, int) and value.bit_length() > 100:
        return "huge-int"
    text = repr(value)
    return text if len(text) <= 30 else f"{text[:20]}...({len(text)})"


@pytest.fixture
def clock():
    return VirtualClock(datetime(2026, 11, 2, 8, 0, tzinfo=UTC))


def write_rules(tmp_path, *rules):
    path = tmp_path / "edges.json"
    path.write_text(json.dumps({"ruleset": "edges", "version": 1, "rules": list(rules)}))
    return path


def tag(name):
    return [{"action": "tag.add", "with": {"tag": name}}]


def raw(contact_id="c1", type_="x", occurred_at="2026-11-02T10:00:00Z", properties="{}"):
    """An event as the JSON text a CRM sends, with ``properties`` written verbatim."""
    return (
        f'{{"contact_id": {json.dumps(contact_id)}, "type": {json.dumps(type_)}, '
        f'"occurred_at": {json.dumps(occurred_at)}, "properties": {properties}}}'
    )


def rejection(engine, item) -> str:
    """The one rejection ``item`` gets from ``ingest_many``: the reason, as a user sees it."""
    result = engine.ingest_many([item])
    assert result.ingested == 0 and len(result.rejected) == 1, result
    return result.rejected[0].error


# -- 1. Event times --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+14:00",  # no UTC time at all: astimezone overflowed
        "9999-12-31T23:00:00-14:00",  # nor this one, at the other end
        "9999-12-30T00:00:00Z",  # a valid datetime, but "3 days after" it is not
        "1899-12-31T23:59:59Z",
        "1900-01-01T00:30:00+01:00",  # 1899 in UTC
        "2200-01-01T00:00:00Z",  # the upper bound is exclusive
    ],
)
def test_an_event_time_outside_the_supported_range_is_rejected_naming_field_value_range(
    tmp_path, when
):
    engine = Engine(tmp_path / "clm.db")
    for item in (raw(occurred_at=when), event("c1", "x", when)):
        error = rejection(engine, item)
        assert error.startswith("invalid event: occurred_at: is outside the supported range")
        assert RANGE in error and repr(when) in error
    assert engine.store.count_contacts() == 0


@pytest.mark.parametrize("when", ["1900-01-01T00:00:00Z", "2199-12-31T23:59:59.999999Z"])
def test_the_ends_of_the_supported_range_are_accepted(tmp_path, when):
    engine = Engine(tmp_path / "clm.db")
    assert engine.ingest(event("c1", "signup", when)).ingested == 1


def test_clm_ingest_rejects_an_out_of_range_time_by_line_and_lands_the_rest(run, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join(
            [
                raw("c1", "signup"),
                raw("c2", "signup", "0001-01-01T00:00:00+14:00"),
                raw("c3", "signup"),
            ]
        )
        + "\n"
    )
    result = run("ingest", str(path))
    assert result.exit_code == 1
    assert "2 ingested, 0 duplicates, 1 rejected, 0 failed" in result.output
    assert "line 2: invalid event: occurred_at: is outside the supported range" in result.output
    assert "Traceback" not in result.output
    [reject] = [json.loads(line) for line in (tmp_path / "events.jsonl.rejects.jsonl").open()]
    assert reject["line"] == 2 and RANGE in reject["error"]
    with Engine(tmp_path / "clm.db") as engine:
        assert engine.contact("c1") is not None and engine.contact("c3") is not None


# -- 2. Anchor dates and the date operators --------------------------------------------------

RENEWAL = {
    "id": "renewal-reminder",
    "when": {"before": "contact.attributes.renewal_at", "days": 30},
    "then": tag("renewal-soon"),
}
AFTER_RENEWAL = {
    "id": "after-renewal",
    "when": {"after": "contact.attributes.renewal_at", "days": 3},
    "then": tag("renewed"),
}


def pending_anchors(engine) -> list[tuple[str, str]]:
    rows = engine.store.conn.execute(
        "SELECT contact_id, rule FROM anchors WHERE status = 'pending' ORDER BY 1, 2"
    )
    return [tuple(row) for row in rows]


@pytest.mark.parametrize(
    "far",
    ["9999-12-30", "9999-12-31T23:59:59Z", "0001-01-01", "0001-01-01T00:00:00+14:00"],
)
def test_a_far_anchor_date_is_no_anchor_and_crashes_nothing(tmp_path, clock, far):
    engine = Engine(
        tmp_path / "clm.db", clock=clock, rulesets=[write_rules(tmp_path, RENEWAL, AFTER_RENEWAL)]
    )
    engine.ingest(event("c1", "signup", "2026-11-02", renewal_at="2026-12-12"))
    engine.ingest(event("c2", "signup", "2026-11-02", renewal_at="2026-12-12"))
    # c1's date moves out of range (a "never" date): its pending anchors are cancelled.
    engine.ingest(event("c1", "contact.updated", "2026-11-03", renewal_at=far))
    assert pending_anchors(engine) == [("c2", "after-renewal"), ("c2", "renewal-reminder")]
    clock.set(datetime(2026, 12, 20, tzinfo=UTC))
    report = engine.tick()
    assert report.anchors_fired == 2
    assert engine.contact("c2").tags == ["renewal-soon", "renewed"]
    assert engine.contact("c1").tags == []


def test_anchors_for_existing_contacts_survive_a_far_date_among_them(tmp_path, clock):
    """The crash in the anchor rebuild used to leave the rule recorded with no anchors, so
    every later ``clm tick`` silently dropped them."""
    with Engine(tmp_path / "clm.db", clock=clock) as engine:  # no rulesets yet
        engine.ingest_many(
            [
                event("a0", "signup", "2026-11-02", renewal_at="9999-12-30"),  # first in id order
                *(
                    event(f"c{n}", "signup", "2026-11-02", renewal_at="2026-11-10")
                    for n in (1, 2, 3)
                ),
            ]
        )
    rules = [write_rules(tmp_path, AFTER_RENEWAL)]
    Engine(tmp_path / "clm.db", clock=clock, rulesets=rules).close()  # the rebuild runs here
    clock.set(datetime(2026, 11, 14, tzinfo=UTC))
    with Engine(tmp_path / "clm.db", clock=clock, rulesets=rules) as engine:
        assert engine.tick().anchors_fired == 3
        assert engine.contact("a0").tags == []


class FarWarranties:
    """A plugin fact of entity -> date, some of them far: only the others are anchors."""

    @hookimpl
    def register_facts(self, register):
        def ends_at(ctx):
            return {"p-never": "9999-12-31", "p-zero": "0001-01-01", "p-1": "2026-12-15"}

        register("product.warranty_ends_at", ends_at)


def test_a_plugin_facts_far_dates_are_no_anchors(tmp_path, clock):
    rule = {
        "id": "warranty",
        "when": {"before": "product.warranty_ends_at", "days": 30},
        "then": tag("warranty"),
    }
    engine = Engine(
        tmp_path / "clm.db",
        clock=clock,
        rulesets=[write_rules(tmp_path, rule)],
        plugins={"far-warranties": FarWarranties()},
    )
    engine.ingest(event("c1", "signup", "2026-11-02"))
    rows = engine.store.conn.execute("SELECT entity FROM anchors").fetchall()
    assert [row[0] for row in rows] == ["p-1"]


@pytest.mark.parametrize(
    "value, expected",
    [
        ("9999-12-31", datetime(9999, 12, 31, tzinfo=UTC)),  # far, but a date ("never")
        ("0001-01-01T00:00:00+14:00", None),  # no UTC time
        ("9999-12-31T23:00:00-14:00", None),
        (math.nan, None),
        (math.inf, None),
        (1e308, None),
        (10**400, None),
        ("2026-11-02\x00", None),
        ("2026-11-02\n", None),
        ("\x002026-11-02", None),
        ("2026-11-02\u2028", None),
        ("\u0662\u0660\u0662\u0666-\u0661\u0661-\u0660\u0662", None),  # Arabic-Indic digits
        ("2" * 10_000, None),
    ],
    ids=short,
)
def test_to_datetime_gives_a_date_or_none_and_never_raises(value, expected):
    assert to_datetime(value) == expected


FAR_FACTS = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:00:00-14:00",
    "9999-12-31",
    "0001-01-01",
    math.nan,
    math.inf,
    -1e308,
    10**400,
    "2026-11-02\x00",
    "x" * 100_000,
]


@pytest.mark.parametrize("fact", FAR_FACTS, ids=short)
def test_the_date_operators_answer_for_far_and_odd_facts_without_raising(fact):
    ctx = SimpleNamespace(now=datetime(2026, 11, 2, tzinfo=UTC))
    moment = to_datetime(fact)
    checks = {
        "before": (ops.test_before, ops._prepare_moment("before")("2026-01-01")),
        "after": (ops.test_after, ops._prepare_moment("after")("2026-01-01")),
        "within_last": (ops.test_within_last, ops.prepare_within_last("P30D").resolve(ctx)),
        "older_than": (ops.test_older_than, ops.prepare_older_than("P30D").resolve(ctx)),
    }
    for name, (test, value) in checks.items():
        answer = test(fact, value)
        if moment is None:
            assert answer is False, name
    if moment is not None:  # a far date is still a date: before 2026 or after it
        assert checks["before"][0](fact, checks["before"][1]) == (moment.year == 1)
        assert checks["after"][0](fact, checks["after"][1]) == (moment.year == 9999)


def test_a_window_reaching_before_year_one_holds_every_date_and_raises_nothing():
    ctx = SimpleNamespace(now=datetime(1, 1, 10, tzinfo=UTC))  # a virtual clock may be anywhere
    window = ops.prepare_within_last("P30D").resolve(ctx)
    cutoff = ops.prepare_older_than("P30D").resolve(ctx)
    assert ops.test_within_last("0001-01-01", window) is True
    assert ops.test_older_than("0001-01-01", cutoff) is False


def test_a_far_date_in_a_condition_is_judged_and_recorded_without_error(tmp_path, clock):
    rule = {
        "id": "renewal-ahead",
        "when": {"event": "check"},
        "if": {"fact": "contact.attributes.renewal_at", "op": "after", "value": "now"},
        "then": tag("ahead"),
    }
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[write_rules(tmp_path, rule)])
    engine.ingest(event("never", "signup", "2026-11-02", renewal_at="9999-12-31"))
    engine.ingest(event("nodate", "signup", "2026-11-02", renewal_at="0001-01-01T00:00:00+14:00"))
    for contact_id in ("never", "nodate"):
        engine.ingest(event(contact_id, "check", "2026-11-02T11:00:00Z"))
    clock.set(datetime(2026, 11, 3, tzinfo=UTC))
    engine.dispatch()
    assert engine.contact("never").tags == ["ahead"]
    assert engine.contact("nodate").tags == []
    assert engine.store.traces("nodate") == []  # a plain no-match: no failure recorded


def test_a_huge_integer_in_a_comparison_is_a_number_not_an_overflow(tmp_path, clock):
    rules = [
        {
            "id": "below",
            "when": {"event": "x"},
            "if": {"fact": "contact.metrics.events_count", "op": "lt", "value": 10**400},
            "then": tag("below"),
        },
        {
            "id": "member",
            "when": {"event": "x"},
            "if": {"fact": "contact.metrics.events_count", "op": "in", "value": [10**400, 2]},
            "then": tag("member"),
        },
    ]
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[write_rules(tmp_path, *rules)])
    engine.ingest(event("c1", "signup", "2026-11-02T07:00:00Z"))
    engine.ingest(event("c1", "x", "2026-11-02T07:30:00Z"))
    engine.dispatch()
    assert engine.contact("c1").tags == ["below", "member"]


@pytest.mark.parametrize(
    "rule",
    [
        {"id": "r", "when": {"after": "contact.created_at", "days": 10**10}, "then": tag("x")},
        {"id": "r", "when": {"after": "contact.created_at", "hours": 10**9}, "then": tag("x")},
        {
            "id": "r",
            "when": {"event": "x"},
            "then": [{"action": "tag.add", "with": {"tag": "x"}, "after": {"days": 3_000_000}}],
        },
        {"id": "r", "when": {"event": "x"}, "limit": {"cooldown": "P99999D"}, "then": tag("x")},
        {
            "id": "r",
            "when": {"event": "x"},
            "if": {"fact": "contact.created_at", "op": "within_last", "value": "P9999999D"},
            "then": tag("x"),
        },
    ],
)
def test_a_ruleset_duration_beyond_a_century_is_a_ruleset_problem_not_an_overflow(tmp_path, rule):
    with pytest.raises(ClmError, match="longer than the longest duration allowed, 36,525 days"):
        Engine(tmp_path / "clm.db", rulesets=[write_rules(tmp_path, rule)])


def test_nan_and_infinity_in_a_ruleset_are_problems_at_their_place(tmp_path):
    path = tmp_path / "edges.json"
    path.write_text(
        '{"ruleset": "edges", "version": 1, "rules": [{"id": "r", "when": {"event": "x"}, '
        '"then": [{"action": "score.add", "with": {"score": "s", "points": NaN, '
        '"cap": 1e999}}]}]}'
    )
    with pytest.raises(ClmError) as caught:
        Engine(tmp_path / "clm.db", rulesets=[path])
    assert "/rules/0/then/0/with/points: NaN is not a JSON number" in str(caught.value)
    assert "/rules/0/then/0/with/cap: Infinity is not a JSON number" in str(caught.value)


# -- 3. NaN, infinity and huge numbers -------------------------------------------------------


@pytest.mark.parametrize(
    "properties, where, reason",
    [
        ('{"amount": NaN}', "properties.amount", "NaN is not a number JSON can hold"),
        ('{"amount": Infinity}', "properties.amount", "Infinity is not a number"),
        ('{"amount": -Infinity}', "properties.amount", "-Infinity is not a number"),
        ('{"amount": 1e999}', "properties.amount", "Infinity is not a number"),
        ('{"a": [1, {"b": NaN}]}', "properties.a[1].b", "NaN is not a number"),
        ('{"amount": -1e308}', "properties.amount", "-1e+308 is out of range"),
        ('{"amount": 9007199254740992}', "properties.amount", "9007199254740992 is out of range"),
        ('{"id": 1' + "0" * 400 + "}", "properties.id", "an integer of over 30 digits"),
    ],
)
def test_a_number_json_cannot_hold_or_past_the_bound_is_rejected_with_its_path(
    tmp_path, properties, where, reason
):
    engine = Engine(tmp_path / "clm.db")
    error = rejection(engine, raw(type_="purchase", properties=properties))
    assert error.startswith(f"invalid event: {where}: {reason}")


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 1e300, -(2**53), 10**5000], ids=short
)
def test_a_library_caller_gets_the_same_rejection_for_python_numbers(tmp_path, value):
    engine = Engine(tmp_path / "clm.db")
    error = rejection(engine, event("c1", "purchase", "2026-11-02", amount=value, n=[{"x": 1}]))
    assert error.startswith("invalid event: properties.amount: ")


def test_the_largest_allowed_amounts_keep_revenue_a_finite_number(run, tmp_path):
    with Engine(tmp_path / "clm.db") as engine:
        for day in ("2026-11-02", "2026-11-03"):
            engine.ingest(event("c1", "purchase", day, amount=-MAX_NUMBER))
        assert engine.contact("c1").metrics["total_spent"] == -2.0 * MAX_NUMBER
    assert run("report").exit_code == 0
    assert run("contacts", "list").exit_code == 0


def test_clm_ingest_rejects_nan_lines_by_number_and_report_and_list_keep_working(run, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join(
            [
                raw("c1", "purchase", properties='{"amount": NaN}'),
                raw("c2", "purchase", properties='{"amount": -1e308}'),
                raw("c2", "purchase", "2026-11-03T10:00:00Z", properties='{"amount": -1e308}'),
                raw("c3", "purchase", properties='{"amount": 12.5}'),
            ]
        )
        + "\n"
    )
    result = run("ingest", str(path))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "1 ingested, 0 duplicates, 3 rejected, 0 failed" in result.output
    rejects = [json.loads(line) for line in (tmp_path / "events.jsonl.rejects.jsonl").open()]
    assert [(r["line"], r["error"].split(":")[1].strip()) for r in rejects] == [
        (1, "properties.amount"),
        (2, "properties.amount"),
        (3, "properties.amount"),
    ]
    report = run("report", "--json")
    assert report.exit_code == 0 and json.loads(report.output)["revenue"] == 12.5
    assert run("contacts", "list").exit_code == 0


def test_a_database_that_already_holds_a_null_total_still_lists_and_reports(run, tmp_path):
    with Engine(tmp_path / "clm.db") as engine:
        engine.ingest(event("c1", "purchase", "2026-11-02", amount=5))
    with sqlite3.connect(tmp_path / "clm.db") as conn:  # what NaN amounts left behind before
        conn.execute("UPDATE contacts SET data = json_set(data, '$.metrics.total_spent', null)")
    listed = run("contacts", "list")
    assert listed.exit_code == 0 and "n/a" in listed.output
    assert run("report").exit_code == 0


# -- 4. Control characters in ids and types ----------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x01", "\t", "\x1f", "\x7f", "\x85", "\u2028", "\u2029"])
@pytest.mark.parametrize("field", ["id", "contact_id", "type"])
def test_a_control_character_in_an_id_or_type_is_rejected_naming_it(tmp_path, char, field):
    engine = Engine(tmp_path / "clm.db")
    item = {**event("c1", "signup", "2026-11-02"), field: f"sign{char}up"}
    for form in (item, json.dumps(item)):
        error = rejection(engine, form)
        assert error.startswith(f"invalid event: {field}: contains the control character ")
        assert f"U+{ord(char):04X} at position 4" in error


def test_a_contact_with_a_printable_unicode_id_keeps_its_state_across_batches(tmp_path):
    """The symptom: NUL in an id reset the contact at every batch (SQLite's JSON functions end
    a string at NUL, so the contact was never found again). Printable ids keep working."""
    engine = Engine(tmp_path / "clm.db")
    for contact_id in ("c\u00a0nbsp", "\U0001f469\u200d\U0001f4bb", "zoë-42"):
        engine.ingest_many([event(contact_id, "purchase", "2026-11-02", amount=5)])
        engine.ingest_many([event(contact_id, "purchase", "2026-11-03", amount=7)])
        assert engine.contact(contact_id).metrics["orders_count"] == 2


def test_an_unpaired_surrogate_from_a_library_caller_is_rejected_not_a_crash(tmp_path):
    engine = Engine(tmp_path / "clm.db")
    with_id = {**event("c1", "x", "2026-11-02", note="\ud800"), "id": "e-1"}
    assert "properties.note: holds an unpaired surrogate" in rejection(engine, with_id)
    nested_key = event("c1", "x", "2026-11-02", nested={"\udfff": 1})
    assert "the key holds an unpaired surrogate" in rejection(engine, nested_key)


# -- 5. Long, deep and huge ------------------------------------------------------------------


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_deep_nesting_is_a_rejection_not_a_recursion_error(tmp_path):
    engine = Engine(tmp_path / "clm.db")
    deep_json = raw(properties='{"a": ' + "[" * 10_000 + "]" * 10_000 + "}")
    assert "not valid JSON (nested too deeply" in rejection(engine, deep_json)
    deep_dict = event("c1", "x", "2026-11-02", a=nested(10_000))
    error = rejection(engine, deep_dict)
    assert error.startswith("invalid event: properties.a[0][0][0][...")
    assert error.endswith("nested more than 32 levels deep")
    assert engine.ingest(event("c1", "x", "2026-11-02", a=nested(32))).ingested == 1


def test_very_long_text_is_rejected_with_a_short_message(tmp_path):
    engine = Engine(tmp_path / "clm.db")
    long_property = event("c1", "x", "2026-11-02", note="x" * 1_000_001)
    assert rejection(engine, json.dumps(long_property)) == (
        "invalid event: properties: more than 1,000,000 characters of text "
        "(the limit for one event)"
    )
    many = event("c1", "x", "2026-11-02", values=[0] * 100_001)
    assert "more than 100,000 values" in rejection(engine, many)
    long_id = rejection(engine, event("c" * 10_000_000, "x", "2026-11-02"))
    assert "contact_id: String should have at most 200 characters" in long_id
    assert len(long_id) < 300  # the 10 MB id is not repeated in the message


def test_integers_too_long_for_python_to_print_are_rejected(tmp_path):
    engine = Engine(tmp_path / "clm.db")
    assert "not valid JSON (number out of range" in rejection(
        engine, raw(properties='{"n": 1' + "0" * 5000 + "}")
    )
    assert "an integer of over 30 digits" in rejection(
        engine, event("c1", "x", "2026-11-02", n=10**5000)
    )


# -- The command line: a mix of everything ---------------------------------------------------


def test_clm_ingest_with_every_kind_of_bad_line_stores_the_good_ones_and_explains_the_rest(
    run, tmp_path
):
    lines = [
        raw("good-1", "signup"),
        raw("c2", "signup", "0001-01-01T00:00:00+14:00"),
        raw("c3", "purchase", properties='{"amount": NaN}'),
        raw("c4", "purchase", properties='{"amount": -1e308}'),
        raw("c5\u0000", "signup"),
        raw("c6", "x", properties='{"a": ' + "[" * 10_000 + "]" * 10_000 + "}"),
        raw("c7", "x", properties='{"n": 1' + "0" * 400 + "}"),
        raw("c8", "x", properties=json.dumps({"s": "y" * 1_000_001})),
        raw("good-2", "purchase", properties='{"amount": 19.5}'),
        raw("c9", "x", "9999-12-30T00:00:00Z"),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run("ingest", str(path), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.output)
    assert (summary["ingested"], summary["rejected"], summary["failed"]) == (2, 8, 0)
    reasons = {r["line"]: r["error"] for r in summary["rejections"]}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 10]
    assert "occurred_at" in reasons[2] and "occurred_at" in reasons[10]
    assert "properties.amount" in reasons[3] and "properties.amount" in reasons[4]
    assert "contact_id: contains the control character U+0000" in reasons[5]
    assert "nested too deeply" in reasons[6]
    assert "properties.n" in reasons[7]
    assert "1,000,000 characters" in reasons[8]
    written = [json.loads(line) for line in (tmp_path / "events.jsonl.rejects.jsonl").open()]
    assert [r["line"] for r in written] == sorted(reasons)
    assert written[1]["input"] == lines[2]  # the line as it was, to fix and ingest again
    people = run("ingest", str(path))
    assert "0 ingested, 2 duplicates, 8 rejected, 0 failed" in people.output
    assert "Traceback" not in people.output
    listed = json.loads(run("contacts", "list", "--json").output)
    assert [c["id"] for c in listed["contacts"]] == ["good-1", "good-2"]
