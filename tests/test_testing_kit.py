"""clm_engine.testing's kit: a clock and events that agree, engine_for, the check_* helpers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from clm_engine import (
    Engine,
    EventError,
    PluginError,
    ReducerError,
    RulesetError,
    VirtualClock,
    hookimpl,
    testing,
)
from clm_engine.testing import (
    RULESET,
    START,
    check_action,
    check_contact,
    check_no_action,
    check_trace,
    engine_for,
    make_event,
)


class NotifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str


class Notify:
    """A plugin object: an external action that records what it 'sent'."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    @hookimpl
    def register_actions(self, register):
        register("notify.send", self.send, NotifyParams, external=True)

    def send(self, ctx, params):
        self.sent.append((ctx.contact.id, params.channel))
        return {"sent_to": params.channel}

    @hookimpl
    def register_reducers(self, register):
        def strict(contact, event):
            if not isinstance(event.properties.get("n"), int):
                raise ValueError("notify.count needs a whole number 'n'")

        register("notify.count", strict, name="notify.strict")


def notify_rule(**extra):
    return {
        "id": "greet",
        "when": {"event": "signup"},
        "then": [
            {"action": "tag.add", "with": {"tag": "greeted"}},
            {"action": "notify.send", "with": {"channel": "#sales"}},
        ],
        **extra,
    }


@pytest.fixture
def notify():
    return Notify()


@pytest.fixture
def kit(notify, tmp_path):
    with engine_for(rules=[notify_rule()], plugins=[notify], tmp_path=tmp_path) as kit:
        yield kit


# -- a clock and events that agree -----------------------------------------------------------


def test_the_clock_starts_when_events_are_dated_by_default():
    occurred = datetime.fromisoformat(make_event("signup")["occurred_at"])
    assert VirtualClock().now() == occurred == VirtualClock.DEFAULT_START
    assert START == "2026-03-01T10:00:00Z"
    assert make_event("signup", at=datetime(2026, 3, 2, tzinfo=UTC))["occurred_at"] == (
        "2026-03-02T00:00:00+00:00"
    )


def test_a_first_test_without_the_harness_dispatches_what_its_event_made_due(notify, tmp_path):
    # The issue this kit answers: with VirtualClock() before make_event's default time, the
    # external action was due in the clock's future and dispatch() silently did nothing.
    rules = tmp_path / "rules.json"
    rules.write_text(
        '{"ruleset": "t", "version": 1, "rules": [{"id": "greet", "when": {"event": "signup"},'
        ' "then": [{"action": "notify.send", "with": {"channel": "#s"}}]}]}'
    )
    with Engine(
        tmp_path / "x.db", clock=VirtualClock(), rulesets=[rules], plugins={"notify": notify}
    ) as engine:
        engine.ingest(make_event("signup"))
        assert engine.dispatch().outcomes["done"] == 1
        check_action(engine, "notify.send", contact_id="c1", result={"sent_to": "#s"})
    assert notify.sent == [("c1", "#s")]


# -- engine_for: internal actions inline, external ones at dispatch, delayed ones on time ---------


def test_internal_actions_run_inline_and_external_ones_wait_for_dispatch(kit, notify):
    result = kit.ingest(make_event("signup", {"email": "ada@example.com"}))
    assert (result.ingested, result.enqueued, result.ran_inline) == (1, 2, 1)
    kit.check_contact("c1", tags=["greeted"], email="ada@example.com")  # no dispatch needed
    kit.check_action("tag.add", rule="greet", params={"tag": "greeted"})
    pending = kit.check_action("notify.send", status="pending")
    assert pending.ruleset == RULESET
    with pytest.raises(AssertionError) as caught:
        kit.check_action("notify.send")
    message = str(caught.value)
    assert "expected one 'notify.send' action with status 'done'; found none." in message
    assert "notify.send for 'c1' (rule test/greet): pending" in message
    assert "due by the clock's now (2026-03-01T10:00:00Z)" in message
    assert "dispatch()" in message
    assert notify.sent == []

    assert kit.dispatch().outcomes["done"] == 1
    row = kit.check_action("notify.send", contact_id="c1", result={"sent_to": "#sales"})
    assert row.params == {"channel": "#sales"}
    assert notify.sent == [("c1", "#sales")]
    assert kit.dispatch().total == 0  # nothing runs twice


