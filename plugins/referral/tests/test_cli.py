"""``clm referral ...`` as a user runs it: the installed ``clm`` in a process of its own (the
plugin's commands are added once per process, so a shared test process cannot be trusted to
have them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clm_referral.codes import normalise_code

from clm_engine.synthetic import write_jsonl
from clm_engine.testing import make_event

CLM = str(Path(sys.executable).parent / "clm")
#: The example ruleset the repository ships, in rulesets/ at its root.
RULESET = Path(__file__).resolve().parents[3] / "rulesets" / "referral-rewards.json"


def clm(*args: str, db: Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLM_LOAD_PLUGINS": "referral", "CLM_DB": str(db)}
    done = subprocess.run([CLM, *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def db(tmp_path) -> Path:
    events = [
        make_event(
            "signup", {"email": "ada@example.com"}, contact_id="ada", at="2026-03-01T10:00:00Z"
        ),
        make_event(
            "signup",
            {"email": "adalovelace@example.com"},
            contact_id="bob",
            at="2026-03-02T10:00:00Z",
        ),
        make_event(
            "referral.signup", {"referrer_id": "ada"}, contact_id="bob", at="2026-03-02T10:01:00Z"
        ),
        make_event(
            "signup", {"email": "ada+2@example.com"}, contact_id="eve", at="2026-03-02T11:00:00Z"
        ),
        make_event(
            "referral.signup", {"referrer_id": "ada"}, contact_id="eve", at="2026-03-02T11:01:00Z"
        ),
        make_event("onboarding.completed", {}, contact_id="bob", at="2026-03-03T10:00:00Z"),
        make_event("onboarding.completed", {}, contact_id="eve", at="2026-03-03T11:00:00Z"),
    ]
    path = tmp_path / "events.jsonl"
    write_jsonl(events, path)
    db = tmp_path / "clm.db"
    clm("ingest", str(path), "--rulesets", str(RULESET), "--dispatch", db=db)
    return db


def test_code_is_created_once_and_rotated_on_demand(db):
    first = json.loads(clm("referral", "code", "ada", "--json", db=db).stdout)
    assert first["created"] and len(normalise_code(first["code"])) == 10
    again = json.loads(clm("referral", "code", "ada", "--json", db=db).stdout)
    assert (again["code"], again["created"]) == (first["code"], False)
    rotated = json.loads(clm("referral", "code", "ada", "--rotate", "--json", db=db).stdout)
    assert rotated["created"] and rotated["code"] != first["code"]
    missing = clm("referral", "code", "nobody", db=db, ok=False)
    assert missing.returncode == 1 and "no contact 'nobody'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_review_ledger_redeem_and_report(db):
    listing = clm("referral", "review", db=db).stdout
    assert "eve" in listing and "self-referral" in listing  # ada+2@ is ada's mailbox
    held = json.loads(clm("referral", "review", "--json", db=db).stdout)["held"]
    held_ids = [r["id"] for r in held if r["role"] == "referrer"]
    assert len(held_ids) == 1
    # bob's reward is not held: it was approved automatically (14 days are long gone).
    pending = clm("referral", "ledger", "ada", "--json", db=db).stdout
    auto = [
        e["reward_id"] for e in json.loads(pending)["entries"] if e["reward_id"] not in held_ids
    ]
    refused = clm("referral", "review", "--approve", auto[0], db=db, ok=False)
    assert "is approved: nothing to review" in refused.stderr
    decided = clm(
        "referral", "review", "--approve", held_ids[0], "--by", "ann", "--note", "checked by phone",
        "--rulesets", str(RULESET), db=db,
    ).stdout  # fmt: skip
    assert "approved by ann" in decided
    again = clm("referral", "review", "--approve", held_ids[0], db=db, ok=False)
    assert "is approved: nothing to review" in again.stderr
    ledger_text = clm("referral", "ledger", "ada", db=db).stdout
    assert "review by ann" in ledger_text and "Dr referral_expense" in ledger_text
    assert "available 100.00 USD, pending 0.00 USD" in ledger_text
    redeemed = clm("referral", "redeem", "ada", "--reference", "PAYOUT-1", db=db).stdout
    assert "redeemed 2 rewards of ada: 100.00 USD" in redeemed
    nothing = clm("referral", "redeem", "ada", "--reference", "PAYOUT-2", db=db, ok=False)
    assert "no approved reward" in nothing.stderr
    # A whole referral at once, by the referred contact: eve's own $10, still held.
    rejected = clm("referral", "review", "--reject", "eve", "--note", "same person", db=db).stdout
    assert rejected.count("rejected by ops") == 1
    assert "no reward is held" in clm("referral", "review", db=db).stdout
    unknown = clm("referral", "review", "--reject", "nobody", db=db, ok=False)
    assert "no reward held for a referral of 'nobody'" in unknown.stderr
    report = json.loads(clm("referral", "report", "--json", db=db).stdout)
    assert report["referred"] == 2 and report["unbalanced"] == {}
    assert report["top_referrers"][0]["contact"] == "ada"
    assert report["top_referrers"][0]["successful"] == 2
    text = clm("referral", "report", db=db).stdout
    assert "referral rate: 66.7%" in text and "top referrers" in text


def test_checks_lists_the_builtin_fraud_checks(tmp_path):
    text = clm("referral", "checks", db=tmp_path / "x.db").stdout
    for name in ("self-referral", "shared-fingerprint", "monthly-cap", "burst"):
        assert name in text
