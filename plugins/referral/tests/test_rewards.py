"""Rewards end to end through the engine: rules, actions, handlers, facts, replays, workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clm_referral import ledger
from clm_referral.facts import successful_count

from clm_engine import Engine, VirtualClock
from clm_engine.testing import make_event

NAME = "referral"
#: The example ruleset the repository ships, in rulesets/ at its root.
RULESET = Path(__file__).resolve().parents[3] / "rulesets" / "referral-rewards.json"
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def event(type_, properties=None, *, contact_id, at, **extra):
    return make_event(type_, properties, contact_id=contact_id, at=at, **extra)


@pytest.fixture
def clock():
    return VirtualClock(START)


@pytest.fixture
def engine(monkeypatch, tmp_path, clock):
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    with (
        Engine(tmp_path / "clm.db", clock=clock, rulesets=[RULESET]) as engine,
    ):
        yield engine


@pytest.fixture(params=["sqlite", "postgres"])
def engine_on_store(request, monkeypatch, tmp_path, clock):
    """An engine with the plugin on each store: the ledger's rules hold on both."""
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    target = (
        request.getfixturevalue("postgres_url")
        if request.param == "postgres"
        else tmp_path / "clm.db"
    )
    with Engine(target, clock=clock, rulesets=[RULESET]) as engine:
        yield engine


def signup(engine, contact_id, email, at):
    engine.ingest(event("signup", {"email": email}, contact_id=contact_id, at=at))


def refer(engine, referred, referrer, at, **properties):
    properties.setdefault("referrer_id", referrer)
    engine.ingest(event("referral.signup", properties, contact_id=referred, at=at))


def onboard(engine, contact_id, at, **extra):
    engine.ingest(event("onboarding.completed", {}, contact_id=contact_id, at=at, **extra))


def rewards_of(engine, role="referrer"):
    return [r for r in ledger.rewards(engine.store.tables) if r["role"] == role]


def test_onboarding_credits_referrer_and_friend_once_and_makes_an_advocate(engine, clock):
    signup(engine, "ada", "ada@example.com", "2026-03-01T10:00:00Z")
    signup(engine, "bob", "bob@example.org", "2026-03-02T10:00:00Z")
    refer(engine, "bob", "ada", "2026-03-02T10:01:00Z")
    onboard(engine, "bob", "2026-03-04T10:00:00Z", id="onb-1")
    clock.set(datetime(2026, 3, 5, tzinfo=UTC))
    engine.dispatch()
    db = engine.store.tables
    [mine] = rewards_of(engine)
    [friend] = rewards_of(engine, "referred")
    assert (mine["beneficiary_contact_id"], mine["amount_minor"], mine["state"]) == (
        "ada",
        5000,
        "pending",
    )
    assert (friend["beneficiary_contact_id"], friend["amount_minor"]) == ("bob", 1000)
    assert mine["earned_at"].startswith("2026-03-04T10:00")
    assert ledger.balances(db, "ada") == {"USD": {"pending": 5000, "available": 0}}
    # The referrer heard of it, and their first successful referral made them an advocate.
    assert engine.contact("ada").stage == "advocacy"
    assert successful_count(db, "ada") == 1
    # Replays and retries: the same event again, another onboarding event, nothing new.
    onboard(engine, "bob", "2026-03-04T10:00:00Z", id="onb-1")
    onboard(engine, "bob", "2026-03-04T12:00:00Z", id="onb-2")
    engine.dispatch()
    assert len(ledger.rewards(db)) == 2
    skipped = [a for a in engine.store.actions_for("bob") if a.action == "referral.reward"]
    assert [a.status for a in skipped] == ["done", "skipped"]
    assert "already rewarded" in skipped[1].note
    # 14 days after it was earned, an unflagged reward is approved by its follow-up action.
    clock.set(datetime(2026, 3, 18, 9, 0, tzinfo=UTC))
    engine.tick()
    assert ledger.get_reward(db, mine["id"])["state"] == "pending"
    clock.set(datetime(2026, 3, 18, 10, 1, tzinfo=UTC))
    engine.tick()
    assert ledger.get_reward(db, mine["id"])["state"] == "approved"
    assert ledger.balances(db, "ada") == {"USD": {"pending": 0, "available": 5000}}
    assert ledger.check_balanced(db) == {}


