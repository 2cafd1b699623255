"""Facts read current values: a fading score as of the rule's time, and activity that only the
contact's own events (not the engine's) renew. Time is driven by the virtual clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from clm_engine import Engine, Event, VirtualClock
from clm_engine.builtins.reducers import is_emitted
from clm_engine.cli import cli
from clm_engine.dispatch import emitted_event_id
from clm_engine.explain import explain
from tests.helpers import event

START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # a Monday


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


def open_engine(tmp_path, clock, *rules) -> Engine:
    """An engine with one ruleset that traces every evaluation (matched or not)."""
    path = tmp_path / "rules.json"
    ruleset = {"ruleset": "now", "version": 1, "trace": "all", "rules": list(rules)}
    path.write_text(json.dumps(ruleset))
    return Engine(tmp_path / "clm.db", clock=clock, rulesets=[path])


def explained(engine: Engine, rule: str) -> list[dict]:
    """The condition trees `clm explain` shows for c1's decisions of ``rule``, newest first."""
    [entry] = explain(engine, "c1", rule=rule, limit=1000)["rules"]
    return [decision["conditions"] for decision in entry["decisions"]]


def ingest_and_run(engine: Engine, clock: VirtualClock, *events: dict) -> None:
    """Ingest ``events``, move the clock to the latest of them and run what is due."""
    engine.ingest_many(events)
    latest = max(datetime.fromisoformat(e["occurred_at"]) for e in events)
    if latest > clock.now():
        clock.set(latest)
    engine.dispatch()


def add(points: float, half_life: str | None = "P10D", score: str = "lead") -> list[dict]:
    params = {"score": score, "points": points} | ({"half_life": half_life} if half_life else {})
    return [{"action": "score.add", "with": params}]


def tag(name: str) -> list[dict]:
    return [{"action": "tag.add", "with": {"tag": name}}]


OPENED = {"id": "opened", "when": {"event": "email.opened"}, "then": add(40)}
HOT = {
    "id": "hot",
    "when": {"event": "page.viewed"},
    "if": {"fact": "contact.scores.lead", "op": "gte", "value": 30},
    "then": tag("hot"),
    "limit": {"once_per": "contact"},
}


# -- scores ---------------------------------------------------------------------------------


def test_an_event_rule_reads_the_score_decayed_to_the_events_time(tmp_path, clock):
    engine = open_engine(tmp_path, clock, OPENED, HOT)
    ingest_and_run(engine, clock, event("c1", "email.opened", "2026-11-02T08:00:00Z"))
    assert engine.contact("c1").scores == {"lead": 40.0}
    # Ten days (one half-life) later the score is 20: not hot, though 40 is what is stored.
    ingest_and_run(engine, clock, event("c1", "page.viewed", "2026-11-12T08:00:00Z"))
    assert engine.contact("c1").scores == {"lead": 40.0}
    assert engine.contact("c1").tags == []
    [tree] = explained(engine, "hot")
    assert tree["actual"] == 20.0  # what `clm explain` shows: the value the rule saw
    # A fresh open an hour later: 20 (a little less) + 40, and the next visit is hot.
    ingest_and_run(engine, clock, event("c1", "email.opened", "2026-11-12T09:00:00Z"))
    assert engine.contact("c1").scores["lead"] == round(20 * 0.5 ** (1 / 240) + 40, 4)
    ingest_and_run(engine, clock, event("c1", "page.viewed", "2026-11-12T10:00:00Z"))
    assert engine.contact("c1").tags == ["hot"]


def test_a_schedule_reads_the_score_decayed_to_the_tick(tmp_path, clock):
    cold = {
        "id": "cold",
        "when": {"schedule": "0 9 * * MON"},
        "if": {"fact": "contact.scores.lead", "op": "lt", "value": 15},
        "then": tag("cold"),
        "limit": {"once_per": "contact"},
    }
    engine = open_engine(tmp_path, clock, OPENED, cold)
    engine.ingest(event("c1", "email.opened", "2026-11-02T08:00:00Z"))
    engine.tick()  # Monday 08:00: the score is added; the schedule's clock starts
    clock.advance(hours=1)
    engine.tick()  # Monday 09:00: 39.9, not cold
    cold_on = None
    for _ in range(4):
        clock.advance(days=7)
        engine.tick()
        if cold_on is None and "cold" in engine.contact("c1").tags:
            cold_on = clock.now().date().isoformat()
    # 40 halving every 10 days, read at each Monday's 09:00: 24.6 on Nov 9, 15.1 on Nov 16,
    # 9.3 on Nov 23 (then the once-per-contact limit holds it).
    assert cold_on == "2026-11-23"
    seen = sorted((tree["actual"] for tree in explained(engine, "cold")), reverse=True)
    assert seen[:4] == [round(40 * 0.5 ** (hours / 240), 4) for hours in (1, 169, 337, 505)]
    assert engine.contact("c1").scores == {"lead": 40.0}  # nothing was rewritten


