"""`clm run --clock virtual --speed N`: the live engine, real SMTP sends, a week in seconds.

The process under test is the real `clm run` (a subprocess), sending through a real SMTP
server (aiosmtpd on 127.0.0.1); only its clock runs fast. A production database (marked by
`clm migrate --production`, or $CLM_ENVIRONMENT=production) is refused before anything runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest

from conftest import signup, use_smtp

ONBOARDING = ["onboarding-welcome", "onboarding-tips", "onboarding-case-study", "onboarding-offer"]


def clm(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "clm_engine", *args],
        env={**os.environ, "CLM_LOAD_PLUGINS": "email", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(*args: str, **env: str) -> subprocess.CompletedProcess:
    proc = clm(*args, **env)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def drips_ruleset(mail) -> None:
    start = {"action": "email.start_sequence", "with": {"sequence": "onboarding"}}
    mail.ruleset({"id": "onboarding-start", "when": {"event": "signup"}, "then": [start]})


@pytest.mark.slow
def test_a_week_of_drips_reaches_a_real_smtp_server_in_seconds(mail, smtp_server, monkeypatch):
    use_smtp(monkeypatch, smtp_server)
    drips_ruleset(mail)
    db = str(mail.root / "clm.db")
    now = datetime.now(UTC).replace(microsecond=0)
    events = mail.root / "signup.jsonl"
    events.write_text(json.dumps(signup(at=now.isoformat().replace("+00:00", "Z"))) + "\n")
    ingested = finished("ingest", str(events), "--db", db, "--rulesets", str(mail.rules))
    assert ingested.returncode == 0, ingested.stderr

    began = time.monotonic()
    run = clm(
        *("run", "--db", db, "--rulesets", str(mail.rules), "--interval", "0.1"),
        *("--clock", "virtual", "--speed", "200000"),  # 200,000 s (2.3 days) per real second
    )
    try:
        while len(smtp_server.messages) < len(ONBOARDING) and time.monotonic() - began < 90:
            time.sleep(0.05)
        took = time.monotonic() - began
    finally:
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert "VIRTUAL clock" in out and "200000x real time" in out

    subjects = [m.message["Subject"] for m in smtp_server.messages]
    assert len(smtp_server.messages) == len(ONBOARDING), subjects
    assert all(m.rcpt_tos == ["c1@example.com"] for m in smtp_server.messages)
    # The drip spans 9 days of its own time (days 0, 2, 5 and 9) and arrived in seconds.
    dates = [parsedate_to_datetime(m.message["Date"]) for m in smtp_server.messages]
    assert dates == sorted(dates)
    assert dates[-1] - dates[0] > timedelta(days=8), dates
    assert took < 30, f"a 9-day drip took {took:.1f} real seconds"
    assert subjects == [
        "Welcome to Acme, Ada",
        "Ada, three tips to get more out of Acme",
        "How Northwind cut reporting time by 60%",
        "Ada, 20% off your first year of Acme Pro",
    ]
    # The virtual time is recorded when the run stops: a restart resumes there, never earlier,
    # so never before a message already sent (a stop between two pumps once left it earlier).
    status = json.loads(finished("status", "--db", db, "--json").stdout)
    reached = datetime.fromisoformat(status["virtual_clock"]["value"]["now"])
    assert reached >= dates[-1] > now + timedelta(days=8)
    earlier = finished(
        "run", "--db", db, "--clock", "virtual", "--speed", "10", "--start", "2026-01-01"
    )
    assert earlier.returncode == 1 and "time never moves backward" in earlier.stderr


def test_a_virtual_clock_refuses_a_production_database(mail, smtp_server, monkeypatch):
    use_smtp(monkeypatch, smtp_server)
    drips_ruleset(mail)
    db = str(mail.root / "prod.db")
    marked = finished("migrate", "--db", db, "--production")
    assert marked.returncode == 0 and "marked production" in marked.stdout
    virtual = ("run", "--db", db, "--rulesets", str(mail.rules), "--clock", "virtual")
    refused = finished(*virtual, "--speed", "1000")
    assert refused.returncode == 1
    assert "refusing to run on a virtual clock against a production database" in refused.stderr
    assert "clm migrate --production" in refused.stderr
    assert finished("migrate", "--db", db, "--not-production").returncode == 0
    by_env = finished(*virtual, "--speed", "1000", CLM_ENVIRONMENT="production")
    assert by_env.returncode == 1 and "$CLM_ENVIRONMENT is 'production'" in by_env.stderr
    no_speed = finished(*virtual)
    assert no_speed.returncode == 1 and "--clock virtual needs --speed" in no_speed.stderr
    assert smtp_server.messages == []