def test_a_contact_not_referred_earns_nobody_anything(engine, clock):
    signup(engine, "cat", "cat@example.org", "2026-03-01T10:00:00Z")
    onboard(engine, "cat", "2026-03-02T10:00:00Z")
    clock.set(datetime(2026, 3, 3, tzinfo=UTC))
    engine.dispatch()
    assert ledger.rewards(engine.store.tables) == []
    assert not [a for a in engine.store.actions_for("cat") if a.action == "referral.reward"]


def test_a_self_referral_is_held_for_review_and_never_auto_approved(engine, clock):
    signup(engine, "ada", "ada.lovelace@gmail.com", "2026-03-01T10:00:00Z")
    signup(engine, "ada2", "adalovelace+2@googlemail.com", "2026-03-02T10:00:00Z")
    refer(engine, "ada2", "ada", "2026-03-02T10:01:00Z")
    onboard(engine, "ada2", "2026-03-03T10:00:00Z")
    clock.set(datetime(2026, 3, 4, tzinfo=UTC))
    engine.dispatch()
    [held] = rewards_of(engine)
    assert held["held_reasons"] and "one mailbox" in held["held_reasons"][0]
    assert held["approve_after"] is None
    assert engine.contact("ada").stage != "advocacy"
    clock.set(datetime(2026, 6, 1, tzinfo=UTC))  # long past any deadline
    engine.tick()
    assert ledger.get_reward(engine.store.tables, held["id"])["state"] == "pending"
    assert not [a for a in engine.store.actions_for("ada2") if a.action == "referral.approve"]


def test_shared_device_and_bursts_are_held(engine, clock):
    signup(engine, "ada", "ada@example.com", "2026-03-01T10:00:00Z")
    fingerprint = {"device_fingerprint": "dev-123"}
    engine.ingest(
        event(
            "page.viewed",
            {"path": "/app", **fingerprint},
            contact_id="ada",
            at="2026-03-01T11:00:00Z",
        )
    )
    signup(engine, "bob", "bob@example.org", "2026-03-02T10:00:00Z")
    refer(engine, "bob", "ada", "2026-03-02T10:01:00Z")
    engine.ingest(
        event("onboarding.completed", fingerprint, contact_id="bob", at="2026-03-03T10:00:00Z")
    )
    for n in range(4):  # four referred signups within an hour: a burst (burst_count 4)
        at = f"2026-03-10T10:{n * 10:02d}:00Z"
        signup(engine, f"f{n}", f"f{n}@example.net", at)
        refer(engine, f"f{n}", "ada", at.replace(":00Z", ":30Z"))
    for n in range(4):  # the next day, each completes onboarding: a reward is judged then
        onboard(engine, f"f{n}", "2026-03-11T10:00:00Z")
    clock.set(datetime(2026, 3, 12, tzinfo=UTC))
    engine.dispatch()
    reasons = {r["referred_contact_id"]: r["held_reasons"] for r in rewards_of(engine)}
    assert "device fingerprint" in reasons["bob"][0]
    assert all(any(x.startswith("burst:") for x in reasons[f"f{n}"]) for n in range(4))


