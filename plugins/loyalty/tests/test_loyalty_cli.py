"""``clm loyalty ...`` as a user runs it: the installed ``clm`` in a process of its own, on a
SQLite file and on a PostgreSQL database (``new_store``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import loyalty_testing
import pytest

from clm_engine.synthetic import write_jsonl
from clm_engine.testing import make_event

# The shared fixtures this module uses (loyalty_testing.py says why not a conftest.py).
rules = loyalty_testing.rules


CLM = str(Path(sys.executable).parent / "clm")


def clm(*args: str, db: Path | str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLM_LOAD_PLUGINS": "loyalty", "CLM_DB": str(db)}
    done = subprocess.run([CLM, *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def db(tmp_path, rules, new_store) -> Path | str:
    events = [
        make_event(
            "signup", {"email": "ada@example.com"}, contact_id="ada", at="2026-01-01T10:00:00Z"
        ),
        make_event(
            "purchase",
            {"amount": 700.0, "currency": "USD"},
            contact_id="ada",
            at="2026-01-05T10:00:00Z",
            id="o1",
        ),
        make_event(
            "purchase",
            {"amount": 320.5, "currency": "USD"},
            contact_id="ada",
            at="2026-02-05T10:00:00Z",
            id="o2",
        ),
        make_event(
            "reward.claimed", {"points": 5000}, contact_id="ada", at="2026-02-06T10:00:00Z", id="r1"
        ),
        make_event(
            "reward.claimed", {"points": 200}, contact_id="ada", at="2026-02-07T10:00:00Z", id="r2"
        ),
        make_event(
            "purchase",
            {"amount": 40.0, "currency": "USD"},
            contact_id="bob",
            at="2026-01-09T10:00:00Z",
            id="o3",
        ),
    ]
    path = tmp_path / "events.jsonl"
    write_jsonl(events, path)
    db = new_store("clm.db")
    clm("ingest", str(path), "--rulesets", str(rules), "--dispatch", db=db)
    return db


def test_balance_for_people_and_machines(db, rules):
    data = json.loads(
        clm("loyalty", "balance", "ada", "--json", "--rulesets", str(rules), db=db).stdout
    )
    assert data["balance"] == 820 and data["lifetime_points"] == 1020 and data["redeemed"] == 200
    assert data["tier"] == "gold" and data["tier_since"].startswith("2026-02-05")
    assert data["milestones"] == ["first-order", "1k-points"]
    assert data["next_expiry"]["points"] == 500  # what is left of the oldest lot (700 - 200)
    text = clm("loyalty", "balance", "ada", "--rulesets", str(rules), db=db).stdout
    assert "ada in points: 820 points, tier gold since 2026-02-05" in text
    assert "next expiry: 500 points on 2027-01-05" in text


def test_the_ledger_lists_every_entry_with_the_balance_after_it(db):
    data = json.loads(clm("loyalty", "ledger", "ada", "--json", db=db).stdout)
    assert [(e["kind"], e["points"], e["balance"]) for e in data["entries"]] == [
        ("earn", 700, 700),
        ("earn", 320, 1020),
        ("redeem", -200, 820),
    ]
    assert [t["tier"] for t in data["tiers"]] == ["silver", "gold"]
    text = clm("loyalty", "ledger", "ada", db=db).stdout
    assert "redeem       -200 =        820" in text
    assert (
        "tier 2026-02-05: silver -> gold (up; 1,020 qualifying points in the last 365 days)" in text
    )


def test_the_report_adds_up(db, rules):
    data = json.loads(clm("loyalty", "report", "--json", "--rulesets", str(rules), db=db).stdout)
    [points] = data["programmes"]
    assert (points["members"], points["issued"], points["redeemed"], points["outstanding"]) == (
        2,
        1060,
        200,
        860,
    )
    assert points["tiers"] == {"member": 1, "gold": 1}
    assert points["milestones"] == {"1k-points": 1, "first-order": 2}
    assert data["negative_balances"] == []
    text = clm("loyalty", "report", "--rulesets", str(rules), db=db).stdout
    assert "programme points: 2 members" in text and "tiers: member 1, gold 1" in text
    # Without the programme document the report still adds up, and says what it lacks.
    text = clm("loyalty", "report", db=db).stdout
    assert "its document is not loaded" in text and "outstanding:                 860" in text


def test_clear_errors(db):
    done = clm("loyalty", "balance", "nobody", db=db, ok=False)
    assert done.returncode != 0 and "no contact 'nobody'" in done.stderr
    assert "Traceback" not in done.stderr
    done = clm("loyalty", "ledger", "ada", "--programme", "miles", "--json", db=db)
    assert json.loads(done.stdout)["entries"] == []
