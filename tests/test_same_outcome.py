"""Same history, same outcome: how a history is delivered must not change what it decides.

Batch size, arrival order and late events: the contact's state, its stage history (with the
time of each change), the outbox and the traces are a function of its event history. The
scenarios come from what lifecycle teams do, and run on both stores (``new_store``); the
properties generate histories and hold every delivery of them to the same outcome, and the
PostgreSQL store to what the SQLite store decides.
"""

from __future__ import annotations

import itertools
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm_engine import Engine, VirtualClock, hookimpl
from clm_engine.types import Defer
from tests.helpers import event

ROOT = Path(__file__).resolve().parent.parent
#: The core's example rulesets whose rules all react to events: stages and a lead score.
RULESETS = [ROOT / "rulesets" / "lifecycle-stages.json", ROOT / "rulesets" / "lead-scoring.json"]
CLOCK_START = datetime(2027, 6, 1, tzinfo=UTC)


def open_engine(path: Path | str) -> Engine:
    return Engine(path, clock=VirtualClock(CLOCK_START), rulesets=RULESETS)


def outcome(engine: Engine, contact_ids, *, live_only: bool = False) -> dict:
    """Everything a delivery could change, for comparison."""
    found = {}
    for contact_id in sorted(contact_ids):
        contact = engine.contact(contact_id)
        rows = engine.store.actions_for(contact_id)
        if live_only:  # decisions a corrected history no longer implies are retracted
            rows = [r for r in rows if r.status != "retracted"]
        found[contact_id] = {
            "state": contact.model_dump(mode="json", exclude={"updated_at"}) if contact else None,
            "stages": [
                (t.from_stage, t.to_stage, t.at, t.cause)
                for t in engine.store.stage_history(contact_id)
            ],
            "actions": sorted((r.key, r.status, repr(r.result)) for r in rows),
            "decisions": sorted(
                (t.ruleset, t.rule, t.occurrence, t.decision, t.at)
                for t in engine.store.traces(contact_id, limit=10_000)
                if not live_only or t.decision not in ("no_match", "retracted")
            ),
        }
    return found


def deliver(path: Path | str, batches) -> dict:
    with open_engine(path) as engine:
        for batch in batches:
            engine.ingest_many(batch)
            engine.dispatch()  # as `clm ingest --dispatch` does after each batch
        ids = {e["contact_id"] for batch in batches for e in batch}
        return outcome(engine, ids, live_only=True), outcome(engine, ids)


# -- scenarios ---------------------------------------------------------------------------------


def test_a_customer_who_revisits_pricing_after_months_is_judged_event_by_event(new_store):
    """The lifecycle guides' case: signup, two orders, a pricing visit five months later."""
    history = [
        event("c1", "signup", "2026-01-05"),
        event("c1", "purchase", "2026-01-10", amount=40),
        event("c1", "purchase", "2026-02-01", amount=25),
        event("c1", "page.viewed", "2026-07-15", path="/pricing"),
    ]
    one_batch, _ = deliver(new_store("one.db"), [history])
    one_by_one, _ = deliver(new_store("each.db"), [[e] for e in history])
    assert one_batch == one_by_one
    stages = one_batch["c1"]["stages"]
    assert [(to, at[:10]) for _, to, at, _ in stages] == [
        ("awareness", "2026-01-05"),
        ("purchase", "2026-01-10"),  # dated by the order that caused it
        ("retention", "2026-02-01"),
        ("consideration", "2026-07-15"),
    ]
    assert one_batch["c1"]["state"]["stage"] == "consideration"


def test_orders_delivered_out_of_order_still_make_a_retained_customer(new_store):
    """A CRM posting webhooks concurrently: the third order arrives first."""
    orders = [
        {**event("c1", "purchase", f"2026-03-0{n}", amount=10), "id": f"o{n}"} for n in (1, 2, 3)
    ]
    in_order, _ = deliver(new_store("in.db"), [[o] for o in orders])
    shuffled, everything = deliver(new_store("out.db"), [[orders[2]], [orders[0]], [orders[1]]])
    assert shuffled == in_order
    assert shuffled["c1"]["state"]["stage"] == "retention"
    # What the third order decided when it came first (first-order), then second (second-
    # order, once the first order came), the full history no longer implies: retracted.
    retracted = [a for a in everything["c1"]["actions"] if a[1] == "retracted"]
    assert sorted(key.split("/")[1] for key, _, _ in retracted) == ["first-order", "second-order"]
    said = [d for d in everything["c1"]["decisions"] if d[3] == "retracted"]  # for clm explain
    assert sorted((rule, occurrence) for _, rule, occurrence, _, _ in said) == [
        ("first-order", "o3"),
        ("second-order", "o3"),
    ]


