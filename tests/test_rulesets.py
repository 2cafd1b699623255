"""Ruleset loading and validation: what an ops person sees when a ruleset is wrong.

Fixtures in ``tests/rulesets/``; small cases are written to ``tmp_path``. Positions are
asserted exactly: a wrong line or column sends a person to the wrong place.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field

from clm_engine import RulesetError, hookimpl
from clm_engine.cli import cli
from clm_engine.registry import Registry
from clm_engine.rulesets import (
    SCHEMA_PATH,
    LoadedRuleset,
    RulesetProblem,
    RulesetValidationError,
    load_rulesets,
    load_schema,
    ruleset_files,
    stage_model,
    validate_all,
    validate_files,
)
from clm_engine.rulesets.schema import DESCRIPTIONS, build_schema, schema_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "rulesets"
EXAMPLES = ROOT / "rulesets"


# -- a small plugin of our own ---------------------------------------------------------------


class NotifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["email", "sms"]
    template: str
    retries: int = Field(default=0, ge=0)


class NotifyPlugin:
    @hookimpl
    def register_actions(self, register):
        register("test.notify", lambda ctx, params: None, NotifyParams, description="Notify.")

    @hookimpl
    def register_facts(self, register):
        register("test.renewal_at", lambda ctx: None, description="A date from a plugin.")


@pytest.fixture
def notify():
    """The built-ins and the notify plugin, for ``problems_in(..., registry=notify)``."""
    return Registry({"rulesets-test": NotifyPlugin()})


# -- helpers -----------------------------------------------------------------------------------


def write(folder: Path, name: str, text: str | dict) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    body = text if isinstance(text, str) else json.dumps(text, indent=2)
    path.write_text(textwrap.dedent(body).lstrip() if isinstance(text, str) else body)
    return path


def ruleset(*rules: dict, **top) -> dict:
    return {"ruleset": "t", "version": 1, **top, "rules": list(rules)}


def rule(**fields) -> dict:
    return {
        "id": "r",
        "when": {"event": "signup"},
        "then": [{"action": "tag.add", "with": {"tag": "x"}}],
        **fields,
    }


def problems_in(
    tmp_path: Path, document: str | dict, registry: Registry | None = None
) -> list[RulesetProblem]:
    loaded, problems = validate_files([write(tmp_path, "r.json", document)], registry=registry)
    assert not (loaded and problems)
    return problems


def found(problems: list[RulesetProblem]) -> list[tuple[str, str]]:
    return [(p.pointer, p.message) for p in problems]


# -- a valid ruleset ---------------------------------------------------------------------------


def test_a_valid_ruleset_loads_with_its_hash_and_source():
    path = FIXTURES / "valid.json"
    loaded, problems = validate_files([path])
    assert problems == []
    (item,) = loaded
    assert isinstance(item, LoadedRuleset)
    assert item.path == str(path)
    assert item.ruleset.ruleset == "valid-example"
    assert [r.id for r in item.ruleset.rules][-1] == "retired-rule"
    assert item.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert item.source == path.read_text()
    assert load_rulesets([path]) == loaded


def example_rulesets() -> list[Path]:
    """The shipped example files that are rulesets (the others are plugin documents)."""
    return [p for p in sorted(EXAMPLES.glob("*.json")) if "ruleset" in json.loads(p.read_text())]


@pytest.mark.usefixtures("example_plugins")
def test_the_example_rulesets_are_valid():
    files = sorted(EXAMPLES.rglob("*.json"))  # with the plugins' documents in folders
    if not files:
        pytest.skip("no example rulesets yet")
    result = validate_all([EXAMPLES])
    assert [str(p) for p in result.problems] == []
    assert len(result.rulesets) == len(example_rulesets())
    assert len(result.rulesets) + len(result.documents) == len(files)


# -- every mistake at once, exactly where it is ------------------------------------------------


def test_schema_mistakes_are_all_reported_with_pointer_line_and_column():
    path = FIXTURES / "broken_schema.json"
    _, problems = validate_files([path])
    assert [(p.line, p.column, p.pointer) for p in problems] == [
        (2, 14, "/ruleset"),
        (3, 14, "/version"),
        (5, 5, "/rules/0/then"),
        (7, 16, "/rules/0/when/evnt"),
        (8, 64, "/rules/0/if/all/0/valeu"),
        (9, 7, "/rules/0/thne"),
        (13, 15, "/rules/1/when"),
        (14, 15, "/rules/1/then"),
        (15, 19, "/rules/1/priority"),
    ]
    messages = [p.message for p in problems]
    assert messages[0].startswith("'Broken Rules' is not a valid name (lowercase letters")
    assert problems[0].hint == "try 'broken-rules'"
    assert messages[1:] == [
        "expected at least 1, found 0",
        "missing required key 'then' in rule",
        "unknown key 'evnt' in trigger; did you mean 'event'?",
        "unknown key 'valeu' in condition; did you mean 'value'?",
        "unknown key 'thne' in rule; did you mean 'then'?",
        "found 'schedule' and 'event' in one trigger; a trigger is one of "
        '{"event": ...}, {"stage_changed": {...}}, {"schedule": ...}, {"before": ...}, '
        '{"after": ...} or {"every": ..., "on": ...}',
        "expected at least one item, found an empty list",
        "expected an integer, found a string 'high'",
    ]
    assert str(problems[5]) == (
        f"{path}:9:7: /rules/0/thne: unknown key 'thne' in rule; did you mean 'then'?"
    )


def test_semantic_mistakes_are_all_reported_with_pointer_line_and_column():
    _, problems = validate_files([FIXTURES / "broken_semantics.json"])
    located = [(p.line, p.column, p.pointer) for p in problems]
    assert located == [
        (8, 22, "/rules/0/if/fact"),
        (8, 45, "/rules/0/if/op"),
        (9, 27, "/rules/0/then/0/action"),
        (12, 13, "/rules/1/id"),
        (13, 28, "/rules/1/when/schedule"),
        (13, 53, "/rules/1/when/timezone"),
        (14, 22, "/rules/1/if/fact"),
        (15, 58, "/rules/1/then/0/with/stage"),
        (15, 69, "/rules/1/then/0/with/urgent"),
        (20, 40, "/rules/2/when/stage_changed/to"),  # a disabled rule is still validated
        (21, 78, "/rules/2/then/0/with/points"),
    ]
    by_pointer = {p.pointer: p for p in problems}
    assert "did you mean 'email'?" in by_pointer["/rules/0/if/fact"].message
    assert (
        "unknown operator 'exsts'; did you mean 'exists'?" in by_pointer["/rules/0/if/op"].message
    )
    assert by_pointer["/rules/0/then/0/action"].message == (
        "unknown action 'tag.ad'; did you mean 'tag.add'?"
    )
    assert by_pointer["/rules/1/id"].message == "duplicate rule id 'welcome' (also at /rules/0/id)"
    assert by_pointer["/rules/1/when/timezone"].message == (
        "unknown timezone 'Europe/Pariss'; did you mean 'Europe/Paris'?"
    )
    assert by_pointer["/rules/1/then/0/with/stage"].message == (
        "unknown stage 'purchse'; did you mean 'purchase'?"
    )
    assert by_pointer["/rules/2/when/stage_changed/to"].message == (
        "unknown stage 'retension'; did you mean 'retention'?"
    )
    assert by_pointer["/rules/2/then/0/with/points"].message == (
        "expected a number, found a string 'ten' (action 'score.add')"
    )


def test_a_syntax_error_has_the_decoders_line_and_column_and_a_hint():
    path = FIXTURES / "syntax_error.json"
    loaded, problems = validate_files([path])
    assert loaded == []
    (problem,) = problems
    assert (problem.line, problem.column, problem.pointer) == (6, 3, "")
    assert problem.message == "invalid JSON: Expecting value"
    assert problem.hint == "remove the comma after the last item: JSON allows no trailing commas"
    assert str(problem) == f"{path}:6:3: invalid JSON: Expecting value"


def test_an_empty_file_and_a_key_written_twice(tmp_path):
    empty = write(tmp_path, "empty.json", "")
    twice = write(
        tmp_path,
        "twice.json",
        """
        {"ruleset": "t", "version": 1, "rules": [
          {"id": "r", "when": {"event": "signup"},
           "then": [{"action": "tag.add", "with": {"tag": "x"}}],
           "then": [{"action": "tag.add", "with": {"tag": "y"}}]}
        ]}
        """,
    )
    _, problems = validate_files([empty, twice])
    assert [(p.file, p.line, p.column, p.pointer) for p in problems] == [
        (str(empty), 1, 1, ""),
        (str(twice), 4, 4, "/rules/0/then"),
    ]
    assert problems[0].hint == "the file is empty; a ruleset is one JSON object"
    assert problems[1].message == (
        "key 'then' appears more than once in this object; JSON keeps only the last one"
    )


def test_windows_line_endings_and_a_byte_order_mark_keep_positions_right(tmp_path):
    path = tmp_path / "crlf.json"
    lines = [
        "{",
        '  "ruleset": "crlf",',
        '  "version": 1,',
        '  "rules": [],',
        '  "trase": "all"',
        "}",
    ]
    text = "\r\n".join(lines) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    _, problems = validate_files([path])
    assert [(p.line, p.column, p.message) for p in problems] == [
        (5, 3, "unknown key 'trase' in ruleset; did you mean 'trace'?")
    ]


def test_absurdly_deep_nesting_is_a_problem_not_a_crash(tmp_path):
    condition: dict = {"fact": "contact.email", "op": "exists"}
    for _ in range(200):
        condition = {"not": condition}
    (problem,) = problems_in(tmp_path, ruleset(rule(**{"if": condition})))
    assert problem.message == "nested more than 100 levels deep"
    assert problem.pointer.startswith("/rules/0/if/not/not/")


# -- schema errors made readable ---------------------------------------------------------------


def test_a_condition_is_judged_by_the_key_it_has(tmp_path):
    problems = problems_in(
        tmp_path,
        ruleset(
            rule(
                **{
                    "if": {
                        "any": [
                            {"fact": "contact.email", "op": "exists", "vlaue": True},
                            {"not": {"fact": "contact.email", "op": 3}},
                            {"al": []},
                            {},
                        ]
                    }
                }
            )
        ),
    )
    assert found(problems) == [
        ("/rules/0/if/any/0/vlaue", "unknown key 'vlaue' in condition; did you mean 'value'?"),
        ("/rules/0/if/any/1/not/op", "expected a string, found an integer 3"),
        ("/rules/0/if/any/2/al", "unknown key 'al' in condition; did you mean 'all'?"),
        (
            "/rules/0/if/any/3",
            'expected {"all": [...]}, {"any": [...]}, {"not": {...}} or a leaf {"fact": ..., '
            '"op": ..., "value": ...}, found an empty object',
        ),
    ]


def test_triggers_are_judged_by_their_key(tmp_path):
    problems = problems_in(
        tmp_path,
        ruleset(
            rule(id="a", when={"stage_changed": {"to": "Purchase"}}),
            rule(id="b", when={"days": 3}),
            rule(id="c", when={"before": "contact.created_at", "after": "contact.created_at"}),
            rule(id="d", when="signup"),
            rule(id="e", when={"schedule": "0 9 * * MON", "timezone": 1}),
        ),
    )
    assert found(problems) == [
        (
            "/rules/0/when/stage_changed/to",
            "'Purchase' is not a valid name (lowercase letters, digits, '_', '.' and '-', "
            "starting with a letter or digit)",
        ),
        ("/rules/1/when", "a relative-time trigger needs one of 'before' or 'after'"),
        (
            "/rules/2/when",
            "a relative-time trigger takes only one of 'before' or 'after', found 'before' and "
            "'after'",
        ),
        ("/rules/3/when", "expected a trigger object, found a string 'signup'"),
        ("/rules/4/when/timezone", "expected a string, found an integer 1"),
    ]


def test_values_with_several_shapes_say_what_was_expected(tmp_path):
    problems = problems_in(
        tmp_path,
        ruleset(
            rule(
                id="a",
                limit={"once_per": "the product", "cooldown": "7 days"},
                then=[{"action": "tag.add", "with": {"tag": "x"}, "after": {"dayz": 3}}],
            ),
        ),
    )
    assert found(problems) == [
        ("/rules/0/then/0/after/dayz", "unknown key 'dayz' in duration; did you mean 'days'?"),
        (
            "/rules/0/limit/once_per",
            "expected 'contact' or a fact path, found a string 'the product'",
        ),
        (
            "/rules/0/limit/cooldown",
            "'7 days' is not an ISO 8601 duration (like 'P30D', 'PT12H' or 'P1W')",
        ),
    ]


def test_what_only_pydantic_knows_is_reported_with_a_pointer(tmp_path):
    problems = problems_in(
        tmp_path,
        ruleset(rule(then=[{"action": "tag.add", "with": {"tag": "x"}, "after": "PT"}])),
    )
    assert found(problems) == [
        ("/rules/0/then/0/after", "'PT' is not an ISO 8601 duration (like 'P30D' or 'PT12H')")
    ]


def test_a_bad_segment_name_points_at_the_key(tmp_path):
    text = (
        '{"ruleset": "t", "version": 1, "rules": [],\n'
        ' "segments": {"Big Spenders": {"fact": "now", "op": "exists"}}}'
    )
    (problem,) = problems_in(tmp_path, text)
    assert (problem.pointer, problem.line, problem.column) == ("/segments/Big Spenders", 2, 15)
    assert problem.hint == "try 'big-spenders'"


# -- names the plugins define -----------------------------------------------------------------


def test_an_unknown_action_suggests_the_closest(tmp_path, notify):
    problems = problems_in(
        tmp_path,
        ruleset(rule(then=[{"action": "test.notfy", "with": {"channel": "email"}}])),
        registry=notify,
    )
    (problem,) = problems
    assert problem.pointer == "/rules/0/then/0/action"
    assert problem.message == "unknown action 'test.notfy'; did you mean 'test.notify'?"
    assert "test.notify" in (problem.hint or "")


def test_action_parameters_are_checked_by_the_actions_own_model(tmp_path, notify):
    problems = problems_in(
        tmp_path,
        ruleset(
            rule(
                then=[
                    {"action": "test.notify", "with": {"channel": "fax", "retries": "twice"}},
                    {"action": "test.notify", "with": {"template": "hi", "chanel": "sms"}},
                    {"action": "test.notify", "with": {"channel": "sms", "template": "x"}},
                ]
            )
        ),
        registry=notify,
    )
    assert found(problems) == [
        (
            "/rules/0/then/0/with/template",
            "missing required parameter 'template' (action 'test.notify')",
        ),
        (
            "/rules/0/then/0/with/channel",
            "expected 'email' or 'sms', found a string 'fax' (action 'test.notify')",
        ),
        (
            "/rules/0/then/0/with/retries",
            "expected an integer, found a string 'twice' (action 'test.notify')",
        ),
        (
            "/rules/0/then/1/with/channel",
            "missing required parameter 'channel' (action 'test.notify')",
        ),
        (
            "/rules/0/then/1/with/chanel",
            "unknown parameter 'chanel'; did you mean 'channel'? (action 'test.notify')",
        ),
    ]
    unknown = problems[-1]
    assert unknown.hint == "test.notify takes 'channel', 'template' and 'retries'"


def test_registries_can_be_passed_in(tmp_path):
    path = write(tmp_path, "r.json", ruleset(rule()))
    _, problems = validate_files([path], registry=Registry(builtins=False, installed=False))
    assert found(problems) == [("/rules/0/then/0/action", "unknown action 'tag.add'")]
    assert problems[0].hint == "no plugin registers any action"


# -- facts -------------------------------------------------------------------------------------


def test_unknown_facts_suggest_the_closest(tmp_path):
    problems = problems_in(
        tmp_path,
        ruleset(
            rule(
                **{
                    "if": {
                        "all": [
                            {"fact": "contact.metric.orders_count", "op": "gte", "value": 2},
                            {"fact": "event.propertes.sku", "op": "exists"},
                            {"fact": "events.cuont", "op": "gte", "value": 1},
                            {
                                "fact": "contact.email",
                                "op": "eq",
                                "value": {"fact": "contact.emial"},
                            },
                        ]
                    }
                }
            )
        ),
    )
    pointers = [p.pointer for p in problems]
    assert pointers == [
        "/rules/0/if/all/0/fact",
        "/rules/0/if/all/1/fact",
        "/rules/0/if/all/2/fact",
        "/rules/0/if/all/3/value/fact",
    ]
    messages = [p.message for p in problems]
    assert "did you mean 'metrics'?" in messages[0]
    assert "did you mean 'properties'?" in messages[1]
    assert "did you mean 'events.count'?" in messages[2]
    assert "did you mean 'email'?" in messages[3]


def test_facts_must_exist_where_they_are_used(tmp_path):
    problems = problems_in(
        tmp_path,
        ruleset(
            rule(
                id="on-event", **{"if": {"fact": "transition.to", "op": "eq", "value": "purchase"}}
            ),
            rule(
                id="weekly",
                when={"schedule": "0 9 * * MON"},
                limit={"once_per": "event.properties.order_id"},
            ),
            rule(
                id="on-stage",
                when={"stage_changed": {"to": "purchase"}},
                **{
                    "if": {
                        "all": [
                            {"fact": "transition.from", "op": "eq", "value": "awareness"},
                            {"fact": "event.type", "op": "exists"},
                        ]
                    }
                },
            ),
            segments={"buyers": {"fact": "event.type", "op": "eq", "value": "purchase"}},
        ),
    )
    assert found(problems) == [
        (
            "/segments/buyers/fact",
            "'event.type' reads the triggering event, but there is no event in a segment "
            "(segments describe contacts, with no event at hand)",
        ),
        (
            "/rules/0/if/fact",
            "'transition.to' is only set in rules triggered by stage_changed, not in an event rule",
        ),
        (
            "/rules/1/limit/once_per",
            "'event.properties.order_id' reads the triggering event, but there is no event in a "
            "schedule rule (it runs over contacts, with no event)",
        ),
    ]


def test_events_count_needs_an_event_type(tmp_path):
    problems = problems_in(
        tmp_path,
        ruleset(rule(**{"if": {"fact": "events.count", "op": "gte", "value": 1, "args": {}}})),
    )
    assert [p.pointer for p in problems] == ["/rules/0/if/args"]
    assert "type" in problems[0].message


def test_relative_time_anchors_must_be_dates(tmp_path, notify):
    problems = problems_in(
        tmp_path,
        ruleset(
            rule(id="a", when={"after": "contact.created_at", "days": 3}),
            rule(id="b", when={"before": "contact.attributes.renewal_at", "days": 30}),
            rule(id="c", when={"before": "contact.metrics.last_order_at", "hours": 1}),
            rule(id="d", when={"before": "test.renewal_at", "days": 1}),
            rule(id="e", when={"after": "contact.email", "days": 1}),
            rule(id="f", when={"after": "contact.metrics.orders_count", "days": 1}),
            rule(id="g", when={"after": "contact.craeted_at", "days": 1}),
        ),
        registry=notify,
    )
    assert [(p.pointer, p.message) for p in problems] == [
        ("/rules/4/when/after", "'contact.email' is not a date: before/after/on need a date fact"),
        (
            "/rules/5/when/after",
            "'contact.metrics.orders_count' is not a date: before/after/on need a date fact",
        ),
        (
            "/rules/6/when/after",
            "unknown fact 'contact.craeted_at'; did you mean 'contact.created_at'?",
        ),
    ]


def test_once_per_is_contact_or_a_fact(tmp_path):
    problems = problems_in(
        tmp_path,
        ruleset(
            rule(id="a", limit={"once_per": "contact"}),
            rule(id="b", limit={"once_per": "event.properties.product_id"}),
            rule(id="c", limit={"once_per": "product"}),
            rule(id="d", limit={"once_per": "contact.attribute.plan"}),
        ),
    )
    assert found(problems) == [
        (
            "/rules/2/limit/once_per",
            "once_per is 'contact' or a fact under event. or contact., found 'product'",
        ),
        (
            "/rules/3/limit/once_per",
            "unknown fact 'contact.attribute.plan'; did you mean 'contact.attributes.plan'?",
        ),
    ]


# -- stages ------------------------------------------------------------------------------------


def test_stage_names_are_checked_against_the_stage_model(tmp_path):
    problems = problems_in(
        tmp_path,
        ruleset(
            rule(
                id="a",
                when={"stage_changed": {"from": ["lead", "trail"], "to": "customer"}},
                **{"if": {"fact": "contact.stage", "op": "in", "value": ["lead", "custmer"]}},
                then=[{"action": "stage.set", "with": {"stage": "vip"}}],
            ),
            stages=["lead", "trial", "customer", "lead"],
        ),
    )
    assert found(problems) == [
        ("/stages/3", "stage 'lead' is listed twice (also at /stages/0)"),
        ("/rules/0/when/stage_changed/from/1", "unknown stage 'trail'; did you mean 'trial'?"),
        ("/rules/0/then/0/with/stage", "unknown stage 'vip'"),
        ("/rules/0/if/value/1", "unknown stage 'custmer'; did you mean 'customer'?"),
    ]
    assert problems[-1].hint == "the stages are 'lead', 'trial' and 'customer'"
    assert problems[-2].hint == problems[-1].hint


def test_without_stages_the_default_model_applies(tmp_path):
    problems = problems_in(
        tmp_path, ruleset(rule(then=[{"action": "stage.set", "with": {"stage": "lead"}}]))
    )
    assert found(problems) == [("/rules/0/then/0/with/stage", "unknown stage 'lead'")]
    assert "'awareness', 'consideration', 'purchase', 'retention' and 'advocacy'" in (
        problems[0].hint or ""
    )


def test_files_that_list_stages_must_agree_and_names_are_unique():
    folder = FIXTURES / "stages-conflict"
    loaded, problems = validate_files([folder])
    assert [r.path for r in loaded] == [str(folder / "a-funnel.json")]
    second = str(folder / "b-funnel-copy.json")
    assert [(p.file, p.line, p.column, p.pointer) for p in problems] == [
        (second, 2, 14, "/ruleset"),
        (second, 4, 13, "/stages"),
    ]
    assert problems[0].message == (
        f"ruleset 'funnel' is also defined in {folder / 'a-funnel.json'}"
    )
    assert problems[1].message == (
        f"these stages differ from those in {folder / 'a-funnel.json'}: lead, trial, customer"
    )
    assert stage_model(r.ruleset for r in loaded) == ("lead", "trial", "customer")


# -- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "timezone", "message"),
    [
        ("0 9 * * MON-FRI", "Europe/Paris", None),
        ("*/15 8-18 * * *", "contact", None),
        ("0 9 1 */3 *", "UTC", None),
        ("61 9 * * MON", "UTC", "not a valid cron expression '61 9 * * MON': Error validating"),
        ("0 9 * * * *", "UTC", "not a valid cron expression '0 9 * * * *': Wrong number of fields"),
        ("0 9 * * 1-5", "UTC", "write the day of week as names, not numbers: found '1-5'"),
        ("0 9 * * MON", "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
    ],
)
def test_schedules_are_crontab_expressions(tmp_path, schedule, timezone, message):
    problems = problems_in(
        tmp_path, ruleset(rule(when={"schedule": schedule, "timezone": timezone}))
    )
    if message is None:
        assert problems == []
    else:
        (problem,) = problems
        assert problem.message.startswith(message)


def test_numeric_weekdays_get_their_names_in_the_hint(tmp_path):
    (problem,) = problems_in(tmp_path, ruleset(rule(when={"schedule": "0 9 * * 0,6"})))
    assert problem.hint is not None and "'0,6' is 'SUN,SAT'" in problem.hint


# -- files, order, and the error the engine raises ---------------------------------------------


def test_directories_are_searched_recursively_in_order(tmp_path):
    write(tmp_path, "b.json", ruleset(rule(), ruleset="b"))
    write(tmp_path, "sub/a.json", ruleset(rule(), ruleset="a"))
    write(tmp_path, "ruleset.schema.json", "{}")
    write(tmp_path, ".hidden/c.json", "{}")
    write(tmp_path, "notes.txt", "not json")
    assert ruleset_files([tmp_path, tmp_path / "b.json"]) == [
        tmp_path / "b.json",
        tmp_path / "sub" / "a.json",
    ]


def test_a_missing_path_is_a_problem_not_a_crash(tmp_path):
    missing = tmp_path / "nope.json"
    loaded, problems = validate_files([missing, FIXTURES / "valid.json"])
    assert len(loaded) == 1
    assert [str(p) for p in problems] == [f"{missing}: no such file or directory"]
    with pytest.raises(RulesetValidationError):
        ruleset_files([missing])


def test_problems_are_sorted_by_file_then_line(tmp_path):
    later = write(tmp_path, "b.json", '{"ruleset": "b", "version": 0,\n"rules": 1}')
    earlier = write(tmp_path, "a.json", '{"ruleset": "a",\n\n "version": 1, "rules": [], "x": 1}')
    _, problems = validate_files([later, earlier])
    assert [(Path(p.file).name, p.line) for p in problems] == [
        ("a.json", 3),
        ("b.json", 1),
        ("b.json", 2),
    ]


def test_load_rulesets_raises_one_error_listing_every_problem():
    with pytest.raises(RulesetError) as raised:
        load_rulesets([FIXTURES / "broken_schema.json", FIXTURES / "syntax_error.json"])
    error = raised.value
    assert isinstance(error, RulesetValidationError)
    lines = str(error).splitlines()
    assert lines[0] == "invalid rulesets: 10 problems in 2 files"
    assert len(error.problems) == 10
    assert any(line.startswith("    hint: ") for line in lines)


def test_a_problem_prints_like_a_compiler_error():
    problem = RulesetProblem(
        "rulesets/leads.json",
        "/rules/2/then/0/action",
        12,
        9,
        "unknown action 'tag.ad'; did you mean 'tag.add'?",
    )
    assert str(problem) == (
        "rulesets/leads.json:12:9: /rules/2/then/0/action: unknown action 'tag.ad'; "
        "did you mean 'tag.add'?"
    )
    assert problem.render() == str(problem)
    hinted = RulesetProblem("x.json", "", None, None, "no such file or directory", "check it")
    assert hinted.render() == "x.json: no such file or directory\n    hint: check it"


# -- the schema --------------------------------------------------------------------------------


def test_the_shipped_schema_is_what_the_models_generate():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), (
        "the ruleset models changed: run python scripts/generate_schema.py"
    )


def test_the_schema_is_draft_2020_12_and_every_key_is_described():
    schema = build_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    for name, definition in [("Ruleset", schema), *schema["$defs"].items()]:
        assert definition.get("description"), name
        for key, prop in definition.get("properties", {}).items():
            assert prop.get("description") == DESCRIPTIONS[(name, key)], (name, key)


def test_the_schema_alone_validates_the_examples_and_their_schema_paths_resolve():
    files = [*example_rulesets(), FIXTURES / "valid.json"]
    validator = Draft202012Validator(load_schema())
    for file in files:
        document = json.loads(file.read_text())
        assert list(validator.iter_errors(document)) == [], file
        if "$schema" in document:
            assert (file.parent / document["$schema"]).resolve() == SCHEMA_PATH.resolve(), file


def test_the_docs_examples_are_valid_rulesets(tmp_path):
    docs = (ROOT / "docs" / "rulesets.md").read_text()
    blocks = [b for b in re.findall(r"```json\n(.*?)```", docs, re.DOTALL) if '"ruleset"' in b]
    assert len(blocks) >= 3
    paths = [write(tmp_path, f"example-{i}.json", block) for i, block in enumerate(blocks)]
    for path in paths:
        _, problems = validate_files([path])
        assert [str(p) for p in problems] == [], path.read_text()


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["validate", *args], catch_exceptions=False)

    return invoke


def test_clm_validate_prints_each_problem_and_a_summary(run, tmp_path):
    write(tmp_path, "rulesets/good.json", ruleset(rule(), ruleset="good"))
    write(
        tmp_path, "rulesets/bad.json", '{"ruleset": "bad", "version": 1,\n  "rules": [{"id": "r"}]}'
    )
    result = run("rulesets", "missing.json")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "missing.json: no such file or directory",
        "rulesets/bad.json:2:13: /rules/0/then: missing required key 'then' in rule",
        "    hint: 'then': the actions to run, in order (at least one).",
        "rulesets/bad.json:2:13: /rules/0/when: missing required key 'when' in rule",
        "    hint: 'when': the trigger: an event, a stage change, a cron schedule, a time "
        "before/after a date fact, or every anniversary of a date fact.",
        "3 problems in 2 files",
    ]


def test_clm_validate_says_ok_with_counts(run, tmp_path):
    write(tmp_path, "a.json", ruleset(rule(id="x"), rule(id="y"), ruleset="a"))
    write(tmp_path, "b.json", ruleset(rule(), ruleset="b"))
    result = run("a.json", "b.json")
    assert result.exit_code == 0
    assert result.output == "ok: 2 rulesets, 3 rules\n"


def test_clm_validate_json(run, tmp_path):
    good = write(tmp_path, "good.json", ruleset(rule(), ruleset="good"))
    write(tmp_path, "bad.json", "{")
    ok = run("good.json", "--json")
    assert ok.exit_code == 0
    assert json.loads(ok.output) == {
        "ok": True,
        "problems": [],
        "warnings": [],
        "rulesets": [
            {
                "path": "good.json",
                "ruleset": "good",
                "version": 1,
                "rules": 1,
                "content_hash": hashlib.sha256(good.read_bytes()).hexdigest(),
            }
        ],
        "documents": [],
    }
    bad = run("bad.json", "good.json", "--json")
    assert bad.exit_code == 1
    answer = json.loads(bad.output)
    assert answer["ok"] is False
    assert answer["problems"] == [
        {
            "file": "bad.json",
            "pointer": "",
            "line": 1,
            "column": 2,
            "message": "invalid JSON: Expecting property name enclosed in double quotes",
            "hint": "the file ends before the JSON does: a closing '}' or ']' is missing",
        }
    ]
    assert [r["path"] for r in answer["rulesets"]] == ["good.json"]


def test_clm_validate_with_no_ruleset_files_fails(run, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("empty")
    assert result.exit_code == 1
    assert result.output == "no ruleset files (*.json) found in empty\n"


@pytest.mark.usefixtures("example_plugins")
def test_clm_validate_checks_the_shipped_examples(run):
    if not sorted(EXAMPLES.glob("*.json")):
        pytest.skip("no example rulesets yet")
    result = run(str(EXAMPLES))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")
