"""Faults on purpose, on PostgreSQL: three `clm run` workers share one database with no
leader while one of them is SIGKILLed again and again, as delayed emails and delayed internal
actions fall due.

What must hold: every internal action done exactly once (scores, and the events they emit,
counted); every email reaches the real SMTP server at least once, with its outbox key as its
Message-ID; a message is repeated only in the documented window (sent, not yet recorded when
its worker died: at most ``--record-every`` per kill), which also shows that two live workers
never sent the same row.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from clm_email.message import message_id

from conftest import signup, use_smtp

CONTACTS = 150  # 4 outbox rows each (tests/test_pg_workers.py claims 4,000 at once)
LATER = {"after": {"minutes": 1}}
RULES = {
    "ruleset": "shared",
    "version": 1,
    "rules": [
        {
            "id": "welcome",
            "when": {"event": "signup"},
            "then": [
                {
                    "action": "email.send",
                    "with": {"template": "onboarding-welcome", "category": "transactional"},
                    **LATER,
                },
                {"action": "score.add", "with": {"score": "welcomed", "points": 1}, **LATER},
                {"action": "event.emit", "with": {"type": "welcomed"}, **LATER},
            ],
        },
        {
            "id": "after-welcome",
            "when": {"event": "welcomed"},
            "then": [{"action": "score.add", "with": {"score": "followed", "points": 1}}],
        },
    ],
}


def clm(*args: str) -> subprocess.Popen:
    env = {**os.environ, "CLM_LOAD_PLUGINS": "email"}
    return subprocess.Popen(
        [sys.executable, "-m", "clm_engine", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def statuses(url: str) -> dict[str, int]:
    return dict(query(url, "SELECT status, count(*) FROM outbox GROUP BY status"))


@pytest.mark.slow
def test_three_workers_one_killed_again_and_again_lose_and_double_nothing(
    mail, smtp_server, monkeypatch, postgres_url
):
    use_smtp(monkeypatch, smtp_server)
    record_every = 2
    monkeypatch.setenv("CLM_RECORD_EVERY", str(record_every))
    (mail.rules / "shared.json").write_text(json.dumps(RULES))
    # Signed up a minute ago or so: each contact's delayed actions fall due over the next
    # eight seconds, while the workers run and one of them keeps dying.
    start = datetime.now(UTC) - timedelta(minutes=1)
    events = mail.root / "signups.jsonl"
    with events.open("w") as out:
        for n in range(CONTACTS):
            at = start + timedelta(seconds=8 * n / CONTACTS)
            out.write(json.dumps({**signup(f"c{n:04d}", at=at.isoformat()), "id": f"s{n}"}) + "\n")
    ingest = clm("ingest", str(events), "--db", postgres_url, "--rulesets", str(mail.rules))
    assert ingest.wait(timeout=120) == 0, ingest.stderr.read()
    assert statuses(postgres_url) == {"pending": CONTACTS * 3}

    run = ["run", "--db", postgres_url, "--rulesets", str(mail.rules), "--interval", "0.05"]
    run += ["--lease", "5"]
    workers = [clm(*run) for _ in range(3)]
    rng = random.Random(20261204)
    kills = 0
    deadline = time.monotonic() + 150  # a loaded machine; about 20 s on a quiet one
    try:
        while statuses(postgres_url).get("pending", 0) and kills < 8:
            time.sleep(rng.uniform(0.5, 1.5))
            victim = workers[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            kills += 1
            workers[0] = clm(*run)
        while statuses(postgres_url).get("pending", 0):
            assert time.monotonic() < deadline, f"still pending: {statuses(postgres_url)}"
            time.sleep(0.1)  # rows a dead worker held come back when their lease ends
        time.sleep(1.5)  # past start-up, so that SIGTERM meets its handler
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            code, errors = proc.wait(timeout=30), proc.stderr.read()
            assert code in (0, -signal.SIGTERM), errors
            assert b"Traceback" not in errors, errors
    assert kills >= 3, f"only {kills} kills landed while work was pending"

    # Internal actions: exactly once (their effects commit with the row marked done).
    assert statuses(postgres_url) == {"done": CONTACTS * 4}
    scores = query(
        postgres_url,
        "SELECT data->'scores'->>'welcomed', data->'scores'->>'followed', count(*) "
        "FROM contacts GROUP BY 1, 2",
    )
    assert scores == [("1.0", "1.0", CONTACTS)]  # each score added once
    effects = query(
        postgres_url,
        "SELECT type, count(*), count(DISTINCT id) FROM events WHERE type <> 'signup' "
        "GROUP BY type ORDER BY type",
    )
    assert effects == [
        ("clm.score.add", CONTACTS * 2, CONTACTS * 2),
        ("email.sent", CONTACTS, CONTACTS),  # what the send emitted: recorded once
        ("welcomed", CONTACTS, CONTACTS),
    ]
    # Emails: at least once, keyed, repeated only within the window a kill leaves.
    keys = [k for (k,) in query(postgres_url, "SELECT key FROM outbox WHERE action = 'email.send'")]
    ids = [m.message["Message-ID"] for m in smtp_server.messages]
    domain = ids[0].rstrip(">").rpartition("@")[2]
    assert set(ids) == {message_id(key, domain) for key in keys}  # each arrived, keyed
    repeats = len(ids) - len(set(ids))
    assert repeats <= kills * record_every, f"{repeats} repeats for {kills} kills"
    # The work was shared: rows were claimed by more than one worker.
    claimed = query(postgres_url, "SELECT count(DISTINCT worker) FROM outbox")
    assert claimed[0][0] >= 2
    print(f"{kills} SIGKILLs among 3 workers: {CONTACTS * 4} rows, {repeats} emails sent twice")