def test_the_value_read_before_an_add_is_the_value_the_add_starts_from(tmp_path, clock):
    seen = {
        "id": "seen",
        "when": {"event": "page.viewed"},
        "if": {"fact": "contact.scores.lead", "op": "exists", "value": True},
        "then": tag("seen"),
    }
    engine = open_engine(tmp_path, clock, OPENED, seen)
    ingest_and_run(engine, clock, event("c1", "email.opened", "2026-11-02T08:00:00Z"))
    ingest_and_run(engine, clock, event("c1", "page.viewed", "2026-11-22T08:00:00Z"))
    [tree] = explained(engine, "seen")
    assert tree["actual"] == 10.0  # two half-lives
    ingest_and_run(engine, clock, event("c1", "email.opened", "2026-11-22T08:00:00Z", n=2))
    assert engine.contact("c1").scores["lead"] == 50.0  # the 10 read, + 40


def test_an_add_without_a_half_life_keeps_the_scores_and_a_plain_score_never_fades(tmp_path, clock):
    penalty = {"id": "penalty", "when": {"event": "unsubscribed"}, "then": add(-20, None)}
    spend = {"id": "spend", "when": {"event": "purchase"}, "then": add(7, None, score="spend")}
    read = {
        "id": "read",
        "when": {"event": "page.viewed"},
        "if": {"all": [
            {"fact": "contact.scores.lead", "op": "exists", "value": True},
            {"fact": "contact.scores.spend", "op": "exists", "value": True},
        ]},
        "then": tag("read"),
    }  # fmt: skip
    engine = open_engine(tmp_path, clock, OPENED, penalty, spend, read)
    ingest_and_run(engine, clock, event("c1", "email.opened", "2026-11-02T08:00:00Z"))
    ingest_and_run(engine, clock, event("c1", "purchase", "2026-11-02T09:00:00Z", amount=7))
    ingest_and_run(
        engine, clock, event("c1", "unsubscribed", "2026-11-12T08:00:00Z", channel="email")
    )
    contact = engine.contact("c1")
    assert contact.scores == {"lead": 0.0, "spend": 7.0}  # 40 decayed to 20, then -20
    assert contact.metrics["score_half_lives"] == {"lead": 10 * 86400.0}
    # The half-life stayed: the lead score still fades; the spend score never does.
    ingest_and_run(engine, clock, event("c1", "email.opened", "2026-11-22T08:00:00Z", n=2))
    assert engine.contact("c1").scores["lead"] == 40.0
    ingest_and_run(engine, clock, event("c1", "page.viewed", "2026-12-02T08:00:00Z"))
    [tree] = explained(engine, "read")
    lead, spend_ = (leaf["actual"] for leaf in tree["all"])
    assert (lead, spend_) == (20.0, 7.0)  # ten days on: lead halved, spend as it was


def test_contacts_show_gives_the_score_as_of_now(tmp_path, clock, monkeypatch):
    engine = open_engine(tmp_path, clock, OPENED)
    engine.ingest(event("c1", "email.opened", "2026-11-02T08:00:00Z"))
    engine.dispatch()
    engine.close()
    # The CLI reads the wall clock, which may be before or after November 2026: the value
    # shown is never more than the stored one, and the stored one is shown as it is.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["contacts", "show", "c1", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["contact"]["scores"] == {"lead": 40.0}
    assert set(shown["scores_now"]) == {"lead"} and shown["scores_now"]["lead"] <= 40.0


# -- activity -------------------------------------------------------------------------------

WEEKLY_MAIL = {  # stands for a newsletter: the engine writes to everyone every Monday
    "id": "weekly-mail",
    "when": {"schedule": "0 9 * * MON"},
    "then": [{"action": "event.emit", "with": {"type": "newsletter.sent", "properties": {}}}],
}
INACTIVE = {
    "id": "inactive",
    "when": {"schedule": "0 9 * * MON"},
    "if": {"fact": "contact.days_since_last_active", "op": "gte", "value": 60},
    "then": tag("inactive"),
    "limit": {"once_per": "contact"},
}
QUIET_BY_ANY_EVENT = {
    "id": "quiet-by-any-event",
    "when": {"schedule": "0 9 * * MON"},
    "if": {"fact": "contact.days_since_last_event", "op": "gte", "value": 60},
    "then": tag("quiet-by-any-event"),
    "limit": {"once_per": "contact"},
}


