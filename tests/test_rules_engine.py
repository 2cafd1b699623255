"""Rules at work end to end: ingest -> match -> outbox -> dispatch -> contact, and explain."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, ConfigDict

from clm_engine import Engine, RetryLater, RulesetError, VirtualClock, hookimpl
from clm_engine.errors import retry_after_time
from clm_engine.explain import check, explain
from clm_engine.types import Defer, Veto
from tests.helpers import event, store_in

SCHEMA = "../clm_engine/rulesets/ruleset.schema.json"


def ruleset(tmp_path, name="test", rules=(), version=1, **extra):
    path = tmp_path / f"{name}.json"
    path.write_text(
        json.dumps({"ruleset": name, "version": version, "rules": list(rules), **extra})
    )
    return path


def rule(id, when, then, **extra):
    return {"id": id, "when": when, "then": then, **extra}


STAGE_ON_FIRST_ORDER = rule(
    "first-order",
    {"event": "purchase"},
    [{"action": "stage.set", "with": {"stage": "purchase", "reason": "first order"}}],
    **{"if": {"fact": "contact.metrics.orders_count", "op": "eq", "value": 1}},
)


@pytest.fixture
def clock():
    return VirtualClock(datetime(2026, 11, 2, 12, 0, tzinfo=UTC))


def make(tmp_path, clock, *rules, plugins=(), **extra):
    rulesets = [ruleset(tmp_path, rules=rules, **extra)]
    return Engine(store_in(tmp_path), clock=clock, rulesets=rulesets, plugins=plugins)


def test_a_matching_event_moves_the_stage_inline_dated_by_the_event(on_store, tmp_path, clock):
    engine = make(tmp_path, clock, STAGE_ON_FIRST_ORDER)
    engine.ingest(event("c1", "signup", "2026-11-01"))
    result = engine.ingest(
        event("c1", "purchase", "2026-11-01T12:00:00Z", amount=20, order_id="o1")
    )
    assert (result.enqueued, result.ran_inline) == (1, 1)
    [row] = engine.store.actions_for("c1")
    assert row.key.startswith("test/first-order/c1/")
    assert (row.action, row.status, row.params["stage"]) == ("stage.set", "done", "purchase")
    assert engine.contact("c1").stage == "purchase"  # an internal effect: no dispatch needed
    [_, transition] = engine.store.stage_history("c1")
    assert transition.cause == "rule first-order of ruleset test: first order"
    assert transition.at.startswith("2026-11-01T12:00:00")  # the purchase's time
    assert engine.dispatch().total == 0  # nothing runs twice


def test_a_replayed_event_enqueues_nothing_new(on_store, tmp_path, clock):
    engine = make(tmp_path, clock, STAGE_ON_FIRST_ORDER)
    purchase = event("c1", "purchase", "2026-11-01", amount=20)
    engine.ingest(purchase)
    assert engine.ingest(purchase).enqueued == 0
    assert len(engine.store.actions_for("c1")) == 1


TAG_ON_PURCHASE = rule(
    "vip",
    {"event": "purchase"},
    [{"action": "tag.add", "with": {"tag": "vip"}}],
    limit={"once_per": "contact"},
)


def test_once_per_contact_blocks_later_fires_and_says_when(on_store, tmp_path, clock):
    engine = make(tmp_path, clock, TAG_ON_PURCHASE)
    engine.ingest_many(
        [
            event("c1", "purchase", "2026-11-01", amount=1, order_id="a"),
            event("c1", "purchase", "2026-11-02", amount=1, order_id="b"),
        ]
    )
    assert len(engine.store.actions_for("c1")) == 1
    decisions = [t.decision for t in engine.store.traces("c1")]
    assert sorted(decisions) == ["blocked_by_limit", "fired"]
    blocked = next(t for t in engine.store.traces("c1") if t.decision == "blocked_by_limit")
    assert blocked.detail == "fires once; last fired on 2026-11-01T10:00:00Z"


def test_cooldown_and_once_per_entity(tmp_path, clock):
    engine = make(
        tmp_path,
        clock,
        rule(
            "daily",
            {"event": "page.viewed"},
            [{"action": "score.add", "with": {"score": "x", "points": 1}}],
            limit={"cooldown": {"days": 1}},
        ),
        rule(
            "per-product",
            {"event": "product.registered"},
            [{"action": "tag.add", "with": {"tag": "owner"}}],
            limit={"once_per": "event.properties.product_id"},
        ),
    )
    engine.ingest_many(
        [
            event("c1", "page.viewed", "2026-11-01T08:00:00Z"),
            event("c1", "page.viewed", "2026-11-01T20:00:00Z"),  # within a day: blocked
            event("c1", "page.viewed", "2026-11-02T09:00:00Z"),  # a day later: fires
            event("c1", "product.registered", "2026-11-01", product_id="p1"),
            event("c1", "product.registered", "2026-11-02", product_id="p1"),  # same product
            event("c1", "product.registered", "2026-11-03", product_id="p2"),
        ]
    )
    rules = [row.rule for row in engine.store.actions_for("c1")]
    assert rules.count("daily") == 2 and rules.count("per-product") == 2


def test_priority_orders_the_actions_of_one_occurrence(on_store, tmp_path, clock):
    low = rule(
        "low", {"event": "signup"}, [{"action": "tag.add", "with": {"tag": "low"}}], priority=1
    )
    high = rule(
        "high", {"event": "signup"}, [{"action": "tag.add", "with": {"tag": "high"}}], priority=50
    )
    engine = make(tmp_path, clock, low, high)
    engine.ingest(event("c1", "signup", "2026-11-01"))
    rows = engine.store.actions_for("c1")
    assert [row.rule for row in sorted(rows, key=lambda r: r.seq)] == ["high", "low"]
    tag_events = [e for e in engine.store.recent_events("c1") if e.type == "clm.tag.add"]
    assert [e.properties["tag"] for e in reversed(tag_events)] == ["high", "low"]


def test_stage_change_rules_fire_on_the_transition_an_action_made(on_store, tmp_path, clock):
    welcome_customer = rule(
        "welcome-customer",
        {"stage_changed": {"to": "purchase"}},
        [{"action": "tag.add", "with": {"tag": "customer"}}],
        **{"if": {"fact": "transition.from", "op": "eq", "value": "awareness"}},
    )
    engine = make(tmp_path, clock, STAGE_ON_FIRST_ORDER, welcome_customer)
    result = engine.ingest(event("c1", "purchase", "2026-11-01", amount=5))
    assert result.ran_inline == 2
    assert engine.contact("c1").tags == ["customer"]
    [trace] = engine.store.traces("c1", rule="welcome-customer")
    assert trace.trigger == "stage change awareness -> purchase"


def test_moving_backward_needs_an_explicit_action_with_a_reason(on_store, tmp_path, clock):
    to_retention = rule(
        "retain", {"event": "purchase"}, [{"action": "stage.set", "with": {"stage": "retention"}}]
    )
    back = rule(
        "back",
        {"event": "complaint"},
        [{"action": "stage.set", "with": {"stage": "consideration"}}],
    )
    back_ok = rule(
        "back-ok",
        {"event": "revisit"},
        [
            {
                "action": "stage.set",
                "with": {"stage": "consideration", "backward": True, "reason": "revisited"},
            }
        ],
    )
    engine = make(tmp_path, clock, to_retention, back, back_ok)
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=5))
    engine.ingest(event("c1", "complaint", "2026-11-02"))
    [skipped] = [r for r in engine.store.actions_for("c1") if r.rule == "back"]
    assert "would move backward from 'retention' to 'consideration'" in skipped.note
    assert engine.contact("c1").stage == "retention"
    engine.ingest(event("c1", "revisit", "2026-11-02T11:00:00Z"))
    assert engine.contact("c1").stage == "consideration"
    assert engine.store.stage_history("c1")[-1].cause == "rule back-ok of ruleset test: revisited"


def test_backward_without_a_reason_is_a_validation_error(on_store, tmp_path, clock):
    bad = rule(
        "back",
        {"event": "x"},
        [{"action": "stage.set", "with": {"stage": "awareness", "backward": True}}],
    )
    with pytest.raises(RulesetError, match="reason"):
        make(tmp_path, clock, bad)


class CrmSync:
    """A ``crm.sync`` action that does what ``behaviour(ctx, call_number)`` does; ``calls``
    counts its runs."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.calls = 0

    @hookimpl
    def register_actions(self, register):
        from pydantic import BaseModel, ConfigDict

        class Params(BaseModel):
            model_config = ConfigDict(extra="forbid")

        def run(ctx, params):
            self.calls += 1
            return self.behaviour(ctx, self.calls)

        register("crm.sync", run, Params)