def test_a_late_event_keeps_what_was_sent_and_skips_a_stale_email(new_store, tmp_path):
    """Decisions already taken stay taken; a late decision's email for an old occurrence is
    skipped with its reason, not sent."""
    rules = tmp_path / "notify.json"
    rules.write_text(
        """{"ruleset": "notify", "version": 1, "rules": [
          {"id": "thanks", "when": {"event": "purchase"},
           "if": {"fact": "contact.metrics.orders_count", "op": "eq", "value": 1},
           "then": [{"action": "test.notify"}]}]}"""
    )
    from tests.plugins import notify_plugin

    clock = VirtualClock(datetime(2026, 9, 1, tzinfo=UTC))
    with Engine(
        new_store("clm.db"), clock=clock, rulesets=[rules], plugins=notify_plugin.installed()
    ) as engine:
        engine.ingest({**event("c1", "purchase", "2026-08-30", amount=5), "id": "o2"})
        assert engine.dispatch().outcomes == {"done": 1}  # thanks for "the first order"
        engine.ingest({**event("c1", "purchase", "2026-03-01", amount=5), "id": "o1"})  # late
        report = engine.dispatch()
        assert report.outcomes == {"skipped": 1}
        rows = {r.key.split("/")[3]: r for r in engine.store.actions_for("c1")}
        assert rows["o2"].status == "done"  # taken when it came: stays taken, sent once
        assert rows["o1"].late and "late_action_limit" in rows["o1"].note
        assert len(notify_plugin.SENT) == 1


# -- properties --------------------------------------------------------------------------------

START = datetime(2026, 1, 1, tzinfo=UTC)
KINDS = st.sampled_from(
    [
        ("purchase", {"amount": 20}),
        ("purchase", {"amount": 5.5}),
        ("page.viewed", {"path": "/pricing"}),
        ("page.viewed", {"path": "/products/x"}),
        ("page.viewed", {"path": "/blog"}),
        ("email.clicked", {}),
        ("email.opened", {}),
        ("nps.answered", {"score": 10}),
        ("nps.answered", {"score": 3}),
        ("referral.sent", {}),
        ("unsubscribed", {}),
    ]
)


@st.composite
def histories(draw):
    """A few contacts, each a signup then events at distinct times over about ten months."""
    events = []
    for contact in ("c1", "c2", "c3")[: draw(st.integers(1, 3))]:
        hours = draw(st.lists(st.integers(0, 300 * 24), min_size=2, max_size=9, unique=True))
        hours.sort()
        events.append(_event(contact, "signup", {}, hours[0]))
        for hour in hours[1:]:
            kind, properties = draw(KINDS)
            events.append(_event(contact, kind, properties, hour))
    return events


def _event(contact: str, kind: str, properties: dict, hour: int) -> dict:
    at = START + timedelta(hours=hour)
    return {
        "id": f"{contact}-{hour}",
        "contact_id": contact,
        "type": kind,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "properties": properties,
    }


def split(events, cuts):
    edges = sorted({c % (len(events) + 1) for c in cuts} | {0, len(events)})
    return [events[a:b] for a, b in itertools.pairwise(edges) if events[a:b]]


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(history=histories(), cuts=st.lists(st.integers(0, 60), max_size=5))
def test_every_split_into_batches_gives_the_same_outcome(history, cuts):
    with tempfile.TemporaryDirectory() as folder:
        _, whole = deliver(Path(folder) / "one.db", [history])
        _, each_whole = deliver(Path(folder) / "each.db", [[e] for e in history])
        _, some_whole = deliver(Path(folder) / "some.db", split(history, cuts))
    assert whole == each_whole == some_whole  # everything, traces and outbox included


