"""The programme end to end through the engine, on SQLite and PostgreSQL: earn rules, the
ledger, refusals, FIFO expiry, tiers up and down, milestones, exactly once under replays."""

from __future__ import annotations

from datetime import UTC, datetime

import loyalty_testing
from clm_loyalty import ledger

from clm_engine.testing import make_event

# The shared fixtures this module uses (loyalty_testing.py says why not a conftest.py).
clock = loyalty_testing.clock
open_engine = loyalty_testing.open_engine
rules = loyalty_testing.rules
rules_with = loyalty_testing.rules_with


def buy(engine, contact, amount, at, **extra):
    props = {"amount": amount, "currency": "USD"}
    return engine.ingest(make_event("purchase", props, contact_id=contact, at=at, **extra))


def claim(engine, contact, points, at, **extra):
    return engine.ingest(
        make_event("reward.claimed", {"points": points}, contact_id=contact, at=at, **extra)
    )


def book(engine, contact="ada"):
    return ledger.book_of(engine.store.tables, contact, "points")


def entries(engine, contact="ada"):
    return ledger.entries(engine.store.tables, contact, "points")


def kinds(engine, contact="ada"):
    return [(r["kind"], r["points"]) for r in entries(engine, contact)]


def actions(engine, contact, rule, action=None):
    return [
        row
        for row in engine.store.actions_for(contact, rule=rule)
        if action is None or row.action == action
    ]


def events_of(engine, contact, type_):
    found = [e for e in engine.store.recent_events(contact, limit=10_000) if e.type == type_]
    return sorted(found, key=lambda e: e.occurred_at)


def test_points_per_dollar_rounded_down_and_exactly_once_under_replays(open_engine):
    with open_engine() as engine:
        buy(engine, "ada", 129.99, "2026-01-05T10:00:00Z", id="o1")
        buy(engine, "ada", 20.5, "2026-01-06T10:00:00Z", id="o2")
        buy(engine, "ada", 0.99, "2026-01-07T10:00:00Z", id="o3")  # under 1.00: nothing
        # Redelivered events, alone and in a batch: no new decision, no new entry.
        buy(engine, "ada", 129.99, "2026-01-05T10:00:00Z", id="o1")
        engine.ingest_many(
            [
                make_event(
                    "purchase",
                    {"amount": 20.5, "currency": "USD"},
                    contact_id="ada",
                    at="2026-01-06T10:00:00Z",
                    id="o2",
                )
            ]
        )
        rows = entries(engine)
        assert [(r["kind"], r["points"], r["event_id"]) for r in rows] == [
            ("earn", 129, "o1"),
            ("earn", 20, "o2"),
        ]
        assert book(engine).balance == 149
        assert rows[0]["expires_at"].startswith("2027-01-05T10:00:00")  # a year later
        [small] = actions(engine, "ada", "earn", "loyalty.earn")[-1:]
        assert small.status == "skipped" and "less than 1.00 USD" in small.note


def test_an_order_in_another_currency_earns_nothing_and_says_why(open_engine):
    with open_engine() as engine:
        engine.ingest(
            make_event(
                "purchase",
                {"amount": 50, "currency": "EUR"},
                contact_id="ada",
                at="2026-01-05T10:00:00Z",
            )
        )
        assert entries(engine) == []
        [row] = actions(engine, "ada", "earn")
        assert row.status == "skipped"
        assert row.note == "the event's amount is in 'EUR'; this rule earns on USD"


def test_a_redemption_beyond_the_balance_is_refused_not_clipped(open_engine):
    with open_engine() as engine:
        buy(engine, "ada", 300, "2026-01-05T10:00:00Z")
        claim(engine, "ada", 500, "2026-01-06T10:00:00Z", id="r1")
        assert book(engine).balance == 300
        assert kinds(engine) == [("earn", 300)]
        [refused] = actions(engine, "ada", "redeem")
        assert refused.status == "skipped"
        assert refused.note == "refused: 500 points asked, the balance is 300"
        [event] = events_of(engine, "ada", "loyalty.redeem_refused")
        assert event.properties == {
            "programme": "points",
            "points": 500,
            "balance": 300,
            "reason": "redemption",
        }
        claim(engine, "ada", 250, "2026-01-07T10:00:00Z", id="r2")
        assert kinds(engine) == [("earn", 300), ("redeem", -250)]
        [done] = events_of(engine, "ada", "loyalty.redeemed")
        assert done.properties["balance"] == 50
        # A goodwill take-back beyond the balance is refused the same way.
        engine.ingest(
            make_event(
                "support.goodwill", {"points": -51}, contact_id="ada", at="2026-01-08T10:00:00Z"
            )
        )
        assert book(engine).balance == 50
        assert events_of(engine, "ada", "loyalty.adjust_refused")