def crm_down(ctx, call):
    raise ConnectionError("CRM is down")


@pytest.fixture
def flaky():
    return CrmSync(crm_down)


def test_a_failing_action_is_retried_with_backoff_then_dead_and_others_still_run(
    flaky, tmp_path, clock
):
    engine = make(
        tmp_path,
        clock,
        rule("sync", {"event": "signup"}, [{"action": "crm.sync"}]),
        rule("tag", {"event": "signup"}, [{"action": "tag.add", "with": {"tag": "new"}}]),
        plugins={"flaky": flaky},
    )
    engine.max_attempts = 3
    engine.ingest(event("c1", "signup", "2026-11-01"))  # both run inline: one fails
    assert engine.contact("c1").tags == ["new"]
    [row] = [r for r in engine.store.actions_for("c1") if r.rule == "sync"]
    assert (row.status, row.attempts) == ("pending", 1)
    assert "attempt 1 failed (ConnectionError: CRM is down)" in row.note
    assert engine.dispatch().total == 0  # backing off: not due yet
    clock.advance(seconds=31)
    assert engine.dispatch().outcomes == {"retried": 1}
    clock.advance(seconds=59)
    assert engine.dispatch().total == 0  # the second wait is twice as long
    clock.advance(seconds=2)
    assert engine.dispatch().outcomes == {"dead": 1}
    [row] = [r for r in engine.store.actions_for("c1") if r.rule == "sync"]
    assert (row.status, row.attempts) == ("dead", 3)
    assert "ConnectionError: CRM is down" in row.note
    assert flaky.calls == 3


