"""PostgreSQL next to SQLite, and PostgreSQL with 1, 2 and 4 workers: ratios in one run.

Run: ``.venv/bin/python benchmarks/postgres_workers.py [--events 40000] [--actions 12000]
[--contacts 100000]``

The benchmark starts its own throwaway PostgreSQL cluster (``tests/postgres.py``: Debian's
server binaries, a temporary folder, a loopback port, fsync off like the tests, so both stores
skip the disk flush: SQLite runs with ``synchronous=NORMAL`` in WAL) and a SQLite file beside
it. Core only (``CLM_LOAD_PLUGINS=""``).

1. **Ingest**: the same synthetic history (``clm_engine.synthetic``), ``Engine.ingest_many``
   in batches of ``--batch-size``, into each store: events/s, and PostgreSQL's share of SQLite's.
2. **Dispatch**: the same outbox (``--actions`` due ``score.add`` rows over the ingested
   contacts: each one folds an event into its contact) run to the end by one engine on SQLite,
   and by 1, 2 and 4 ``Engine.dispatch`` worker processes on PostgreSQL, each on a copy of the
   same database (``CREATE DATABASE ... TEMPLATE``): actions/s, and the ratio to one worker.
3. **A nightly cron ruleset** (one rule judging every contact, 10% of them match) on
   PostgreSQL over ``--contacts`` x 1, 2, 4 and 10 contacts (100k to 1,000,000 by default),
   each night's slot run in a fresh process: wall time, time per 100k contacts (linear: flat),
   and the process's peak RSS (bounded by the sweep's chunk of 1,000 contacts: flat too).
   Dispatching what the slot enqueued is part 2's measure, not counted here.

The machine's core count is printed: with 2 cores, more than two workers cannot add CPU, and
the database server shares those cores with them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ["CLM_LOAD_PLUGINS"] = ""  # core only, in this process and the workers it spawns
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/postgres.py

from clm_engine import Contact, Engine, VirtualClock
from clm_engine.models import utc_text
from clm_engine.synthetic import generate_events
from clm_engine.timed import TimeReport, run_schedules

NIGHTLY = {
    "ruleset": "nightly",
    "version": 1,
    "rules": [
        {
            "id": "win-back",
            "when": {"schedule": "0 2 * * *"},
            "if": {"fact": "contact.attributes.plan", "op": "eq", "value": "lapsed"},
            "then": [{"action": "tag.add", "with": {"tag": "win-back"}}],
        }
    ],
}


def ingest(target: str, events: list[dict[str, Any]], batch: int) -> float:
    with Engine(target) as engine:
        began = time.perf_counter()
        for at in range(0, len(events), batch):
            engine.ingest_many(events[at : at + batch])
        return time.perf_counter() - began


def fill_outbox(target: str, actions: int) -> None:
    """``actions`` due ``score.add`` rows, one for each of as many new contacts (not timed):
    rows of one contact are run one transaction after another whichever worker has them, so
    contacts shared by many rows would measure that, not how workers share the work."""
    make_contacts(target, actions, 0, prefix="d")
    with Engine(target, migrate=False) as engine:
        contacts = [f"d{n:08d}" for n in range(actions)]
        rows = [
            {
                "key": f"bench/{n}",
                "ruleset": "bench",
                "version": 1,
                "content_hash": "bench",
                "rule": "score",
                "contact_id": contacts[n % len(contacts)],
                "action": "score.add",
                "params": {"score": "bench", "points": 1},
                "priority": 0,
                "depth": 0,
                "due_at": "2020-01-01T00:00:00.000000Z",
                "created_at": "2020-01-01T00:00:00.000000Z",
            }
            for n in range(actions)
        ]
        with engine.store.write() as tx:
            tx.enqueue(rows)


def dispatch_worker(target: str, ready: Any, go: Any, done: Any) -> None:
    """One worker process: an engine that dispatches until nothing is due."""
    with Engine(target, migrate=False) as engine:
        ready.release()
        go.wait()
        total = 0
        while True:
            report = engine.dispatch(batch=200)
            total += report.total
            if not report.total:
                break
        done.put(total)


def dispatch_with(target: str, workers: int) -> tuple[float, int]:
    """Wall time for ``workers`` processes to empty the outbox, and the actions they ran."""
    spawn = multiprocessing.get_context("spawn")
    ready, go, done = spawn.Semaphore(0), spawn.Event(), spawn.Queue()
    procs = [
        spawn.Process(target=dispatch_worker, args=(target, ready, go, done))
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire()  # every worker imported and connected: that is not timed
    began = time.perf_counter()
    go.set()
    counts = [done.get() for _ in procs]
    elapsed = time.perf_counter() - began
    for proc in procs:
        proc.join()
    return elapsed, sum(counts)


def make_contacts(target: str, count: int, start: int, prefix: str = "n") -> None:
    """Contacts ``start`` .. ``start + count``, written straight through the store (not timed)."""
    with Engine(target, migrate=False) as engine:
        now = datetime(2026, 3, 1, tzinfo=UTC)
        for at in range(start, start + count, 5000):
            chunk = [
                Contact(
                    id=f"{prefix}{n:08d}",
                    email=f"n{n}@example.com",
                    attributes={"plan": "lapsed" if n % 10 == 0 else "pro", "n": n},
                    created_at=now,
                )
                for n in range(at, min(at + 5000, start + count))
            ]
            with engine.store.write() as tx:
                tx.upsert_contacts(chunk, updated_at=utc_text(now))


def nightly_run(target: str, rules: str, night: int, out: Any) -> None:
    """One night's slot, in a fresh process: its wall time, and its peak memory growth.

    The slot's run alone (``run_schedules``: every contact judged, the matches enqueued and
    traced); dispatching the actions it enqueued is part 2's measure, not this one's."""
    clock = VirtualClock(datetime(2026, 3, 1, 12, tzinfo=UTC) + timedelta(days=night))
    with Engine(target, clock=clock, rulesets=[rules], migrate=False) as engine:
        report = TimeReport()
        run_schedules(engine.store, engine.rulebook, clock.now(), report)  # first: clock starts
        clock.advance(timedelta(hours=15))  # 03:00 the next day: the 02:00 slot came due
        report = TimeReport()
        began = time.perf_counter()
        run_schedules(engine.store, engine.rulebook, clock.now(), report)
        elapsed = time.perf_counter() - began
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # the process's peak, KB
        out.put((elapsed, report.contacts_evaluated, report.enqueued, grown))


def nightly(target: str, rules: str, night: int) -> tuple[float, int, int, int]:
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    proc = spawn.Process(target=nightly_run, args=(target, rules, night, out))
    proc.start()
    result: tuple[float, int, int, int] = out.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events to ingest")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--actions", type=int, default=3000, help="due actions to dispatch")
    parser.add_argument(
        "--contacts", type=int, default=100_000, help="cron contacts, first night (x2, x4 after)"
    )
    parser.add_argument(
        "--factors", default="1,2,4,10", help="cron nights: contacts x each (1,000,000 at 10)"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    from tests.postgres import running_cluster

    # Stopped from outside: still stop the cluster (running_cluster's finally) on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cores = os.cpu_count()
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    print(f"machine: {platform.machine()}, {cores} cores, Python {platform.python_version()}")
    print(f"load average at the start: {load} (other work on the machine shares its cores)")
    events = list(generate_events(max(1, args.events // 20), seed=args.seed))[: args.events]
    with tempfile.TemporaryDirectory() as folder, running_cluster() as cluster:
        print(f"PostgreSQL cluster started in {cluster.started_in:.1f}s (fsync off, loopback)")
        lite = str(Path(folder) / "bench.db")
        cluster.admin("CREATE DATABASE bench_ingest TEMPLATE clm_template")
        pg = cluster.url("bench_ingest")

        print(f"\n1. ingest {len(events):,} events, batches of {args.batch_size:,}")
        lite_s = ingest(lite, events, args.batch_size)
        pg_s = ingest(pg, events, args.batch_size)
        lite_rate, pg_rate = len(events) / lite_s, len(events) / pg_s
        print(f"   SQLite      {lite_rate:>10,.0f} events/s")
        print(f"   PostgreSQL  {pg_rate:>10,.0f} events/s")
        print(f"   ratio PostgreSQL/SQLite ingest: {pg_rate / lite_rate:.2f}")

        print(f"\n2. dispatch {args.actions:,} due actions (score.add: each folds an event)")
        fill_outbox(lite, args.actions)
        fill_outbox(pg, args.actions)
        lite_s, ran = dispatch_with(lite, 1)
        assert ran == args.actions, f"SQLite ran {ran} of {args.actions}"
        lite_rate = ran / lite_s
        print(f"   SQLite, 1 process           {lite_rate:>8,.0f} actions/s")
        rates: dict[int, float] = {}
        for workers in (1, 2, 4):
            name = f"bench_dispatch_{workers}"
            cluster.admin(f"CREATE DATABASE {name} TEMPLATE bench_ingest")
            elapsed, ran = dispatch_with(cluster.url(name), workers)
            assert ran == args.actions, f"{workers} workers ran {ran} of {args.actions}"
            rates[workers] = ran / elapsed
            print(f"   PostgreSQL, {workers} worker(s)     {rates[workers]:>8,.0f} actions/s")
        print(f"   ratio PostgreSQL 1 worker/SQLite dispatch: {rates[1] / lite_rate:.2f}")
        print(
            f"   ratio 2 workers/1: {rates[2] / rates[1]:.2f}, 4 workers/1: "
            f"{rates[4] / rates[1]:.2f} (on {cores} cores shared with the server)"
        )

        factors = [int(f) for f in args.factors.split(",")]
        shown = ", ".join(str(f) for f in factors)
        print(f"\n3. a nightly cron ruleset on PostgreSQL, {args.contacts:,} contacts x {shown}")
        cluster.admin("CREATE DATABASE bench_cron TEMPLATE clm_template")
        cron = cluster.url("bench_cron")
        rules = Path(folder) / "nightly.json"
        rules.write_text(json.dumps(NIGHTLY))
        nightly(cron, str(rules), 0)  # starts the schedule's clock
        have, per_100k = 0, []
        for night, factor in enumerate(factors, start=1):
            make_contacts(cron, args.contacts * factor - have, have)
            have = args.contacts * factor
            elapsed, judged, enqueued, grown = nightly(cron, str(rules), night)
            assert judged == have, f"judged {judged} of {have}"
            assert enqueued == have // 10, f"enqueued {enqueued}, expected {have // 10}"
            per_100k.append(elapsed / have * 100_000)
            print(
                f"   {have:>9,} contacts: {elapsed:7.1f}s, {per_100k[-1]:5.1f}s per 100k, "
                f"{enqueued:,} actions, process peak RSS {grown / 1024:,.0f} MB"
            )
        print(
            f"   time per 100k, ratio {factors[-1]}x/1x: {per_100k[-1] / per_100k[0]:.2f} "
            "(1.00: linear)"
        )
    print("\nall counts checked -> OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