def test_delayed_actions_wait_for_the_clock(notify, tmp_path):
    rule = {
        "id": "follow-up",
        "when": {"event": "signup"},
        "then": [{"action": "notify.send", "with": {"channel": "#later"}, "after": {"days": 3}}],
    }
    with engine_for(rules=[rule], plugins=[notify], tmp_path=tmp_path) as kit:
        kit.ingest(make_event("signup"))
        kit.dispatch()
        with pytest.raises(AssertionError, match=r"pending until 2026-03-04T10:00:00.*advance"):
            kit.check_action("notify.send")
        kit.advance(days=2, hours=23)
        kit.check_no_action("notify.send", status="done")
        report = kit.advance(hours=1)
        assert report.dispatched.outcomes["done"] == 1
        kit.check_action("notify.send", params={"channel": "#later"})
        assert kit.now == datetime(2026, 3, 4, 10, tzinfo=UTC)


def test_relative_time_rules_fire_as_the_clock_advances(notify, tmp_path):
    rule = {
        "id": "nudge",
        "when": {"after": "contact.created_at", "days": 7},
        "then": [{"action": "notify.send", "with": {"channel": "#nudge"}}],
    }
    with engine_for(rules=[rule], plugins=[notify], tmp_path=tmp_path) as kit:
        kit.ingest(make_event("signup"))
        kit.advance(days=6)
        kit.check_no_action("notify.send")
        kit.advance(to="2026-03-08T10:00:00Z")
        kit.check_action("notify.send")
        kit.check_trace("nudge", contact_id="c1")
        assert notify.sent == [("c1", "#nudge")]


def test_ingest_moves_the_clock_to_the_events_never_back(kit):
    kit.ingest(make_event("signup", at="2026-03-05T09:00:00Z"))
    assert kit.now == datetime(2026, 3, 5, 9, tzinfo=UTC)
    kit.ingest(make_event("page.viewed", at="2026-03-02T09:00:00Z"))  # late
    assert kit.now == datetime(2026, 3, 5, 9, tzinfo=UTC)
    kit.ingest(
        make_event("signup", contact_id="c2", at="2026-03-06T09:00:00Z"),
        make_event("signup", contact_id="c3", at="2026-03-05T12:00:00Z"),
    )
    assert kit.now == datetime(2026, 3, 6, 9, tzinfo=UTC)
    assert [r.contact_id for r in kit.outbox(action="notify.send")] == ["c1", "c3", "c2"]


def test_ingest_raises_rather_than_lose_an_event_silently(kit):
    with pytest.raises(EventError, match="event 1 of this call: invalid event"):
        kit.ingest(make_event("signup"), {"contact_id": "c2", "type": "signup"})
    kit.check_no_action()  # the malformed event stopped the whole call
    with pytest.raises(ReducerError, match=r"notify\.strict"):
        kit.ingest(make_event("notify.count", {"n": "x"}), make_event("signup", contact_id="c2"))
    kit.check_contact("c2")  # the rest of the batch landed
    failure = kit.check_rejected(
        make_event("notify.count", {"n": "y"}, id="n-1"),
        match="whole number",
        reducer="notify.strict",
    )
    assert failure["event_id"] == "n-1"


# -- the checks ------------------------------------------------------------------------------


def test_check_action_wants_exactly_one(kit):
    kit.ingest(make_event("signup"), make_event("signup", contact_id="c2"))
    with pytest.raises(AssertionError, match=r"found 2\.\nThose found:"):
        kit.check_action("tag.add")
    assert kit.check_action("tag.add", contact_id="c2").contact_id == "c2"
    with pytest.raises(AssertionError, match=r"params including \{'tag': 'vip'\}"):
        kit.check_action("tag.add", contact_id="c2", params={"tag": "vip"})
    with pytest.raises(AssertionError, match=r"no action 'tag.ad' is registered; did you mean"):
        kit.check_action("tag.ad")
    with pytest.raises(AssertionError, match=r"The outbox of 'c9' is empty"):
        kit.check_action("tag.add", contact_id="c9")