@PROPERTY
@given(history=histories(), data=st.data())
def test_every_arrival_order_gives_the_same_state_and_decisions(history, data):
    arrival = data.draw(st.permutations(history))
    cuts = data.draw(st.lists(st.integers(0, 60), max_size=5))
    with tempfile.TemporaryDirectory() as folder:
        in_order, _ = deliver(Path(folder) / "in.db", [history])
        shuffled, _ = deliver(Path(folder) / "out.db", split(arrival, cuts))
    assert shuffled == in_order


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), data=st.data())
def test_postgresql_decides_as_sqlite_does_for_every_delivery(postgres_cluster, history, data):
    """The stores are interchangeable: the same batches give the same everything (state,
    stages, outbox with results, every trace) on SQLite and PostgreSQL, and any arrival order
    on PostgreSQL gives what one batch in order gives on SQLite."""
    arrival = data.draw(st.permutations(history))
    cuts = data.draw(st.lists(st.integers(0, 60), max_size=5))
    batches = split(arrival, cuts)
    with tempfile.TemporaryDirectory() as folder:
        _, sqlite_all = deliver(Path(folder) / "same.db", batches)
        in_order, _ = deliver(Path(folder) / "in.db", [history])
    with postgres_cluster.database() as url:
        postgres_live, postgres_all = deliver(url, batches)
    assert postgres_all == sqlite_all
    assert postgres_live == in_order


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), cuts=st.lists(st.integers(0, 60), max_size=3))
def test_a_backtest_and_a_live_ingest_agree(history, cuts):
    """`clm simulate` (a virtual clock stepping through the history) and `clm ingest
    --dispatch` (batches, the real clock) decide the same for the same history."""
    from clm_engine.simulation import simulate

    with tempfile.TemporaryDirectory() as folder:
        live, _ = deliver(Path(folder) / "live.db", split(history, cuts))
        kept = Path(folder) / "kept"
        simulate(
            RULESETS,
            history,
            start=START,
            end=START + timedelta(days=320),
            step=timedelta(days=1),
            keep=kept,
        )
        with open_engine(kept / "simulation.db") as engine:
            backtest = outcome(engine, {e["contact_id"] for e in history}, live_only=True)
    assert backtest == live


class _QuietMornings:
    """Defers a tag the first time it is asked about, until 20:00: a second ask (a
    re-judgement running the decision again) would let it through at once."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    @hookimpl
    def dispatch_policy(self, action, now, key):
        if action == "tag.add" and key not in self.asked:
            self.asked.add(key)
            return Defer(now.replace(hour=20, minute=0), "quiet until 20:00")
        return None


def test_a_deferred_decision_stays_one_decision_through_a_late_event(new_store, tmp_path):
    rules = tmp_path / "later.json"
    rules.write_text(
        """{"ruleset": "later", "version": 1, "rules": [
          {"id": "tag", "when": {"event": "signup"},
           "then": [{"action": "tag.add", "with": {"tag": "later"}}]}]}"""
    )
    clock = VirtualClock(datetime(2026, 11, 2, 12, tzinfo=UTC))
    with Engine(
        new_store("clm.db"), clock=clock, rulesets=[rules], plugins={"quiet": _QuietMornings()}
    ) as engine:
        engine.ingest(event("c1", "signup", "2026-11-02T09:00:00Z"))
        engine.ingest(event("c1", "page.viewed", "2026-11-01T09:00:00Z"))  # late: re-judges
        [row] = engine.store.actions_for("c1")
        assert (row.status, row.due_at[:16]) == ("pending", "2026-11-02T20:00")
        assert engine.contact("c1").tags == []  # deferred: not run by the re-judgement
        clock.set(datetime(2026, 11, 2, 20, tzinfo=UTC))
        assert engine.dispatch().outcomes == {"done": 1}
        assert engine.contact("c1").tags == ["later"]
        assert [t.decision for t in engine.store.traces("c1", rule="tag")] == ["fired"]


def test_a_late_event_that_fails_leaves_the_limits_as_they_were(new_store, tmp_path):
    rules = tmp_path / "once.json"
    rules.write_text(
        """{"ruleset": "once", "version": 1, "rules": [
          {"id": "first-visit", "when": {"event": "page.viewed"},
           "then": [{"action": "tag.add", "with": {"tag": "visited"}}],
           "limit": {"once_per": "contact"}}]}"""
    )
    with Engine(new_store("clm.db"), clock=VirtualClock(CLOCK_START), rulesets=[rules]) as engine:
        engine.ingest(event("c1", "page.viewed", "2026-03-02"))
        result = engine.ingest_many([event("c1", "purchase", "2026-03-01")])  # no amount: fails
        assert len(result.failed) == 1
        engine.ingest(event("c1", "page.viewed", "2026-03-03"))
        decisions = [t.decision for t in engine.store.traces("c1", rule="first-visit")]
        assert sorted(decisions) == ["blocked_by_limit", "fired"]  # once, as before the failure


def test_a_re_judgement_counts_events_in_their_window_as_of_each_event(new_store):
    """Three pricing visits, but never three within a week: no move to consideration, in
    order or with two of them arriving late (a re-judgement counts the history as it was)."""
    visits = [
        {**event("c1", "page.viewed", day, path="/pricing"), "id": f"v{n}"}
        for n, day in enumerate(["2026-03-01", "2026-03-20", "2026-03-21"])
    ]
    in_order, _ = deliver(new_store("in.db"), [[v] for v in visits])
    late, _ = deliver(new_store("late.db"), [[visits[2]], [visits[0]], [visits[1]]])
    assert late == in_order
    assert in_order["c1"]["state"]["stage"] == "awareness"
