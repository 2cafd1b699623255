"""Rules on the time axis, driven by a virtual clock: no test sleeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from clm_engine import Engine, VirtualClock, hookimpl
from tests.helpers import event, store_in


def write_rules(tmp_path, *rules, name="timed", version=1):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"ruleset": name, "version": version, "rules": list(rules)}))
    return path


def tag(name):
    return [{"action": "tag.add", "with": {"tag": name}}]


@pytest.fixture
def clock():
    return VirtualClock(datetime(2026, 11, 2, 8, 0, tzinfo=UTC))  # a Monday


def engine_with(tmp_path, clock, *rules, **options):
    return Engine(
        store_in(tmp_path), clock=clock, rulesets=[write_rules(tmp_path, *rules)], **options
    )


DAY3 = {"id": "day-3", "when": {"after": "contact.created_at", "days": 3}, "then": tag("day3")}


def test_a_relative_rule_fires_once_when_its_time_comes(on_store, tmp_path, clock):
    engine = engine_with(tmp_path, clock, DAY3)
    engine.ingest(event("c1", "signup", "2026-11-02T08:00:00Z"))
    clock.advance(days=2, hours=23)
    assert engine.tick().anchors_fired == 0
    clock.advance(hours=1)
    report = engine.tick()
    assert (report.anchors_fired, report.dispatched.outcomes["done"]) == (1, 1)
    assert engine.contact("c1").tags == ["day3"]
    clock.advance(days=30)
    assert engine.tick().anchors_fired == 0  # once per anchor
    [trace] = engine.store.traces("c1")
    assert trace.trigger == "3 days after contact.created_at (2026-11-02)"


RENEWAL = {
    "id": "renewal-reminder",
    "when": {"before": "contact.attributes.renewal_at", "days": 30},
    "then": tag("renewal-soon"),
}


def test_a_moved_date_moves_the_pending_fire_and_a_removed_one_cancels_it(
    on_store, tmp_path, clock
):
    engine = engine_with(tmp_path, clock, RENEWAL)
    engine.ingest(event("c1", "signup", "2026-11-02", renewal_at="2026-12-12"))  # fire 11-12
    engine.ingest(event("c1", "contact.updated", "2026-11-03", renewal_at="2027-01-31"))  # 01-01
    clock.set(datetime(2026, 11, 20, tzinfo=UTC))
    assert engine.tick().anchors_fired == 0
    clock.set(datetime(2027, 1, 1, 1, tzinfo=UTC))
    assert engine.tick().anchors_fired == 1
    engine.ingest(event("c2", "signup", "2026-11-02", renewal_at="2026-12-31"))
    engine.ingest(event("c2", "contact.updated", "2026-11-04", renewal_at=None))
    clock.set(datetime(2027, 2, 1, tzinfo=UTC))
    assert engine.tick().anchors_fired == 0  # cancelled


def test_after_downtime_due_anchors_run_once_or_are_skipped_when_stale(on_store, tmp_path, clock):
    stale = {
        **DAY3,
        "id": "day-3-fresh-only",
        "when": {"after": "contact.created_at", "days": 3, "stale_after": "P1D"},
    }
    engine = engine_with(tmp_path, clock, DAY3, stale)
    engine.ingest(event("c1", "signup", "2026-11-02T08:00:00Z"))
    clock.advance(days=10)  # the engine was down for a week
    report = engine.tick()
    assert (report.anchors_fired, report.anchors_skipped) == (1, 1)
    assert "stale_after" in report.notes[0]
    assert engine.tick().anchors_fired == 0


def test_a_new_relative_rule_gets_anchors_for_existing_contacts(tmp_path, clock):
    path = write_rules(tmp_path, {"id": "noop", "when": {"event": "x"}, "then": tag("x")})
    engine = Engine(tmp_path / "clm.db", clock=clock, rulesets=[path])
    engine.ingest_many([event(f"c{n}", "signup", "2026-11-02T08:00:00Z") for n in range(5)])
    write_rules(tmp_path, DAY3, version=2)
    assert engine.reload_rulesets()[0]
    clock.advance(days=3)
    assert engine.tick().anchors_fired == 5


def test_the_anchor_sweep_reads_only_what_is_due_through_its_index(tmp_path, clock):
    engine = engine_with(tmp_path, clock, DAY3)
    seen: list[str] = []
    engine.store.conn.set_trace_callback(seen.append)  # the SQL the sweep really runs
    engine.store.read().due_anchors("2026-11-02T00:00:00.000000Z", 10)
    engine.store.conn.set_trace_callback(None)
    [query] = [sql for sql in seen if "FROM anchors" in sql]
    plan = engine.store.conn.execute(f"EXPLAIN QUERY PLAN {query}").fetchall()
    details = " ".join(row[-1] for row in plan)
    assert "USING INDEX anchors_due" in details and "SCAN anchors" not in details, details


WEEKLY = {
    "id": "monday-digest",
    "when": {"schedule": "0 9 * * MON"},
    "then": tag("digest"),
    "if": {"fact": "contact.consent.email", "op": "eq", "value": True},
}


def test_a_cron_rule_runs_each_slot_once_over_matching_contacts(tmp_path, clock):
    engine = engine_with(
        tmp_path,
        clock,
        {**WEEKLY, "then": [{"action": "score.add", "with": {"score": "digests", "points": 1}}]},
    )
    engine.ingest_many(
        [
            event("c1", "signup", "2026-11-01", consent={"email": True}),
            event("c2", "signup", "2026-11-01", consent={"email": False}),
        ]
    )
    assert engine.tick().slots_run == 0  # first sight: the schedule's clock starts now (08:00)
    clock.advance(hours=1)  # Monday 09:00
    report = engine.tick()
    assert (report.slots_run, report.contacts_evaluated, report.enqueued) == (1, 2, 1)
    assert engine.tick().slots_run == 0
    clock.advance(weeks=3)  # down for three weeks: one run, two slots coalesced
    report = engine.tick()
    assert (report.slots_run, report.slots_skipped) == (1, 2)
    assert engine.contact("c1").scores == {"digests": 2.0}
    assert "digests" not in engine.contact("c2").scores


def test_a_cron_rule_in_the_contacts_timezones(on_store, tmp_path):
    clock = VirtualClock(datetime(2026, 11, 2, 6, 0, tzinfo=UTC))
    local = {**WEEKLY, "when": {"schedule": "0 9 * * MON", "timezone": "contact"}}
    engine = engine_with(tmp_path, clock, local)
    engine.ingest_many(
        [
            event(
                "paris", "signup", "2026-11-01", timezone="Europe/Paris", consent={"email": True}
            ),
            event(
                "ny", "signup", "2026-11-01", timezone="America/New_York", consent={"email": True}
            ),
        ]
    )
    clock.set(datetime(2026, 11, 2, 7, 0, tzinfo=UTC))
    engine.tick()  # the clocks start
    clock.set(datetime(2026, 11, 2, 8, 1, tzinfo=UTC))  # 09:01 in Paris, 03:01 in New York
    engine.tick()
    assert engine.contact("paris").tags == ["digest"] and engine.contact("ny").tags == []
    clock.set(datetime(2026, 11, 2, 14, 1, tzinfo=UTC))  # 09:01 in New York
    engine.tick()
    assert engine.contact("ny").tags == ["digest"]


def test_a_delayed_action_waits_for_its_time(tmp_path, clock):
    engine = engine_with(
        tmp_path,
        clock,
        {
            "id": "welcome-tips",
            "when": {"event": "signup"},
            "then": [{"action": "tag.add", "with": {"tag": "tips"}, "after": {"days": 2}}],
        },
    )
    engine.ingest(event("c1", "signup", "2026-11-02T08:00:00Z"))
    clock.advance(days=1)
    assert engine.tick().dispatched.total == 0
    clock.advance(days=1)
    assert engine.tick().dispatched.outcomes == {"done": 1}


class Mailer:
    sent: list = []

    @hookimpl
    def register_actions(self, register):
        class Params(BaseModel):
            model_config = ConfigDict(extra="forbid")

        def send(ctx, params):
            Mailer.sent.append(ctx.key)

        register("test.mail", send, Params, external=True)


def test_a_dry_run_records_external_actions_without_running_them(on_store, tmp_path, clock):
    Mailer.sent = []
    rule = {"id": "mail", "when": {"event": "signup"}, "then": [{"action": "test.mail"}]}
    engine = engine_with(tmp_path, clock, rule, dry_run_external=True, plugins={"mailer": Mailer()})
    engine.ingest(event("c1", "signup", "2026-11-02T08:00:00Z"))
    assert engine.tick().dispatched.outcomes == {"simulated": 1}
    assert Mailer.sent == []
    live = Engine(
        tmp_path / "live.db",
        clock=clock,
        rulesets=[tmp_path / "timed.json"],
        plugins={"mailer": Mailer()},
    )
    live.ingest(event("c1", "signup", "2026-11-02T08:00:00Z"))
    live.tick()
    assert len(Mailer.sent) == 1


def test_the_scheduler_is_built_from_the_rulesets_with_stable_ids_and_not_started(tmp_path, clock):
    from clm_engine.scheduling import background, install_jobs

    engine = engine_with(
        tmp_path,
        clock,
        WEEKLY,
        DAY3,
        {**WEEKLY, "id": "local", "when": {"schedule": "0 9 * * *", "timezone": "contact"}},
    )
    scheduler = background(engine, interval=60)
    assert not scheduler.running
    ids = sorted(job.id for job in scheduler.get_jobs())
    assert ids == ["clm:pump", "clm:schedule:timed/monday-digest"]
    scheduler.start(paused=True)  # the host starts it (paused here: no pump runs)
    try:
        for job in scheduler.get_jobs():
            assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, None)
    finally:
        scheduler.shutdown()
    write_rules(tmp_path, DAY3, version=2)  # the cron rule is removed: its job goes
    engine.reload_rulesets()
    assert install_jobs(engine, scheduler, interval=60) == ["clm:pump"]
    assert [job.id for job in scheduler.get_jobs()] == ["clm:pump"]


class Warranties:
    """A plugin that owns an entity with a date: products and their warranty ends."""

    @hookimpl
    def register_reducers(self, register):
        def registered(contact, event):
            products = contact.metrics.setdefault("warranties", {})
            products[event.properties["product_id"]] = event.properties["warranty_ends_at"]

        register("product.registered", registered, name="warranties.registered")

    @hookimpl
    def register_facts(self, register):
        def ends_at(ctx):
            return dict(ctx.contact.metrics.get("warranties", {}))

        def is_premium(ctx):
            return ctx.entity is not None and ctx.entity.startswith("premium")

        register("product.warranty_ends_at", ends_at)
        register("product.is_premium", is_premium)


def test_a_relative_rule_on_a_plugin_entity_fires_once_per_entity(on_store, tmp_path, clock):
    rule = {
        "id": "extension-offer",
        "when": {"before": "product.warranty_ends_at", "days": 30},
        "if": {"fact": "product.is_premium", "op": "eq", "value": True},
        "then": [{"action": "score.add", "with": {"score": "offers", "points": 1}}],
    }
    engine = engine_with(tmp_path, clock, rule, plugins={"warranties": Warranties()})
    engine.ingest_many(
        [
            event(
                "c1",
                "product.registered",
                "2026-11-02",
                product_id="premium-1",
                warranty_ends_at="2026-12-15",
            ),
            event(
                "c1",
                "product.registered",
                "2026-11-02T11:00:00Z",
                product_id="premium-2",
                warranty_ends_at="2027-01-31",
            ),
            event(
                "c1",
                "product.registered",
                "2026-11-02T12:00:00Z",
                product_id="basic-1",
                warranty_ends_at="2026-12-10",
            ),
        ]
    )
    clock.set(datetime(2026, 11, 16, tzinfo=UTC))
    report = engine.tick()
    assert (report.anchors_fired, report.anchors_not_matched) == (1, 1)  # premium-1 only
    clock.set(datetime(2027, 1, 2, tzinfo=UTC))
    assert engine.tick().anchors_fired == 1  # premium-2
    assert engine.tick().anchors_fired == 0
    assert engine.contact("c1").scores == {"offers": 2.0}
    triggers = sorted(t.trigger for t in engine.store.traces("c1"))
    assert triggers[0].startswith("30 days before product.warranty_ends_at (premium-1 ")


class MovingWarranties:
    """Warranty end dates kept in contact metrics, declaring the events that move them."""

    asked = 0

    @hookimpl
    def register_reducers(self, register):
        def registered(contact, event):
            products = contact.metrics.setdefault("warranties", {})
            products[event.properties["product_id"]] = event.properties["warranty_ends_at"]

        register("product.registered", registered, name="moving.registered")

    @hookimpl
    def register_facts(self, register):
        def ends_at(ctx):
            MovingWarranties.asked += 1
            return dict(ctx.contact.metrics.get("warranties", {}))

        register("product.warranty_ends_at", ends_at, type="dates", moved_by=["product.registered"])


def test_anchors_are_recomputed_only_after_an_event_that_can_move_their_date(
    on_store, tmp_path, clock
):
    MovingWarranties.asked = 0
    rule = {
        "id": "warranty-ending",
        "when": {"before": "product.warranty_ends_at", "days": 30},
        "then": tag("ending"),
    }
    engine = engine_with(tmp_path, clock, rule, plugins={"moving": MovingWarranties()})
    engine.ingest_many([event("c1", "signup", "2026-11-02"), event("c2", "signup", "2026-11-02")])
    assert MovingWarranties.asked == 0  # no event of theirs can move a warranty date
    engine.ingest(
        event(
            "c1",
            "product.registered",
            "2026-11-02T09:00:00Z",
            product_id="p1",
            warranty_ends_at="2026-12-31",
        )
    )
    assert MovingWarranties.asked == 1  # c1's, once
    for n in range(5):
        engine.ingest(event("c1", "page.viewed", f"2026-11-02T10:0{n}:00Z"))
    assert MovingWarranties.asked == 1  # page views never move it: the anchor stays
    clock.set(datetime(2026, 12, 1, 1, tzinfo=UTC))
    assert engine.tick().anchors_fired == 1
    assert engine.contact("c1").tags == ["ending"]


def test_explain_says_when_a_relative_rule_will_fire(on_store, tmp_path, clock):
    from clm_engine.explain import explain

    engine = engine_with(tmp_path, clock, RENEWAL)
    engine.ingest(event("c1", "signup", "2026-11-02", renewal_at="2026-12-31"))
    [entry] = explain(engine, "c1")["rules"]
    assert entry["not_evaluated"] == (
        "fires at 2026-12-01T00:00Z (contact.attributes.renewal_at is 2026-12-31)"
    )
    engine.ingest(event("c2", "signup", "2026-11-02"))
    [entry] = explain(engine, "c2")["rules"]
    assert (
        entry["not_evaluated"] == "not scheduled: the contact has no contact.attributes.renewal_at"
    )


class Flaky:
    @hookimpl
    def register_facts(self, register):
        def explode(ctx):
            raise RuntimeError("warehouse unreachable")

        register("contact.lifetime_value", explode)


def test_a_failing_fact_in_a_timed_rule_is_traced_and_never_blocks_the_sweep(
    on_store, tmp_path, clock
):
    broken = {
        **DAY3,
        "id": "ltv-check",
        "if": {"fact": "contact.lifetime_value", "op": "gt", "value": 1},
    }
    engine = engine_with(tmp_path, clock, broken, DAY3, plugins={"flaky-fact": Flaky()})
    engine.ingest(event("c1", "signup", "2026-11-02T08:00:00Z"))
    clock.advance(days=3)
    report = engine.tick()
    assert report.anchors_fired == 1  # day-3 still fired
    [trace] = engine.store.traces("c1", rule="ltv-check")
    assert trace.decision == "error" and "warehouse unreachable" in trace.detail
    assert engine.tick().anchors_fired == 0  # nothing stuck, nothing repeated


def test_a_failing_anchor_fact_never_takes_the_batch_down(tmp_path, clock):
    counting = {"id": "ltv", "when": {"after": "contact.lifetime_value", "days": 1}}
    engine = engine_with(
        tmp_path, clock, {**counting, "then": tag("x")}, DAY3, plugins={"flaky-fact": Flaky()}
    )
    result = engine.ingest_many(
        [event("c1", "signup", "2026-11-02T08:00:00Z"), event("c2", "signup", "2026-11-02")]
    )
    assert (result.ingested, result.failed) == (2, [])
    clock.advance(days=4)
    assert engine.tick().anchors_fired == 2  # the other rule's anchors were kept


def test_an_idle_tick_only_reads_so_it_never_waits_for_another_writer(tmp_path, clock):
    import sqlite3

    from clm_engine.store.sqlite import SQLiteStore

    write_rules(tmp_path, DAY3, WEEKLY)
    store = SQLiteStore(tmp_path / "clm.db", busy_timeout=0.2)
    engine = Engine(store, clock=clock, rulesets=[tmp_path / "timed.json"])
    engine.ingest(event("c1", "signup", "2026-11-02T08:00:00Z"))
    engine.tick()  # starts the schedule's clock
    other = sqlite3.connect(tmp_path / "clm.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        report = engine.tick()  # nothing due: must not need the write lock
        assert report.dispatched.total == 0 and report.anchors_fired == 0
    finally:
        other.execute("ROLLBACK")
        other.close()


class EveryEventWarranties(MovingWarranties):
    """The same fact, declaring nothing: its anchors are recomputed after every event."""

    @hookimpl
    def register_facts(self, register):
        register(
            "product.warranty_ends_at",
            lambda ctx: dict(ctx.contact.metrics.get("warranties", {})),
            type="dates",
        )


_steps = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2"]),
        st.sampled_from(["page.viewed", "product.registered"]),
        st.integers(0, 3),
        st.sampled_from(["2026-12-10", "2027-01-20", "2027-03-01"]),
    ),
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_steps, cuts=st.integers(1, 5))
def test_declaring_what_moves_a_date_changes_no_anchor(tmp_path_factory, steps, cuts):
    """Same events, same anchors (and fires), whether the fact says what moves it or not."""
    rule = {
        "id": "warranty-ending",
        "when": {"before": "product.warranty_ends_at", "days": 30},
        "then": tag("ending"),
    }
    events = [
        event(
            who,
            kind,
            f"2026-11-02T{9 + n:02d}:0{len_}:00Z",
            product_id=f"p{n}",
            warranty_ends_at=ends,
        )
        for len_, (who, kind, n, ends) in enumerate(steps[:10])
    ]
    seen = []
    for plugin in (MovingWarranties(), EveryEventWarranties()):
        folder = tmp_path_factory.mktemp("moved")
        clock = VirtualClock(datetime(2026, 11, 2, 8, 0, tzinfo=UTC))
        with engine_with(folder, clock, rule, plugins={"warranties": plugin}) as engine:
            for at in range(0, len(events), cuts):
                engine.ingest_many(events[at : at + cuts])
            anchors = engine.store.read().anchors_for(["c1", "c2"])
            clock.set(datetime(2027, 3, 1, tzinfo=UTC))
            fired = engine.tick().anchors_fired
            seen.append((anchors, fired))
    assert seen[0] == seen[1]
