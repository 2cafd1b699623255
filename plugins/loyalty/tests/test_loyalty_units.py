"""The pieces on their own: the programme document, earn amounts at the edges, the ledger's
FIFO replay and its refusals, and what ``clm validate`` says about bad programmes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clm_loyalty import ledger
from clm_loyalty.actions import AdjustParams, EarnParams, RedeemParams, points_for
from clm_loyalty.programme import Programme, resolve
from pydantic import ValidationError

from clm_engine import Engine, Event
from clm_engine.testing import make_event

CLM = str(Path(sys.executable).parent / "clm")
PROGRAMME_TEXT = {"loyalty": "points", "tiers": [{"name": "member", "threshold": 0}]}


def purchase(**properties):
    return Event.model_validate(make_event("purchase", properties, id="p1"))


# -- the programme -----------------------------------------------------------------------------


def test_a_programme_reads_its_terms():
    prog = Programme.model_validate(
        {
            "loyalty": "points",
            "expire_after": {"days": 30},
            "tiers": [{"name": "member", "threshold": 0}, {"name": "gold", "threshold": 100}],
        }
    )
    assert prog.expiry.days == 30 and prog.window.days == 365 and prog.hold.days == 365
    assert [prog.tier_for(n) for n in (0, 99, 100, 10**9)] == ["member", "member", "gold", "gold"]
    assert prog.base_tier == "member" and prog.rank("gold") == 1 and prog.rank("lost") == -1
    assert Programme.model_validate({"loyalty": "p"}).expiry is None  # never expires


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tiers": [{"name": "silver", "threshold": 10}]}, "its threshold must be 0"),
        (
            {"tiers": [{"name": "a", "threshold": 0}, {"name": "b", "threshold": 0}]},
            "tiers go up",
        ),
        (
            {"tiers": [{"name": "a", "threshold": 0}, {"name": "a", "threshold": 5}]},
            "a twice",
        ),
        ({"milestones": [{"name": "m"}]}, "exactly one of 'earns' or 'lifetime_points'"),
        ({"milestones": [{"name": "m", "earns": 1, "lifetime_points": 5}]}, "exactly one"),
        ({"expire_after": "P-1D"}, "expire_after"),
        ({"downgrade": {"steps": 0}}, "greater than or equal to 1"),
        ({"tiers": [{"name": "Gold", "threshold": 0}]}, "name"),
        ({"colour": "gold"}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_programme_is_refused_with_the_reason(change, message):
    with pytest.raises(ValidationError) as caught:
        Programme.model_validate({"loyalty": "points", **change})
    assert message in str(caught.value)


def test_which_programme_an_action_means():
    one = {"loyalty": {"points": Programme(loyalty="points")}}
    two = {"loyalty": {"points": Programme(loyalty="points"), "miles": Programme(loyalty="miles")}}
    assert resolve(one, None).loyalty == "points"
    with pytest.raises(ValueError, match='say which with "programme"'):
        resolve(two, None)
    with pytest.raises(ValueError, match="did you mean 'points'"):
        resolve(one, "piont")
    with pytest.raises(ValueError, match="no loyalty programme is loaded"):
        resolve({}, None)


# -- earning at the edges --------------------------------------------------------------------


PER_DOLLAR = EarnParams(points=1, per="1.00", currency="USD")


@pytest.mark.parametrize(
    ("amount", "points"),
    [
        (129.99, 129),
        (1, 1),
        (1.0, 1),
        ("19.999", 19),  # more decimals than the currency: still rounded down, not refused
        (9_007_199_254_740.99, 9_007_199_254_740),
    ],
)
def test_points_per_money_round_down(amount, points):
    assert points_for(PER_DOLLAR, purchase(amount=amount, currency="USD")) == points


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"amount": 0.99}, "less than 1.00 USD"),
        ({"amount": 0}, "no points for an amount of 0"),
        ({"amount": -5}, "no points for an amount of -5"),
        ({"amount": "NaN"}, "no points for an amount of 'NaN'"),
        ({"amount": "Infinity"}, "no points"),
        ({"amount": True}, "is not an amount"),
        ({"amount": "lots"}, "is not an amount"),
        ({"amount": None}, "is not an amount"),
        ({}, "is not an amount"),
        ({"amount": 10, "currency": "EUR"}, "in 'EUR'"),
    ],
)
def test_amounts_that_earn_nothing_say_why(properties, reason):
    with pytest.raises(ValueError, match=reason):
        points_for(PER_DOLLAR, purchase(**properties))


def test_points_beyond_what_an_entry_holds_are_refused():
    params = EarnParams(points=1_000_000, per="0.01", currency="USD")
    with pytest.raises(ValueError, match="more than one entry holds"):
        points_for(params, purchase(amount=9_000_000_000_000.0))


def test_fixed_points_need_no_event():
    assert points_for(EarnParams(points=50), None) == 50


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"per": 1.5, "currency": "USD"}, "decimal string"),
        ({"per": "1.00"}, '"per" and "currency" go together'),
        ({"per": "0", "currency": "USD"}, "more than zero"),
        ({"per": "0.001", "currency": "USD"}, "more than 2 decimals"),
        ({"points": 0}, "greater than or equal to 1"),
        ({"bonus": 2}, "Extra inputs"),
    ],
)
def test_bad_earn_parameters_are_refused_when_the_ruleset_loads(params, message):
    with pytest.raises(ValidationError, match=message):
        EarnParams.model_validate(params)


def test_spend_parameters_need_exactly_one_source_of_points():
    with pytest.raises(ValidationError, match="exactly one"):
        RedeemParams.model_validate({})
    with pytest.raises(ValidationError, match="exactly one"):
        RedeemParams.model_validate({"points": 5, "points_property": "points"})
    with pytest.raises(ValidationError, match="non-zero"):
        AdjustParams.model_validate({"points": 0, "reason": "x"})
    with pytest.raises(ValidationError, match="reason"):
        AdjustParams.model_validate({"points": 5})


# -- the ledger ------------------------------------------------------------------------------


def entry(seq, kind, points, at, key=None, expires_at=None, lot_key=None):
    return {
        "seq": seq,
        "key": key or f"k{seq}",
        "kind": kind,
        "points": points,
        "at": at,
        "expires_at": expires_at,
        "lot_key": lot_key,
        "qualifying": kind == "earn",
    }


def test_spends_take_the_oldest_lot_first_and_expiry_takes_what_is_left_of_its_own():
    rows = [
        entry(1, "earn", 100, "2026-01-01", expires_at="2027-01-01"),
        entry(2, "earn", 50, "2026-02-01", expires_at="2027-02-01"),
        entry(3, "redeem", -120, "2026-03-01"),
    ]
    book = ledger.replay(rows)
    assert [lot.remaining for lot in book.lots.values()] == [0, 30]
    assert book.balance == 30 and book.running == [100, 150, 30]
    assert [lot.key for lot in book.due("2027-02-01")] == ["k2"]  # k1 is spent already
    assert book.available("2027-02-01") == 0 and book.available("2026-12-31") == 30
    assert book.expiring("2026-12-31", "2027-02-01") == 30
    book = ledger.replay([*rows, entry(4, "expire", -30, "2027-02-01", lot_key="k2")])
    assert book.balance == 0 and book.expired == 30 and book.due("2030-01-01") == []


def test_the_writer_refuses_what_the_balance_does_not_cover_and_writes_each_key_once(tmp_path):
    import clm_loyalty

    with Engine(tmp_path / "clm.db", plugins={"loyalty": clm_loyalty}) as engine:
        with engine.store.write() as tx:
            writer = ledger.Writer(tx.tables, "ada", "points", source="test")
            assert writer.post(key="a", kind="earn", points=10, at="2026-01-01T00:00:00Z")
            assert writer.post(key="a", kind="earn", points=10, at="2026-01-01T00:00:00Z") is None
            with pytest.raises(ledger.Refused, match="11 points asked, the balance is 10"):
                writer.spend(key="b", kind="redeem", points=11, at="2026-01-02T00:00:00Z")
            with pytest.raises(ValueError, match="non-zero"):
                writer.post(key="c", kind="adjust", points=0, at="2026-01-02T00:00:00Z")
            with pytest.raises(ValueError, match="at most"):
                writer.post(key="c", kind="adjust", points=2**60, at="2026-01-02T00:00:00Z")
            with pytest.raises(ValueError, match="kind is one of"):
                writer.post(key="c", kind="gift", points=1, at="2026-01-02T00:00:00Z")
            # An entry dated before the previous one is dated with it: a prefix is a moment.
            row = writer.spend(key="d", kind="redeem", points=4, at="2025-06-01T00:00:00Z")
            assert row is not None and row["at"].startswith("2026-01-01")
        rows = ledger.entries(engine.store.tables, "ada", "points")
        assert [(r["key"], r["points"]) for r in rows] == [("a", 10), ("d", -4)]


def test_clm_validate_points_at_a_bad_programme(tmp_path):
    bad = dict(PROGRAMME_TEXT)
    bad["tiers"] = [{"name": "member", "threshold": 0}, {"name": "gold", "threshold": "lots"}]
    (tmp_path / "programme.json").write_text(json.dumps(bad, indent=2), encoding="utf-8")
    env = {**os.environ, "CLM_LOAD_PLUGINS": "loyalty"}
    done = subprocess.run(
        [CLM, "validate", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "programme.json" in out and "/tiers/1/threshold" in out


def test_clm_validate_names_an_unknown_programme_in_a_rule(tmp_path):
    (tmp_path / "programme.json").write_text(json.dumps(PROGRAMME_TEXT), encoding="utf-8")
    ruleset = {
        "ruleset": "r",
        "version": 1,
        "rules": [
            {
                "id": "earn",
                "when": {"event": "purchase"},
                "then": [{"action": "loyalty.earn", "with": {"programme": "piont"}}],
            }
        ],
    }
    (tmp_path / "r.json").write_text(json.dumps(ruleset, indent=2), encoding="utf-8")
    env = {**os.environ, "CLM_LOAD_PLUGINS": "loyalty"}
    done = subprocess.run(
        [CLM, "validate", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "no loyalty programme 'piont'; did you mean 'points'?" in done.stdout + done.stderr
