"""Faults on purpose: `clm run` SIGKILLed while it sends through a real SMTP server.

An email is an external effect: it is claimed under a lease, sent with no lock held and
recorded after, with the outcomes of a batch of sends written together (``--record-every``).
Whatever moment the process dies at, every message must reach the server at least once, each
row must end done exactly once, and a repeat is possible only for a message that was sent and
not yet recorded when the process died: at most one batch per kill (one message with
``--record-every 1``), with the same Message-ID, so the receiver can drop it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import send_rule, signup, use_smtp

CONTACTS = 200


def clm(*args: str) -> subprocess.Popen:
    env = {**os.environ, "CLM_LOAD_PLUGINS": "email"}
    return subprocess.Popen(
        [sys.executable, "-m", "clm_engine", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def statuses(db) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM outbox WHERE action = 'email.send' GROUP BY status"
        )
        return dict(rows.fetchall())


@pytest.mark.parametrize("record_every", [1, 4])
def test_clm_run_killed_while_sending_loses_nothing_and_repeats_only_its_last_batch(
    mail, smtp_server, monkeypatch, record_every
):
    use_smtp(monkeypatch, smtp_server)
    monkeypatch.setenv("CLM_RECORD_EVERY", str(record_every))
    mail.ruleset(send_rule(category="transactional"))
    events = mail.root / "signups.jsonl"
    events.write_text("".join(json.dumps(signup(f"c{n:03d}")) + "\n" for n in range(CONTACTS)))
    db = mail.root / "clm.db"
    run = ["run", "--db", str(db), "--rulesets", str(mail.rules), "--interval", "0.05"]
    run += ["--lease", "2"]
    ingest = clm("ingest", str(events), "--db", str(db), "--rulesets", str(mail.rules))
    assert ingest.wait(timeout=120) == 0, ingest.stderr.read()

    rng = random.Random(20261123)
    kills = 0
    while len(smtp_server.messages) < CONTACTS * 0.7 and kills < 8:
        before = len(smtp_server.messages)
        proc = clm(*run)
        limit = time.monotonic() + 20
        while len(smtp_server.messages) == before and time.monotonic() < limit:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.08))  # somewhere in the middle of its sends
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
    assert kills >= 3, "the sends finished before enough kills landed: make them more"
    assert statuses(db).get("pending", 0) > 0  # killed with work outstanding

    final = clm(*run)
    deadline = time.monotonic() + 120
    while statuses(db) != {"done": CONTACTS} and time.monotonic() < deadline:
        time.sleep(0.1)  # rows a dead worker had claimed come back when their lease ends
    final.send_signal(signal.SIGTERM)
    assert final.wait(timeout=30) == 0, final.stderr.read()

    assert statuses(db) == {"done": CONTACTS}
    ids = [m.message["Message-ID"] for m in smtp_server.messages]
    assert len(set(ids)) == CONTACTS  # every message arrived
    repeats = len(ids) - len(set(ids))
    # A kill repeats at most the sends whose outcomes were not written yet: one batch.
    assert repeats <= kills * record_every, f"{repeats} repeats for {kills} kills"
    with sqlite3.connect(db) as conn:
        logged = conn.execute(
            "SELECT count(*), count(DISTINCT contact_id) FROM email_messages WHERE status = 'sent'"
        ).fetchone()
    assert logged == (CONTACTS, CONTACTS)  # one log row per message, repeats or not
    print(f"{kills} SIGKILLs while sending: {CONTACTS} messages, {repeats} sent twice")