def test_check_action_names_the_rules_decisions_when_it_enqueued_nothing(notify, tmp_path):
    rule = notify_rule(**{"if": {"fact": "event.properties.plan", "op": "eq", "value": "pro"}})
    with engine_for(rules=[rule], plugins=[notify], tmp_path=tmp_path) as kit:
        kit.ingest(make_event("signup"))
        with pytest.raises(AssertionError, match="Rule 'greet' recorded no decision for 'c1'"):
            kit.check_action("tag.add", contact_id="c1", rule="greet")


def test_check_no_action_lists_what_it_found(kit):
    kit.ingest(make_event("signup"))
    kit.check_no_action("notify.send", status="done")
    kit.check_no_action(rule="other")
    with pytest.raises(AssertionError) as caught:
        kit.check_no_action("notify.send", contact_id="c1")
    assert str(caught.value).startswith(
        "expected no 'notify.send' action for contact 'c1'; found 1:\n  - notify.send for 'c1'"
    )


def test_check_trace_shows_the_decisions_it_found(notify, tmp_path):
    with engine_for(
        rules=[notify_rule(limit={"once_per": "contact"})], plugins=[notify], tmp_path=tmp_path
    ) as kit:
        kit.ingest(make_event("signup"))
        kit.ingest(make_event("signup", id="again", at="2026-03-02T10:00:00Z"))
        kit.check_trace("greet")
        kit.check_trace(f"{RULESET}/greet", decision="blocked_by_limit", detail="fires once")
        with pytest.raises(AssertionError) as caught:
            kit.check_trace("greet", contact_id="c1", decision="error")
        assert str(caught.value).splitlines()[:2] == [
            "expected rule 'greet' to have decided 'error' for contact 'c1'; it did not.",
            "Rule 'greet' decided:",
        ]
        with pytest.raises(AssertionError, match=r"no rule 'gret' is loaded \(loaded: "):
            kit.check_trace("gret")
        assert [t.decision for t in kit.traces("c1", rule="greet")] == [
            "blocked_by_limit",
            "fired",
        ]


def test_check_contact_reports_every_difference(kit):
    kit.ingest(make_event("signup", {"email": "ada@example.com"}))
    contact = kit.check_contact("c1", stage="awareness", tags=["greeted"])
    assert contact.email == "ada@example.com"
    with pytest.raises(AssertionError) as caught:
        kit.check_contact(
            "c1",
            stage="purchase",
            email=None,
            tags=["greeted", "vip"],
            scores={"lead": 1},
            attributes={"plan": "pro"},
        )
    lines = str(caught.value).splitlines()
    assert lines[:6] == [
        "contact 'c1' is not as expected:",
        "  - stage is 'awareness', expected 'purchase'",
        "  - email is 'ada@example.com', expected None",
        "  - tags ['greeted'] lack ['vip']",
        "  - has no score 'lead' (expected 1)",
        "  - attributes: 'plan' is missing (expected 'pro')",
    ]
    assert lines[6].startswith('The contact: {"id":"c1"')
    with pytest.raises(AssertionError, match=r"no contact 'c2' is stored \(contacts: \['c1'\]\)"):
        kit.contact("c2")


def test_scores_compare_to_within_rounding(tmp_path):
    rule = {
        "id": "score",
        "when": {"event": "signup"},
        "then": [{"action": "score.add", "with": {"score": "lead", "points": 0.1}}],
    }
    with engine_for(rules=[rule], tmp_path=tmp_path) as kit:
        for day in (1, 2, 3):
            kit.ingest(make_event("page.viewed", at=f"2026-03-0{day}T10:00:00Z"))
            kit.ingest(make_event("signup", id=f"s{day}", at=f"2026-03-0{day}T11:00:00Z"))
        check_contact(kit.engine, "c1", scores={"lead": 0.3})