def test_an_inline_action_that_fails_with_no_attempt_left_is_dead_at_once(
    on_store, flaky, tmp_path, clock
):
    sync = rule("sync", {"event": "signup"}, [{"action": "crm.sync"}])
    engine = make(tmp_path, clock, sync, plugins={"flaky": flaky})
    engine.max_attempts = 1
    engine.ingest(event("c1", "signup", "2026-11-01"))
    [row] = engine.store.actions_for("c1")
    assert (row.status, row.attempts) == ("dead", 1)
    assert "failed 1 times; last: ConnectionError: CRM is down" in row.note
    clock.advance(days=1)
    assert engine.dispatch().total == 0 and flaky.calls == 1  # not run again


def throttled_once(ctx, call):
    """Told to come back in an hour the first time (an API's 429 with ``Retry-After: 3600``)."""
    if call == 1:
        raise RetryLater.from_header("HTTP 429: slow down", "3600", ctx.now)
    return {"synced": True}


def test_an_action_told_when_to_retry_is_not_retried_before(tmp_path, clock):
    throttled = CrmSync(throttled_once)
    engine = make(
        tmp_path,
        clock,
        rule("sync", {"event": "signup"}, [{"action": "crm.sync"}]),
        plugins={"throttled": throttled},
    )
    engine.ingest(event("c1", "signup", "2026-11-01"))
    [row] = engine.store.actions_for("c1")
    assert (row.status, row.attempts) == ("pending", 1)
    assert "RetryLater: HTTP 429: slow down" in row.note
    clock.advance(seconds=3599)
    assert engine.dispatch().total == 0  # the backoff (30 s) is past, the hour is not
    clock.advance(seconds=1)
    assert engine.dispatch().outcomes == {"done": 1}
    assert throttled.calls == 2


NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", NOW + timedelta(minutes=2)),
        (" 0 ", NOW),
        ("Mon, 02 Nov 2026 13:30:00 GMT", NOW + timedelta(minutes=90)),
        ("Mon, 02 Nov 2026 13:30:00 -0000", NOW + timedelta(minutes=90)),  # parsed naive
        ("Sun, 01 Nov 2026 00:00:00 GMT", NOW),  # past: now
        ("Fri, 31 Dec 9999 23:59:59 GMT", NOW + timedelta(days=1)),  # far: a day at most
        ("9" * 5000, NOW + timedelta(days=1)),  # more digits than int() takes
        ("-5", None),
        ("1.5", None),
        ("١٢٣", None),  # digits, but not ASCII ones
        ("tomorrow", None),
        ("", None),
        (None, None),
        ("\x00\n", None),
    ],
)
def test_retry_after_values_at_their_edges(header, expected):
    assert retry_after_time(header, NOW) == expected


class Policy:
    @hookimpl
    def dispatch_policy(self, action, params, contact, now):
        if params.get("tag") == "spam":
            return Veto("no consent for marketing")
        if params.get("tag") == "later" and now.hour < 20:
            return Defer(now.replace(hour=20, minute=0), "quiet until 20:00")
        return None


def test_policies_veto_and_defer_never_silently(tmp_path, clock):
    engine = make(
        tmp_path,
        clock,
        rule("a", {"event": "signup"}, [{"action": "tag.add", "with": {"tag": "spam"}}]),
        rule("b", {"event": "signup"}, [{"action": "tag.add", "with": {"tag": "later"}}]),
        plugins={"policy": Policy()},
    )
    engine.ingest(event("c1", "signup", "2026-11-02T09:00:00Z"))  # asked inline
    assert engine.dispatch().total == 0
    rows = {r.rule: r for r in engine.store.actions_for("c1")}
    assert (rows["a"].status, rows["a"].note) == ("vetoed", "no consent for marketing")
    assert rows["b"].status == "pending" and "quiet until 20:00" in rows["b"].note
    clock.set(datetime(2026, 11, 2, 20, 0, tzinfo=UTC))
    assert engine.dispatch().outcomes == {"done": 1}
    assert engine.contact("c1").tags == ["later"]


def test_event_emit_chains_and_a_loop_is_cut(on_store, tmp_path, clock):
    ping = rule("ping", {"event": "ping"}, [{"action": "event.emit", "with": {"type": "pong"}}])
    pong = rule("pong", {"event": "pong"}, [{"action": "event.emit", "with": {"type": "ping"}}])
    engine = make(tmp_path, clock, ping, pong)
    result = engine.ingest(event("c1", "ping", "2026-11-01"))
    assert result.ran_inline == 11
    statuses = [r.status for r in engine.store.actions_for("c1")]
    assert statuses.count("done") == 11 and statuses.count("dead") == 1
    [dead] = [r for r in engine.store.actions_for("c1") if r.status == "dead"]
    assert "a loop between rules?" in dead.note


def test_a_late_event_does_not_fire_rules_again_for_old_events(tmp_path, clock):
    engine = make(
        tmp_path,
        clock,
        rule("any-order", {"event": "purchase"}, [{"action": "tag.add", "with": {"tag": "buyer"}}]),
    )
    engine.ingest(event("c1", "purchase", "2026-11-05", amount=1, order_id="late-2"))
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=1, order_id="early-1"))  # late
    assert len(engine.store.actions_for("c1")) == 2