def test_inactivity_counts_the_contacts_events_not_the_engines(tmp_path, clock):
    engine = open_engine(
        tmp_path,
        clock,
        WEEKLY_MAIL,
        INACTIVE,
        QUIET_BY_ANY_EVENT,
        {"id": "buyer", "when": {"event": "purchase"}, "then": tag("buyer")},
    )
    engine.ingest(event("c1", "signup", "2026-11-02T08:00:00Z", consent={"email": True}))
    engine.ingest(event("c1", "purchase", "2026-11-02T08:30:00Z", amount=10))
    engine.tick()  # Monday 08:00: the tag; the schedules' clock starts
    clock.advance(hours=1)
    engine.tick()  # Monday 09:00: the first newsletter
    assert engine.contact("c1").metrics["last_active_at"] == "2026-11-02T08:30:00Z"
    tagged_on = None
    for _ in range(12):  # twelve more Mondays
        clock.advance(days=7)
        engine.tick()
        if tagged_on is None and "inactive" in engine.contact("c1").tags:
            tagged_on = clock.now().date().isoformat()
    contact = engine.contact("c1")
    # The newsletter went out every week and the tag.add landed as clm.* events...
    sent = [e for e in engine.store.recent_events("c1", limit=100) if e.type == "newsletter.sent"]
    assert len(sent) == 13
    assert contact.last_event_at > datetime(2027, 1, 18, tzinfo=UTC)
    # ...but the contact did nothing after the purchase: 60 days on, the first Monday is Jan 4.
    assert contact.metrics["last_active_at"] == "2026-11-02T08:30:00Z"
    assert tagged_on == "2027-01-04"
    # The fact that counts every event never got there: each newsletter restarted it.
    assert "quiet-by-any-event" not in contact.tags


def test_a_late_event_from_outside_moves_activity_and_a_refold_keeps_it(tmp_path, clock):
    thanks = {
        "id": "thanks",
        "when": {"event": "purchase"},
        "then": [
            {
                "action": "event.emit",
                "with": {"type": "thanks.sent", "properties": {}},
                "after": "P1D",
            }
        ],
    }
    engine = open_engine(tmp_path, clock, thanks)
    engine.ingest(event("c1", "signup", "2026-11-01T08:00:00Z"))
    engine.ingest(event("c1", "purchase", "2026-11-03T08:00:00Z", amount=5))
    clock.advance(days=3)
    engine.dispatch()  # thanks.sent, stamped when it was due: Nov 4
    contact = engine.contact("c1")
    assert contact.last_event_at == datetime(2026, 11, 4, 8, tzinfo=UTC)
    assert contact.metrics["last_active_at"] == "2026-11-03T08:00:00Z"
    # A page view from before the purchase arrives late: the whole history is folded again,
    # the emitted event with its stored id, and it still does not count as activity.
    engine.ingest(event("c1", "page.viewed", "2026-11-02T08:00:00Z"))
    contact = engine.contact("c1")
    assert contact.metrics["last_active_at"] == "2026-11-03T08:00:00Z"
    assert contact.last_event_at == datetime(2026, 11, 4, 8, tzinfo=UTC)
    # A late one after the purchase moves it.
    engine.ingest(event("c1", "page.viewed", "2026-11-03T20:00:00Z"))
    assert engine.contact("c1").metrics["last_active_at"] == "2026-11-03T20:00:00Z"


def test_emitted_events_are_told_apart_by_the_id_the_dispatcher_gives_them():
    def made(event_id: str, type_: str = "email.sent") -> Event:
        return Event(id=event_id, contact_id="c1", type=type_, occurred_at="2026-11-02T08:00:00Z")

    assert is_emitted(made(emitted_event_id("rs/rule/c1/evt-1/0", 0)))
    assert is_emitted(made(emitted_event_id("rs/rule/c1/" + "x" * 500, 3)))  # fixed length
    assert is_emitted(made("evt-1", "clm.stage.set"))
    for crm_id in ("evt-1042", "a-1", "a-" + "0" * 31, "A-" + "0" * 32, "a-" + "g" * 32):
        assert not is_emitted(made(crm_id)), crm_id
    derived = Event(contact_id="c1", type="purchase", occurred_at="2026-11-02T08:00:00Z")
    assert derived.id.startswith("h-") and not is_emitted(derived)
