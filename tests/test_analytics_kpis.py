"""The KPIs of ``clm report`` on a small history whose answers were worked out by hand
(``docs/metrics.md`` defines each figure; the working is in the comments)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from clm_engine import Engine, VirtualClock
from clm_engine.analytics.figures import kpis
from clm_engine.store.analytics_dialect import analytics_db

from .helpers import event, store_in

NOW = datetime(2026, 4, 1, tzinfo=UTC)

STAGES = {
    "ruleset": "stages",
    "version": 1,
    "rules": [
        {
            "id": "signed-up",
            "when": {"event": "signup"},
            "then": [{"action": "stage.set", "with": {"stage": "awareness"}}],
        },
        {
            "id": "looking",
            "when": {"event": "page.viewed"},
            "if": {"fact": "contact.stage", "op": "eq", "value": "awareness"},
            "then": [{"action": "stage.set", "with": {"stage": "consideration"}}],
        },
        {
            "id": "first-order",
            "when": {"event": "purchase"},
            "if": {"fact": "contact.metrics.orders_count", "op": "eq", "value": 1},
            "then": [{"action": "stage.set", "with": {"stage": "purchase"}}],
        },
        {
            "id": "repeat-order",
            "when": {"event": "purchase"},
            "if": {"fact": "contact.metrics.orders_count", "op": "gte", "value": 2},
            "then": [{"action": "stage.set", "with": {"stage": "retention"}}],
        },
        {
            "id": "unhappy-customer",
            "when": {
                "event": "nps.answered",
                "where": {"fact": "event.properties.score", "op": "lte", "value": 6},
            },
            "if": {"fact": "contact.stage", "op": "eq", "value": "retention"},
            "then": [
                {
                    "action": "stage.set",
                    "with": {"stage": "consideration", "backward": True, "reason": "detractor"},
                }
            ],
        },
    ],
}

HISTORY = [
    # a: signed up from ads, browsed, bought twice, promoter, active again in March.
    event("a", "signup", "2026-01-05", channel="ads"),
    event("a", "page.viewed", "2026-01-07"),
    event("a", "purchase", "2026-01-10", amount=100),
    event("a", "purchase", "2026-02-15", amount=50),
    event("a", "nps.answered", "2026-02-20", score=10),
    event("a", "page.viewed", "2026-03-03"),
    event("a", "csat.answered", "2026-03-10", score=5),
    # b: from ads, detractor then passive in February (the latest counts), bought in March.
    event("b", "signup", "2026-01-20", channel="ads"),
    event("b", "nps.answered", "2026-02-10", score=5),
    event("b", "nps.answered", "2026-02-25", score=8),
    event("b", "purchase", "2026-03-01", amount=30),
    event("b", "csat.answered", "2026-03-11", score=2),
    # c: from seo, referred, promoter in March, unsubscribed from the welcome email.
    event("c", "signup", "2026-02-03", channel="seo"),
    event("c", "referral.signup", "2026-02-03", referrer_id="a"),
    event("c", "nps.answered", "2026-03-05", score=9),
    # d: signed up, browsed once, gone.
    event("d", "signup", "2026-02-10"),
    event("d", "page.viewed", "2026-02-11"),
    # e and f: customers from before, without a signup.
    event("e", "purchase", "2025-03-01", amount=40),
    event("e", "purchase", "2025-06-01", amount=80),
    event("e", "nps.answered", "2025-07-01", score=3),
    event("f", "purchase", "2025-01-15", amount=20),
    # email: the welcome template to a, b and c.
    *(event(who, "email.sent", "2026-02-16", template="welcome") for who in "abc"),
    *(event(who, "email.opened", "2026-02-17", template="welcome") for who in "ab"),
    event("a", "email.clicked", "2026-02-18", template="welcome"),
    event("c", "unsubscribed", "2026-02-19", template="welcome"),
    # acquisition spend, recorded on a contact of its own.
    event("marketing", "marketing.spend", "2026-01-01", channel="ads", amount=200),
    event("marketing", "marketing.spend", "2026-02-01", channel="seo", amount=50),
]


@pytest.fixture
def figures(tmp_path, on_store):
    """The KPIs of the history, on each store (``on_store``): the same hand-worked answers."""
    rules = tmp_path / "stages.json"
    rules.write_text(json.dumps(STAGES))
    with Engine(store_in(tmp_path), clock=VirtualClock(NOW), rulesets=[rules]) as engine:
        for item in sorted(HISTORY, key=lambda e: e["occurred_at"]):
            engine.ingest(item)
        yield kpis(analytics_db(engine.store), now=NOW, stages=engine.stages)


def test_funnel(figures):
    # Every contact starts in awareness with its first event (the marketing contact too);
    # transitions: a aw 01-05, con 01-07, pur 01-10, ret 02-15 | b aw 01-20, pur 03-01 |
    # c aw 02-03 | d aw 02-10, con 02-11 | e aw+pur 2025-03-01, ret 06-01, con 07-01 (back) |
    # f aw+pur 2025-01-15 | marketing aw 2026-01-01.
    funnel = {row["stage"]: row for row in figures["funnel"]}
    assert list(funnel) == ["awareness", "consideration", "purchase", "retention", "advocacy"]
    assert [row["reached"] for row in figures["funnel"]] == [7, 3, 4, 2, 0]
    # on from awareness: a, d, e; from consideration: a (e reached it after purchase); from
    # purchase: a, e; from retention: nobody.
    assert [row["converted_to_next"] for row in figures["funnel"]] == [3, 1, 2, 0, None]
    assert [row["conversion"] for row in figures["funnel"]] == [0.4286, 0.3333, 0.5, 0.0, None]
    assert [row["drop_off"] for row in figures["funnel"]] == [0.5714, 0.6667, 0.5, 1.0, None]
    # completed stays in days: awareness 2, 40, 1, 0, 0; consideration 3; purchase 36, 92;
    # retention 30 (e, until the detractor answer moved it back).
    assert [row["median_days_in_stage"] for row in figures["funnel"]] == [1, 3, 64, 30, None]
    assert funnel["consideration"]["backward_moves_in"] == 1
    assert sum(row["backward_moves_in"] for row in figures["funnel"]) == 1


def test_cohorts_and_churn(figures):
    assert figures["cohorts"] == [
        {"cohort": "2026-01", "size": 2, "active": [2, 2, 2], "retention": [1.0, 1.0, 1.0]},
        {"cohort": "2026-02", "size": 2, "active": [2, 1], "retention": [1.0, 0.5]},
    ]
    churn = [(m["month"], m["active_before"], m["churned"]) for m in figures["churn_by_month"]]
    # active months: f 2025-01; e 2025-03, 06, 07; a, b 2026-01..03; c 2026-02, 03; d 2026-02
    assert churn == [
        ("2025-02", 1, 1),
        ("2025-04", 1, 1),
        ("2025-07", 1, 0),
        ("2025-08", 1, 1),
        ("2026-02", 2, 0),
        ("2026-03", 4, 1),
    ]
    assert figures["churn_by_month"][-1]["churn_rate"] == 0.25


def test_purchases_and_clv(figures):
    p = figures["purchases"]
    # a 100 + 50, b 30, e 40 + 80, f 20: six orders from four customers, two of them repeat.
    assert (p["customers"], p["repeat_customers"], p["orders"], p["revenue"]) == (4, 2, 6, 320)
    assert p["repeat_purchase_rate"] == 0.5
    assert p["average_order_value"] == 53.33
    # e and f bought in the year before last; e bought again in the last year.
    assert p["yearly_retention"] == 0.5
    # last year: a twice, b once, e once.
    assert p["yearly_purchases_per_customer"] == 1.3333
    # 320 / 6 x 4 / 3 x 1 / (1 - 0.5)
    assert p["clv"] == 142.22
    assert [m["month"] for m in p["by_month"]] == [
        "2025-01",
        "2025-03",
        "2025-06",
        "2026-01",
        "2026-02",
        "2026-03",
    ]


def test_surveys(figures):
    nps = [(m["month"], m["answers"], m["nps"]) for m in figures["nps_by_month"]]
    assert nps == [("2025-07", 1, -100.0), ("2026-02", 2, 50.0), ("2026-03", 1, 100.0)]
    csat = [(m["month"], m["answers"], m["csat"]) for m in figures["csat_by_month"]]
    assert csat == [("2026-03", 2, 50.0)]


def test_engagement_activation_referral_acquisition(figures):
    assert figures["email_by_template"] == [
        {
            "template": "welcome",
            "sent": 3,
            "opened": 2,
            "clicked": 1,
            "unsubscribed": 1,
            "bounced": 0,
            "open_rate": 0.6667,
            "click_rate": 0.3333,
        }
    ]
    # a bought 5 days after signup; b 40 days after; c and d never.
    assert figures["activation"]["activation_rate"] == 0.25
    assert figures["referral"] == {"signed_up": 4, "referred": 1, "referral_rate": 0.25}
    assert figures["acquisition"]["channels"] == [
        {
            "channel": "ads",
            "spend": 200,
            "customers": 2,
            "revenue": 180,
            "cac": 100.0,
            "romi": -0.1,
        },
        {"channel": "seo", "spend": 50, "customers": 0, "revenue": 0, "cac": None, "romi": -1.0},
    ]
