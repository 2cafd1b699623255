"""Engines opened at once from many threads, as a threaded web server's first requests do.

Plugin loading happens once per process, so the test runs in a fresh one (a subprocess): in
this test process the plugin manager was loaded long ago and the race could not happen.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THREADS, CONTACTS, EVENTS = 32, 3, 4  # per thread: 3 contacts of 4 events each

SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    from clm_engine import Engine

    db, rulesets, threads, contacts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    start = threading.Barrier(threads)
    errors, ingested = [], []

    def events(n):
        for k in range(contacts):
            who, day = f"t{n:02d}-c{k}", f"2026-11-{k + 1:02d}"
            yield {"id": f"{who}-1", "contact_id": who, "type": "signup",
                   "occurred_at": f"{day}T09:00:00Z",
                   "properties": {"email": f"{who}@example.com", "consent": {"email": True}}}
            yield {"id": f"{who}-2", "contact_id": who, "type": "page.viewed",
                   "occurred_at": f"{day}T09:05:00Z", "properties": {"path": "/pricing"}}
            yield {"id": f"{who}-3", "contact_id": who, "type": "email.clicked",
                   "occurred_at": f"{day}T09:10:00Z", "properties": {}}
            yield {"id": f"{who}-4", "contact_id": who, "type": "purchase",
                   "occurred_at": f"{day}T09:15:00Z", "properties": {"amount": 49.0}}

    def work(n):
        try:
            start.wait()  # every thread opens its engine at the same moment
            with Engine(db, rulesets=[rulesets]) as engine:
                result = engine.ingest_many(events(n))
                if result.rejected or result.failed:
                    raise RuntimeError(f"rejected {result.rejected}, failed {result.failed}")
                ingested.append(result.ingested)
        except BaseException as error:
            errors.append(f"thread {n}: {type(error).__name__}: {error}")

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps({"errors": errors, "ingested": sum(ingested)}))
    """
)


@pytest.mark.slow
def test_engines_opened_at_once_from_many_threads_all_get_every_plugin(tmp_path):
    db = tmp_path / "shared.db"
    env = {**os.environ, "CLM_LOAD_PLUGINS": "email,referral,warranty,sms,loyalty,webhook"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(db),
            str(ROOT / "rulesets"),
            str(THREADS),
            str(CONTACTS),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    expected = THREADS * CONTACTS * EVENTS
    assert report["ingested"] == expected
    with sqlite3.connect(db) as conn:
        stored = conn.execute(  # the events sent, not the effects actions ran inline recorded
            "SELECT count(*), count(DISTINCT contact_id) FROM events WHERE origin IS NULL"
        ).fetchone()
        orders = conn.execute(
            "SELECT sum(json_extract(data, '$.metrics.orders_count')) FROM contacts"
        ).fetchone()
        drips = conn.execute(
            "SELECT count(*) FROM outbox WHERE action = 'email.start_sequence'"
        ).fetchone()
        # The onboarding drip's experiment holds some signups out (docs/experiments.md).
        (held_out,) = conn.execute(
            "SELECT count(*) FROM experiment_exposures WHERE holdout"
        ).fetchone()
    assert stored == (expected, THREADS * CONTACTS)
    assert orders == (THREADS * CONTACTS,)
    # Every signup started the onboarding drip (or was held out of it by the drip's
    # experiment): each engine knew the email plugin's actions.
    assert drips[0] + held_out == THREADS * CONTACTS
    assert drips[0] > 0 and held_out < THREADS * CONTACTS / 4