# -- engine_for: rulesets, plugins, folders ----------------------------------------------------


def test_rulesets_as_dicts_and_paths(tmp_path):
    path = tmp_path / "on-disk.json"
    path.write_text(
        '{"ruleset": "disk", "version": 1, "rules": [{"id": "t", "when": {"event": "purchase"},'
        ' "then": [{"action": "tag.add", "with": {"tag": "buyer"}}]}]}'
    )
    stages = {
        "ruleset": "stages",
        "version": 2,
        "rules": [
            {
                "id": "buyer",
                "when": {"event": "purchase"},
                "then": [{"action": "stage.set", "with": {"stage": "purchase"}}],
            }
        ],
    }
    with engine_for(rulesets=[stages, path], tmp_path=tmp_path) as kit:
        kit.ingest(make_event("purchase", {"amount": 10, "order_id": "o1"}))
        kit.check_contact("c1", stage="purchase", tags=["buyer"])
        kit.check_action("stage.set", rule="stages/buyer")
        assert [t.to_stage for t in kit.stage_history("c1")] == ["awareness", "purchase"]
        assert sorted(p.name for p in (kit.directory / "rulesets").iterdir()) == ["01-stages.json"]


def test_an_invalid_ruleset_says_where(notify, tmp_path):
    bad = notify_rule()
    bad["then"][1]["with"] = {"chanel": "#sales"}
    with pytest.raises(RulesetError, match="chanel"):
        engine_for(rules=[bad], plugins={"notify-kit": notify}, tmp_path=tmp_path)


def test_the_plugins_are_the_harness_engines_own(notify, tmp_path):
    kit = engine_for(plugins={"notify-kit": notify}, tmp_path=tmp_path)
    assert kit.engine.registry.pm.get_plugin("notify-kit") is notify
    assert "notify.send" in kit.engine.actions
    with engine_for(tmp_path=tmp_path) as other:  # another engine, in the same process
        assert "notify.send" not in other.engine.actions
    kit.close()
    kit.close()  # idempotent


def test_a_name_taken_by_another_plugin_is_an_error(notify, tmp_path):
    with pytest.raises(PluginError, match=r"two plugins named 'clm_engine\.builtins\.facts'"):
        engine_for(plugins={"clm_engine.builtins.facts": notify}, tmp_path=tmp_path)


def test_without_a_folder_the_harness_cleans_up_after_itself():
    kit = engine_for(start=datetime(2026, 5, 1, tzinfo=UTC), max_attempts=2)
    directory = kit.directory
    assert kit.now == datetime(2026, 5, 1, tzinfo=UTC)
    assert kit.engine.max_attempts == 2
    kit.ingest(make_event("signup", at="2026-04-01T00:00:00Z"))
    assert kit.now == datetime(2026, 5, 1, tzinfo=UTC)
    kit.close()
    assert not directory.exists()


def test_advance_takes_a_duration_or_a_time_not_both(kit):
    kit.advance(timedelta(hours=1))
    assert kit.now == datetime(2026, 3, 1, 11, tzinfo=UTC)
    with pytest.raises(TypeError, match="either 'to' or a duration"):
        kit.advance(to="2026-03-02T00:00:00Z", days=1)
    with pytest.raises(ValueError, match="offset"):
        kit.advance(to="2026-03-02T00:00:00")
    with pytest.raises(ValueError, match="never moves backward"):
        kit.advance(to="2026-03-01T00:00:00Z")


def test_the_checks_take_any_engine(engine):
    engine.ingest(make_event("signup", at="2026-11-01T10:00:00Z"))
    check_contact(engine, "c1", stage="awareness")
    check_no_action(engine)
    with pytest.raises(AssertionError, match="no rule 'x' is loaded"):
        check_trace(engine, "x")


def test_every_public_helper_is_documented():
    doc = (Path(__file__).parent.parent / "docs" / "plugin-testing.md").read_text()
    missing = [name for name in testing.__all__ if not re.search(rf"`[^`]*\b{name}\b", doc)]
    assert not missing, f"docs/plugin-testing.md does not mention {missing}"