def test_explain_shows_values_limits_and_rules_whose_trigger_never_came(tmp_path, clock):
    engine = make(
        tmp_path,
        clock,
        STAGE_ON_FIRST_ORDER,
        TAG_ON_PURCHASE,
        rule(
            "promoter",
            {"event": "nps.answered"},
            [{"action": "stage.set", "with": {"stage": "advocacy"}}],
        ),
    )
    engine.ingest_many(
        [
            event("c1", "purchase", "2026-11-01", amount=3, order_id="1"),
            event("c1", "purchase", "2026-11-02", amount=3, order_id="2"),
        ]
    )
    engine.dispatch()
    answer = explain(engine, "c1")
    by_rule = {entry["rule"]: entry for entry in answer["rules"]}
    fired = by_rule["first-order"]["decisions"][0]
    assert fired["decision"] == "fired" and fired["version"] == 1
    assert fired["conditions"]["actual"] == 1 and fired["conditions"]["result"] is True
    assert fired["actions"][0]["status"] == "done"
    assert "blocked_by_limit" in [d["decision"] for d in by_rule["vip"]["decisions"]]
    assert by_rule["promoter"]["not_evaluated"].startswith("not evaluated: the trigger never came")


def test_explain_with_trace_all_shows_the_condition_that_failed(on_store, tmp_path, clock):
    big = rule(
        "big-order",
        {"event": "purchase"},
        [{"action": "tag.add", "with": {"tag": "big"}}],
        **{
            "if": {
                "all": [
                    {"fact": "event.properties.amount", "op": "gte", "value": 100},
                    {"fact": "contact.attributes.plan", "op": "eq", "value": "pro"},
                ]
            }
        },
    )
    engine = make(tmp_path, clock, big, trace="all")
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=250))
    [decision] = explain(engine, "c1", rule="big-order")["rules"][0]["decisions"]
    assert decision["decision"] == "no_match"
    amount, plan = decision["conditions"]["all"]
    assert (amount["actual"], amount["result"]) == (250, True)
    assert plan["missing"] is True and plan["result"] is False


def test_check_is_a_dry_run(on_store, tmp_path, clock):
    engine = make(tmp_path, clock, STAGE_ON_FIRST_ORDER)
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=3))
    before = (engine.store.summary(), len(engine.store.actions_for("c1")))
    answer = check(engine, "c1")
    assert answer["rules"][0]["would_fire"] is True
    assert (engine.store.summary(), len(engine.store.actions_for("c1"))) == before


def test_an_invalid_ruleset_never_runs_and_a_bad_reload_keeps_the_last_valid(tmp_path, clock):
    path = ruleset(tmp_path, rules=[STAGE_ON_FIRST_ORDER])
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[path])
    path.write_text(
        json.dumps(
            {
                "ruleset": "test",
                "version": 2,
                "rules": [{**STAGE_ON_FIRST_ORDER, "then": [{"action": "stage.sett"}]}],
            }
        )
    )
    ok, message = engine.reload_rulesets()
    assert not ok and "kept the last valid rulesets" in message and "stage.set" in message
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=3))
    assert [r.rule for r in engine.store.actions_for("c1")] == ["first-order"]
    with pytest.raises(RulesetError):
        Engine(tmp_path / "other.db", clock=clock, rulesets=[path])


def test_every_loaded_version_is_kept_and_decisions_record_theirs(on_store, tmp_path, clock):
    engine = make(tmp_path, clock, STAGE_ON_FIRST_ORDER)
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=3))
    ruleset(tmp_path, rules=[STAGE_ON_FIRST_ORDER], version=2, description="now v2")
    engine.reload_rulesets()
    engine.ingest(event("c2", "purchase", "2026-11-01", amount=3))
    versions = [(v["name"], v["version"]) for v in engine.store.ruleset_versions()]
    assert versions == [("test", 1), ("test", 2)]
    assert [t.version for t in engine.store.traces("c1")] == [1]
    assert [t.version for t in engine.store.traces("c2")] == [2]


class BrokenFact:
    @hookimpl
    def register_facts(self, register):
        def explode(ctx):
            raise RuntimeError("warehouse unreachable")

        register("contact.lifetime_value", explode)