def test_a_refund_within_the_window_claws_back_and_a_late_one_does_not(engine, clock):
    signup(engine, "ada", "ada@example.com", "2026-03-01T10:00:00Z")
    for name in ("bob", "cy"):
        signup(engine, name, f"{name}@example.org", "2026-03-02T10:00:00Z")
        refer(engine, name, "ada", "2026-03-02T10:01:00Z")
        onboard(engine, name, "2026-03-03T10:00:00Z")
    clock.set(datetime(2026, 3, 20, tzinfo=UTC))
    engine.tick()  # rewarded, then approved
    engine.ingest(event("purchase.refunded", {}, contact_id="bob", at="2026-03-25T10:00:00Z"))
    engine.ingest(event("purchase.refunded", {}, contact_id="cy", at="2026-04-20T10:00:00Z"))
    clock.set(datetime(2026, 4, 21, tzinfo=UTC))
    engine.dispatch()
    states = {
        (r["referred_contact_id"], r["role"]): r["state"]
        for r in ledger.rewards(engine.store.tables)
    }
    assert states == {
        ("bob", "referrer"): "reversed",
        ("bob", "referred"): "reversed",
        ("cy", "referrer"): "approved",
        ("cy", "referred"): "approved",
    }
    assert ledger.balances(engine.store.tables, "ada") == {"USD": {"pending": 0, "available": 5000}}
    assert ledger.check_balanced(engine.store.tables) == {}


def test_attribution_by_code_through_the_engine(engine, clock):
    from clm_referral.attribution import attribution_of, ensure_code

    signup(engine, "ada", "ada@example.com", "2026-03-01T10:00:00Z")
    with engine.store.write() as tx:
        code, _ = ensure_code(tx.tables, "ada", at="2026-03-01T11:00:00.000000Z")
    engine.ingest(
        event(
            "signup",
            {"email": "bob@example.org", "referral_code": code.lower()},
            contact_id="bob",
            at="2026-03-02T10:00:00Z",
        )
    )
    assert attribution_of(engine.store.tables, "bob")["referrer_contact_id"] == "ada"
    refer(engine, "cy", None, "2026-03-02T11:00:00Z", code=f"{code[:5]}-{code[5:]}")
    assert attribution_of(engine.store.tables, "cy")["referrer_contact_id"] == "ada"


def test_an_unknown_code_is_a_recorded_failure(engine):
    bad = event(
        "referral.signup",
        {"code": "NOPE-1"},
        contact_id="bob",
        at="2026-03-02T10:00:00Z",
        id="rs-1",
    )
    with pytest.raises(Exception, match="not known"):
        engine.ingest(bad)
    failures = [f for f in engine.store.failures() if f["event_id"] == "rs-1"]
    assert len(failures) == 1 and "not known" in failures[0]["error"]
    from clm_referral.attribution import attribution_of

    assert attribution_of(engine.store.tables, "bob") is None


def test_forget_pseudonymises_rewards_and_the_books_still_balance(engine_on_store, clock):
    engine = engine_on_store
    signup(engine, "ada", "ada@example.com", "2026-03-01T10:00:00Z")
    signup(engine, "bob", "bob@example.org", "2026-03-02T10:00:00Z")
    refer(engine, "bob", "ada", "2026-03-02T10:01:00Z")
    onboard(engine, "bob", "2026-03-03T10:00:00Z")
    clock.set(datetime(2026, 3, 4, tzinfo=UTC))
    engine.dispatch()
    db = engine.store.tables
    before = sorted(
        (r["role"], r["amount_minor"], r["currency"]) for r in db["referral_rewards"].rows()
    )
    entries = db["referral_entries"].count()
    report = engine.forget("ada")
    assert report.pseudonymised["referral_rewards"] == 2
    pseudonym = report.erasure_id
    rewards = list(db["referral_rewards"].rows())
    assert sorted((r["role"], r["amount_minor"], r["currency"]) for r in rewards) == before
    assert {r["referrer_contact_id"] for r in rewards} == {pseudonym}
    assert db["referral_entries"].count() == entries
    assert ledger.check_balanced(db) == {}
    accounts = {r["account"] for r in db["referral_lines"].rows()}
    assert f"contact:{pseudonym}:pending" in accounts
    assert not any("ada" in account for account in accounts)