def test_lots_expire_first_in_first_out_when_their_time_comes(open_engine, clock):
    with open_engine() as engine:
        buy(engine, "ada", 100, "2026-01-05T10:00:00Z", id="o1")  # lot A: 100
        buy(engine, "ada", 80, "2026-03-05T10:00:00Z", id="o2")  # lot B: 80
        claim(engine, "ada", 130, "2026-04-01T10:00:00Z")  # A's 100 then 30 of B
        clock.set(datetime(2027, 1, 6, tzinfo=UTC))  # A's expiry: nothing left of it
        engine.dispatch()
        assert kinds(engine) == [("earn", 100), ("earn", 80), ("redeem", -130)]
        expire_a = [
            r for r in actions(engine, "ada", "earn", "loyalty.expire") if r.status != "pending"
        ]
        assert [r.status for r in expire_a] == ["skipped"]
        clock.set(datetime(2027, 3, 6, tzinfo=UTC))  # B's: its 50 left expire
        engine.dispatch()
        assert kinds(engine)[-1] == ("expire", -50)
        assert entries(engine)[-1]["at"].startswith("2027-03-05T10:00:00")
        assert book(engine).balance == 0
        [gone] = events_of(engine, "ada", "loyalty.points_expired")
        assert gone.properties["points"] == 50
        engine.dispatch()  # nothing again
        assert len(entries(engine)) == 4


def test_expired_points_cannot_be_spent_even_before_the_expiry_is_dispatched(open_engine):
    with open_engine() as engine:
        buy(engine, "ada", 100, "2026-01-05T10:00:00Z")
        buy(engine, "ada", 40, "2026-12-01T10:00:00Z")
        # A history loaded in one go: the claim comes after lot 1's expiry in event time.
        claim(engine, "ada", 120, "2027-02-01T10:00:00Z", id="late-claim")
        assert kinds(engine) == [("earn", 100), ("earn", 40), ("expire", -100)]
        assert book(engine).balance == 40
        claim(engine, "ada", 40, "2027-02-02T10:00:00Z")
        assert book(engine).balance == 0


def test_tiers_go_up_at_once_and_down_after_the_hold_one_step_at_a_time(open_engine, clock):
    with open_engine() as engine:
        buy(engine, "ada", 600, "2026-01-05T10:00:00Z")
        buy(engine, "ada", 450, "2026-02-05T10:00:00Z")  # 1,050 qualifying: gold
        changes = engine.store.tables["loyalty_tiers"].rows(order_by=["seq"])
        assert [(c["previous"], c["tier"], c["direction"]) for c in changes] == [
            ("member", "silver", "up"),
            ("silver", "gold", "up"),
        ]
        assert "gold" in engine.contact("ada").tags  # a rule on loyalty.tier_changed
        # Both earns leave the window, but gold is held a year from 2026-02-05.
        clock.set(datetime(2027, 1, 10, tzinfo=UTC))
        engine.dispatch()
        assert len(engine.store.tables["loyalty_tiers"].rows()) == 2
        clock.set(datetime(2027, 2, 10, tzinfo=UTC))
        engine.dispatch()  # the hold ended: one step down (steps: 1), to silver
        changes = engine.store.tables["loyalty_tiers"].rows(order_by=["seq"])
        assert [(c["tier"], c["direction"]) for c in changes][2:] == [("silver", "down")]
        assert changes[2]["at"].startswith("2027-02-05T10:00:00")
        clock.set(datetime(2028, 2, 10, tzinfo=UTC))
        engine.dispatch()  # a year on silver without points: member
        changes = engine.store.tables["loyalty_tiers"].rows(order_by=["seq"])
        assert [c["tier"] for c in changes] == ["silver", "gold", "silver", "member"]
        downs = [
            e.properties["to"]
            for e in events_of(engine, "ada", "loyalty.tier_changed")
            if e.properties["direction"] == "down"
        ]
        assert downs == ["silver", "member"]


def test_milestones_are_events_rules_trigger_on_once_ever(open_engine):
    with open_engine() as engine:
        for n in range(5):
            buy(engine, "ada", 300, f"2026-01-0{n + 1}T10:00:00Z", id=f"o{n}")
        reached = [e.properties["milestone"] for e in events_of(engine, "ada", "loyalty.milestone")]
        assert reached == ["first-order", "3rd-order", "1k-points"]
        assert engine.contact("ada").tags == ["gold", "regular"]
        rows = engine.store.tables["loyalty_milestones"].rows(order_by=["at"])
        assert [r["milestone"] for r in rows] == ["first-order", "3rd-order", "1k-points"]


def test_facts_read_the_ledger_as_of_the_moment_judged(open_engine, rules_with):
    rules = [
        {
            "id": "vip-offer",
            "when": {"event": "page.viewed"},
            "if": {
                "all": [
                    {"fact": "contact.loyalty.balance", "op": "gte", "value": 100},
                    {"fact": "contact.loyalty.tier", "op": "eq", "value": "silver"},
                    {"fact": "contact.loyalty.lifetime_points", "op": "eq", "value": 600},
                    {"fact": "contact.loyalty.qualifying_points", "op": "eq", "value": 600},
                    {
                        "fact": "contact.loyalty.points_expiring",
                        "args": {"days": 400},
                        "op": "eq",
                        "value": 500,
                    },
                ]
            },
            "then": [{"action": "tag.add", "with": {"tag": "vip-offer"}}],
        },
    ]
    with open_engine(rules_with(rules)) as engine:
        buy(engine, "ada", 600, "2026-01-05T10:00:00Z")
        claim(engine, "ada", 100, "2026-01-06T10:00:00Z")
        engine.ingest(make_event("page.viewed", {}, contact_id="ada", at="2026-01-07T10:00:00Z"))
        assert "vip-offer" in engine.contact("ada").tags