def test_a_failing_plugin_fact_is_traced_as_an_error_and_spares_other_rules(tmp_path, clock):
    engine = make(
        tmp_path,
        clock,
        rule(
            "ltv",
            {"event": "purchase"},
            [{"action": "tag.add", "with": {"tag": "ltv"}}],
            **{"if": {"fact": "contact.lifetime_value", "op": "gt", "value": 100}},
        ),
        rule("plain", {"event": "purchase"}, [{"action": "tag.add", "with": {"tag": "buyer"}}]),
        plugins={"broken-fact": BrokenFact()},
    )
    engine.ingest(event("c1", "purchase", "2026-11-01", amount=3))
    assert [r.rule for r in engine.store.actions_for("c1")] == ["plain"]
    [trace] = engine.store.traces("c1", rule="ltv")
    assert trace.decision == "error" and "warehouse unreachable" in trace.detail


def test_scores_add_up_to_their_cap_and_decay(tmp_path, clock):
    engine = make(
        tmp_path,
        clock,
        rule(
            "opened",
            {"event": "email.opened"},
            [
                {
                    "action": "score.add",
                    "with": {"score": "lead", "points": 10, "cap": 25, "half_life": "P10D"},
                }
            ],
        ),
    )
    engine.ingest_many(
        [
            event("c1", "email.opened", "2026-11-01T10:00:00Z"),
            event("c1", "email.opened", "2026-11-01T10:00:00Z", campaign="b"),
        ]
    )
    engine.dispatch()
    assert engine.contact("c1").scores["lead"] == 20  # effects stamped when due: no decay
    clock.advance(days=20)
    engine.ingest(event("c1", "email.opened", "2026-11-11T10:00:00Z"))  # ten days later
    engine.dispatch()
    assert engine.contact("c1").scores["lead"] == pytest.approx(20 * 0.5 + 10)
    engine.ingest(event("c1", "email.opened", "2026-11-11T11:00:00Z", campaign="c"))
    engine.ingest(event("c1", "email.opened", "2026-11-11T12:00:00Z", campaign="d"))
    engine.dispatch()
    assert engine.contact("c1").scores["lead"] == 25  # capped
    history = [e.type for e in engine.store.recent_events("c1", limit=50)]
    assert history.count("clm.score.add") == 5


def test_check_applies_the_limits_the_engine_applies(on_store, tmp_path, clock):
    per_product = rule(
        "per-product",
        {"event": "product.registered"},
        [{"action": "tag.add", "with": {"tag": "owner"}}],
        limit={"once_per": "event.properties.product_id"},
    )
    daily = rule(
        "daily",
        {"event": "page.viewed"},
        [{"action": "tag.add", "with": {"tag": "v"}}],
        limit={"cooldown": {"days": 1}},
    )
    engine = make(tmp_path, clock, per_product, daily)
    engine.ingest_many(
        [
            event("c1", "product.registered", "2026-11-01", product_id="p1"),
            event("c1", "page.viewed", "2026-10-01"),
        ]
    )
    verdicts = {r["rule"]: r for r in check(engine, "c1")["rules"]}
    assert verdicts["per-product"]["would_fire"] is False
    assert verdicts["per-product"]["why"] == (
        "blocked by limit: fires once for event.properties.product_id p1; "
        "last fired on 2026-11-01T10:00:00Z"
    )
    # Judged on that page view again: a fire at the same moment is within its own cooldown.
    assert verdicts["daily"]["would_fire"] is False
    assert verdicts["daily"]["why"].startswith("blocked by limit: cooldown of 1 day")


@pytest.mark.parametrize(("record_every", "batches"), [(16, 3), (1, 40)])
def test_external_outcomes_are_written_one_transaction_per_batch(
    tmp_path, clock, monkeypatch, record_every, batches
):
    from tests.plugins import notify_plugin

    send = rule("notify", {"event": "signup"}, [{"action": "test.notify"}])
    engine = make(tmp_path, clock, send, plugins=notify_plugin.installed())
    engine.record_every, engine.record_within = record_every, 3600.0  # by count alone here
    engine.ingest_many([event(f"c{n:02d}", "signup", "2026-11-01") for n in range(40)])
    opened = []
    real_write = engine.store.write

    def counted_write(**options):
        opened.append(1)
        return real_write(**options)

    monkeypatch.setattr(engine.store, "write", counted_write)  # the real store, writes counted
    assert engine.dispatch(batch=200).outcomes == {"done": 40}
    assert len(notify_plugin.SENT) == 40
    assert len(opened) == 1 + batches  # the claims' transaction, then one per batch of outcomes
    assert {r.status for c in range(40) for r in engine.store.actions_for(f"c{c:02d}")} == {"done"}


