"""CAC and ROMI from acquisition spend that arrives as a file (CSV) besides events, on both
stores, against answers worked out by hand; a bad file is refused with its lines named."""

from __future__ import annotations

import json

import pytest

from clm_engine import Engine, VirtualClock
from clm_engine.analytics.figures import kpis
from clm_engine.analytics.spend import SpendFileError, load_spend
from clm_engine.store.analytics_dialect import analytics_db

from .helpers import store_in
from .test_analytics_kpis import HISTORY, NOW, STAGES

SPEND = (
    "date,channel,amount,currency\n"
    "2026-03-01,ads,100.00,EUR\n"
    "2026-03-15,email,30,EUR\n"
    "\n"
    "2026-04-01,ads,999,EUR\n"  # on the report's day: not before it, not counted
)


def test_spend_from_a_file_and_events(tmp_path, on_store):
    spend_file = tmp_path / "spend.csv"
    spend_file.write_text(SPEND)
    rules = tmp_path / "stages.json"
    rules.write_text(json.dumps(STAGES))
    with Engine(store_in(tmp_path), clock=VirtualClock(NOW), rulesets=[rules]) as engine:
        engine.ingest_many(sorted(HISTORY, key=lambda e: e["occurred_at"]))
        spend = load_spend(spend_file)
        figures = kpis(analytics_db(engine.store), now=NOW, stages=engine.stages, spend=spend)
    acquisition = figures["acquisition"]
    assert (acquisition["spend_file"], acquisition["currency"]) == (str(spend_file), "EUR")
    by_channel = {c["channel"]: c for c in acquisition["channels"]}
    # ads: 200 from events + 100 from the file; a and b came from ads and bought (150 + 30).
    assert by_channel["ads"] == {
        "channel": "ads",
        "spend": 300,
        "customers": 2,
        "revenue": 180,
        "cac": 150.0,
        "romi": -0.4,
    }
    # email: only in the file, nobody acquired; seo: events only (50), c never bought.
    assert (by_channel["email"]["spend"], by_channel["email"]["cac"]) == (30, None)
    assert by_channel["email"]["romi"] == -1.0
    assert by_channel["seo"]["spend"] == 50
    # all channels: 380 spent for 2 customers worth 180.
    assert acquisition["total"] == {
        "channel": None,
        "spend": 380,
        "customers": 2,
        "revenue": 180,
        "cac": 190.0,
        "romi": -0.5263,
    }


def test_a_bad_spend_file_names_each_line(tmp_path):
    bad = tmp_path / "spend.csv"
    bad.write_text(
        "date,channel,amount,currency\n"
        "2026-13-01,ads,10,EUR\n"
        "2026-01-02,ads,1.234,EUR\n"
        "2026-01-03,,5,EUR\n"
        "2026-01-04,ads,5,eur\n"
        "2026-01-05,ads,5\n"
        "2026-01-06,ads,-5,EUR\n"
        "2026-01-07,ads,NaN,EUR\n"
        "2026-01-08,ads,1e400,EUR\n"
        "2026-01-09,tv,5,USD\n"
    )
    with pytest.raises(SpendFileError) as caught:
        load_spend(bad)
    message = str(caught.value)
    for line, what in (
        (2, "date: expected YYYY-MM-DD"),
        (3, "amount:"),
        (4, "channel: expected a name"),
        (5, "currency: expected an ISO 4217 code"),
        (6, "expected 4 columns"),
        (7, "amount: expected zero or more"),
        (8, "amount:"),
        (9, "amount:"),
        (10, "currency: expected EUR (as on line 3)"),
    ):
        assert f"{bad}:{line}: {what}" in message, (line, message)
    header = tmp_path / "header.csv"
    header.write_text("day,channel,amount\n")
    with pytest.raises(SpendFileError, match=r"header.csv:1: expected the header"):
        load_spend(header)


def test_clm_report_with_a_spend_file(run, tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in HISTORY) + "\n")
    assert run("ingest", str(events)).exit_code == 0
    spend = tmp_path / "spend.csv"
    spend.write_text(SPEND)
    done = run("report", "--spend", str(spend), "--json")
    assert done.exit_code == 0, done.output
    channels = json.loads(done.output)["analytics"]["acquisition"]["channels"]
    assert {c["channel"] for c in channels} == {"ads", "email", "seo"}
    people = run("report", "--spend", str(spend))
    assert "acquisition" in people.output and "all channels" in people.output
    bad = tmp_path / "bad.csv"
    bad.write_text("date,channel,amount,currency\n2026-01-01,ads,x,EUR\n")
    refused = run("report", "--spend", str(bad))
    assert refused.exit_code == 1
    assert f"{bad}:2: amount:" in refused.output and "Traceback" not in refused.output