# -- two workers at once --------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from clm_engine import Engine, VirtualClock
    from datetime import datetime, UTC
    db, ruleset, go, events = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
    clock = VirtualClock(datetime(2026, 3, 10, tzinfo=UTC))
    with Engine(db, clock=clock, rulesets=[ruleset]) as engine:
        while not go.exists():
            time.sleep(0.005)
        for event in events:
            engine.ingest(event)
            engine.dispatch()
    """
)


@pytest.mark.parametrize("same_event", [True, False], ids=["same-event", "two-events"])
def test_two_workers_at_once_credit_once(monkeypatch, tmp_path, same_event):
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    db = tmp_path / "clm.db"
    with (
        Engine(db, clock=VirtualClock(START), rulesets=[RULESET]) as engine,
    ):
        signup(engine, "ada", "ada@example.com", "2026-03-01T10:00:00Z")
        signup(engine, "bob", "bob@example.org", "2026-03-02T10:00:00Z")
        refer(engine, "bob", "ada", "2026-03-02T10:01:00Z")
    go = tmp_path / "go"
    batches = [
        [
            event(
                "onboarding.completed",
                {},
                contact_id="bob",
                at="2026-03-03T10:00:00Z",
                id=f"onb-{n}",
            )
        ]
        for n in ((1, 1) if same_event else (1, 2))
    ]
    env = {**os.environ, "CLM_LOAD_PLUGINS": NAME}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(db), str(RULESET), str(go), json.dumps(batch)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in batches
    ]
    go.touch()
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    with Engine(db, clock=VirtualClock(START)) as engine:
        db_ = engine.store.tables
        rows = ledger.rewards(db_)
        assert sorted((r["role"], r["amount_minor"]) for r in rows) == [
            ("referred", 1000),
            ("referrer", 5000),
        ]
        assert db_["referral_entries"].count({"kind": "credit"}) == 2
        statuses = sorted(
            a.status for a in engine.store.actions_for("bob") if a.action == "referral.reward"
        )
        assert statuses == (["done"] if same_event else ["done", "skipped"])
        assert (
            ledger.balances(db_, "ada")["USD"]["pending"]
            + ledger.balances(db_, "ada")["USD"]["available"]
            == 5000
        )


def test_codes_on_demand_and_facts_in_conditions(monkeypatch, tmp_path, clock):
    rules = {
        "ruleset": "referral-extras",
        "version": 1,
        "rules": [
            {
                "id": "code-on-request",
                "when": {"event": "code.requested"},
                "then": [{"action": "referral.code"}],
            },
            {
                "id": "big-referrer",
                "when": {"event": "referral.rewarded"},
                "if": {"all": [
                    {"fact": "referral.balance", "args": {"part": "total"},
                     "op": "gte", "value": 10000},
                    {"fact": "referral.count", "op": "eq", "value": 2},
                ]},
                "then": [{"action": "tag.add", "with": {"tag": "big-referrer"}}],
            },
        ],
    }  # fmt: skip
    extra = tmp_path / "extras.json"
    extra.write_text(json.dumps(rules))
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    with (
        Engine(tmp_path / "clm.db", clock=clock, rulesets=[RULESET, extra]) as engine,
    ):
        signup(engine, "ada", "ada@example.com", "2026-03-01T10:00:00Z")
        for n in (1, 2):  # asked twice: one code, one code_issued event
            engine.ingest(event("code.requested", contact_id="ada", at=f"2026-03-01T1{n}:00:00Z"))
        clock.set(datetime(2026, 3, 2, tzinfo=UTC))
        engine.dispatch()
        results = [a.result for a in engine.store.actions_for("ada") if a.action == "referral.code"]
        assert results[0]["created"] and results[1] == {
            "code": results[0]["code"],
            "created": False,
        }
        issued = [e for e in engine.store.recent_events("ada") if e.type == "referral.code_issued"]
        assert [e.properties["code"] for e in issued] == [results[0]["code"]]
        for name in ("bob", "cy"):
            signup(engine, name, f"{name}@example.org", "2026-03-02T10:00:00Z")
            refer(engine, name, None, "2026-03-02T10:01:00Z", code=results[0]["code"].lower())
            onboard(engine, name, "2026-03-03T10:00:00Z")
        clock.set(datetime(2026, 3, 4, tzinfo=UTC))
        engine.dispatch()
        assert "big-referrer" in engine.contact("ada").tags