class Announcer:
    """An external action that emits an event, whose reducer fails for one contact."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    @staticmethod
    def announce(ctx, params):
        ctx.emit("note.sent", {"to": ctx.contact.id})
        return {"sent": True}

    @staticmethod
    def count(contact, event):
        if contact.id == "c07":
            raise ValueError("c07's reducer is broken")
        contact.metrics["notes"] = contact.metrics.get("notes", 0) + 1

    @hookimpl
    def register_actions(self, register):
        register("test.announce", self.announce, self.Params, external=True)

    @hookimpl
    def register_reducers(self, register):
        register("note.sent", self.count, name="test.count_notes")


@pytest.mark.parametrize("record_every", [16, 1])
def test_a_batch_of_sends_applies_its_effects_together_and_charges_a_failure_to_its_row(
    on_store, tmp_path, clock, record_every
):
    """Effects of a batch of sends fold in one pass (the first 16 here: c07's fails, so each
    is applied alone; the last 4 together); the failing row alone says so, as one at a time."""
    send = rule("announce", {"event": "signup"}, [{"action": "test.announce"}])
    engine = make(tmp_path, clock, send, plugins={"announcer": Announcer()})
    engine.record_every, engine.record_within = record_every, 3600.0
    engine.ingest_many([event(f"c{n:02d}", "signup", "2026-11-01") for n in range(20)])
    passes = []
    apply_emitted = engine._apply_emitted

    def counted(tx, events, depth, loaded):
        passes.append(len(events))
        return apply_emitted(tx, events, depth, loaded)

    engine._apply_emitted = counted  # the dispatcher applies effects through it
    assert engine.dispatch(batch=200).outcomes == {"done": 20}
    if record_every == 16:  # c00-c15 together (c07's fails), then each alone; c16-c19 together
        assert passes == [16, *[1] * 16, 4]
    else:
        assert passes == [1] * 20
    for n in range(20):
        [row] = engine.store.actions_for(f"c{n:02d}")
        assert row.status == "done"
        notes = engine.contact(f"c{n:02d}").metrics.get("notes")
        if n == 7:
            assert notes is None
            assert "ran, but applying what it emitted failed" in row.note
            assert "c07's reducer is broken" in row.note
        else:
            assert notes == 1, n
            assert not row.note
    sent = [e for n in range(20) for e in engine.store.recent_events(f"c{n:02d}", limit=9)]
    assert sorted(e.contact_id for e in sent if e.type == "note.sent") == [
        f"c{n:02d}" for n in range(20) if n != 7
    ]


def test_a_dispatched_action_reads_its_contact_once_and_takes_one_savepoint(tmp_path, clock):
    """Its effects are folded into the contact the dispatcher read (nothing wrote it since, in
    that transaction), and the row has one savepoint, around the action and its effects."""
    later = rule(
        "later",
        {"event": "email.opened"},
        [{"action": "score.add", "with": {"score": "lead", "points": 1}, "after": {"hours": 1}}],
    )
    engine = make(tmp_path, clock, later)
    engine.ingest_many(
        [event(f"c{n % 5}", "email.opened", f"2026-10-0{1 + n // 5}T10:00:00Z") for n in range(20)]
    )
    statements: list[str] = []
    engine.store.conn.set_trace_callback(statements.append)
    assert engine.dispatch().outcomes == {"done": 20}
    engine.store.conn.set_trace_callback(None)
    assert sum(s.startswith("SELECT id, data FROM contacts") for s in statements) == 20
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 20
    assert engine.contact("c0").scores["lead"] == pytest.approx(4, abs=0.1)
