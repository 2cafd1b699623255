"""How fast does clm-engine ingest, next to writing the same rows to SQLite with no engine at all?

Run: ``.venv/bin/python benchmarks/ingest.py [--events 200000] [--batch-size 10000] [--repeat 3]``

Three ways of storing the same events, each into a fresh file in a temporary directory, each
with WAL and ``synchronous=NORMAL``:

a. ``sqlite3 executemany``: the floor. One transaction, a plain table (no key, no index),
   properties serialised with ``json.dumps``.
b. ``sqlite-utils insert_all``: the library the store is built on, same plain table, inside
   one ``db.atomic()`` transaction (it batches ~200 rows per INSERT itself).
c. ``Engine.ingest_many``: core only (``CLM_LOAD_PLUGINS=""``), one call (one transaction)
   per batch: validation, deduplication, reducers, contacts, stage transitions, two indexes.

The stream keeps its realistic disorder by default (~1% late events, which make the engine
re-fold the contact's history, and ~0.2% resent duplicates, which it must drop): that work is
part of what ingestion costs. The baselines get the unique events only, so every method stores
the same rows; ``--in-order`` turns the disorder off. Event generation is not timed: the events
are built in memory first. Each timing covers turning the event dicts into rows and writing
them, up to and including the commit. Nothing is profiled here; see the note at the end of the
output for how to profile (c).

Each method runs ``--repeat`` times, each into a fresh file, and its best time is kept: on a
shared machine a single run of the same code varies by a third, which hides any change smaller
than that; the best of three is steady to a few percent.

Two lines say what the targets are up against: the floor under every engine row (validating
the events with ``parse_event`` alone, no store, as a ratio to the raw insert), and where the
bytes the example rulesets add go, table by table, next to what the 1.5x size target leaves.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

# Core only: must be set before the engine loads its plugins (once per process).
os.environ["CLM_LOAD_PLUGINS"] = ""

import sqlite_utils

from clm_engine import Engine
from clm_engine.engine import parse_event
from clm_engine.synthetic import generate_events

_PLAIN_TABLE = (
    "CREATE TABLE events (id TEXT, contact_id TEXT, type TEXT, occurred_at TEXT, properties TEXT)"
)


def make_events(count: int, *, seed: int, in_order: bool) -> list[dict[str, Any]]:
    """The first ``count`` events of a stream with just enough contacts to reach ``count``."""
    disorder = {"late_fraction": 0.0, "duplicate_fraction": 0.0} if in_order else {}
    probe = 500
    per_contact = sum(1 for _ in generate_events(probe, seed=seed, **disorder)) / probe
    contacts = max(1, math.ceil(count / per_contact * 1.03))
    while True:
        events = list(islice(generate_events(contacts, seed=seed, **disorder), count))
        if len(events) == count:
            return events
        contacts = math.ceil(contacts * 1.1)


def unique(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    kept = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            kept.append(event)
    return kept


def raw_executemany(path: Path, events: list[dict[str, Any]], _batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(_PLAIN_TABLE)
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    began = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
        (
            (e["id"], e["contact_id"], e["type"], e["occurred_at"], dumps(e["properties"]))
            for e in events
        ),
    )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return elapsed


def sqlite_utils_insert_all(path: Path, events: list[dict[str, Any]], _batch: int) -> float:
    db = sqlite_utils.Database(path)
    db.enable_wal()
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(_PLAIN_TABLE)
    began = time.perf_counter()
    with db.atomic():
        db["events"].insert_all(events)  # the properties dict is stored as JSON text
    elapsed = time.perf_counter() - began
    db.close()
    return elapsed


CORE_EXAMPLES = ("churn-risk", "engagement-timers", "lead-scoring", "lifecycle-stages")
#: The example rulesets that use the core alone (the others need the plugins, which this
#: benchmark does not load, so that its figures stay comparable run to run).
RULESETS = [
    Path(__file__).resolve().parent.parent / "rulesets" / f"{name}.json" for name in CORE_EXAMPLES
]


def engine_with_rules(path: Path, events: list[dict[str, Any]], batch: int) -> float:
    """As ``engine_ingest_many``, with the example rulesets judging every event (and writing
    outbox rows and traces); the actions are not dispatched."""
    return engine_ingest_many(path, events, batch, rulesets=RULESETS)


#: What each engine run did, by its database file: the checks below read them.
TOTALS: dict[Path, dict[str, int]] = {}


def engine_with_rules_and_dispatch(path: Path, events: list[dict[str, Any]], batch: int) -> float:
    """As ``clm ingest --rulesets --dispatch``: the example rulesets judge every event, the
    internal actions they decide run inline, and after each batch ``Engine.tick()`` runs what
    is due (timed rules, delayed actions)."""
    return engine_ingest_many(path, events, batch, rulesets=RULESETS, dispatch=True)


def engine_ingest_many(
    path: Path,
    events: list[dict[str, Any]],
    batch: int,
    rulesets: list[Path] | None = None,
    dispatch: bool = False,
) -> float:
    engine = Engine(path, rulesets=rulesets)  # creates and migrates the file: not timed
    began = time.perf_counter()
    totals = {"ingested": 0, "duplicates": 0, "rejected": 0, "failed": 0, "actions": 0}
    for at in range(0, len(events), batch):
        result = engine.ingest_many(events[at : at + batch])
        totals["ingested"] += result.ingested
        totals["duplicates"] += result.duplicates
        totals["rejected"] += len(result.rejected)
        totals["failed"] += len(result.failed)
        totals["actions"] += getattr(result, "ran_inline", 0)
        if dispatch:
            totals["actions"] += engine.tick().dispatched.total
    elapsed = time.perf_counter() - began
    engine.close()
    TOTALS[path] = totals
    return elapsed


def count_rows(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def file_size(path: Path) -> int:
    """The database's bytes on disk, its WAL checkpointed in."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes per table with its indexes (empty when SQLite has no dbstat)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT coalesce(m.tbl_name, s.name), sum(s.pgsize) FROM dbstat s "
            "LEFT JOIN sqlite_schema m ON m.name = s.name GROUP BY 1"
        ).fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()
    return dict(rows)


def print_sizes(without: Path, with_rules: Path) -> None:
    """The database with the example rulesets against the same events without them."""
    bare, ruled = file_size(without), file_size(with_rules)
    tables, bare_tables = table_bytes(with_rules), table_bytes(without)
    traces = count_rows(with_rules, "SELECT count(*) FROM traces")
    seen = count_rows(with_rules, "SELECT coalesce(sum(length(seen)), 0) FROM traces")
    print()
    print(
        f"database size: {bare / 1e6:,.1f} MB without rules, {ruled / 1e6:,.1f} MB with the "
        f"example rulesets: ratio {ruled / bare:.2f}x (target 1.5x)"
    )
    if tables:
        grown = ", ".join(
            f"{name} {size / 1e6:,.1f}"
            for name, size in sorted(tables.items(), key=lambda item: -item[1])[:6]
        )
        share = tables.get("traces", 0) / max(1, ruled - bare)
        print(f"  largest tables with rules (MB, with their indexes): {grown}")
        print(
            f"  traces: {traces:,} rows, {seen / max(1, traces):,.0f} bytes of values each; "
            f"{share:.0%} of what the rulesets added"
        )
        # Where the rulesets' bytes go, against what the 1.5x target leaves them.
        added = {name: size - bare_tables.get(name, 0) for name, size in tables.items()}
        biggest = sorted(added.items(), key=lambda item: -item[1])[:5]
        print(
            f"  the rulesets added {(ruled - bare) / 1e6:,.1f} MB (the target leaves them "
            f"{bare / 2e6:,.1f}): "
            + ", ".join(f"{name} +{size / 1e6:,.1f}" for name, size in biggest)
            + f"; the events their actions emitted: {emitted_events(with_rules):,}"
        )


def emitted_events(path: Path) -> int:
    """Events the rulesets' actions emitted (``clm.score.add`` ...): they are part of the
    contacts' history, folded and re-folded like any other."""
    return count_rows(path, "SELECT count(*) FROM events WHERE origin IS NOT NULL")


def validation_only(events: list[dict[str, Any]], repeat: int) -> float:
    """The floor under every engine row: validating the events (``parse_event``), no store."""
    best = math.inf
    for _ in range(max(1, repeat)):
        began = time.perf_counter()
        for event in events:
            parse_event(event)
        best = min(best, time.perf_counter() - began)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to ingest")
    parser.add_argument(
        "--batch-size", type=int, default=10_000, help="events per ingest_many (as clm ingest)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each method; the best time is kept"
    )
    parser.add_argument(
        "--in-order", action="store_true", help="no late events and no duplicates in the stream"
    )
    args = parser.parse_args(argv)

    began = time.perf_counter()
    events = make_events(args.events, seed=args.seed, in_order=args.in_order)
    rows = unique(events)
    contacts = len({e["contact_id"] for e in events})
    # The harness holds every input event in memory at once (a real `clm ingest` streams
    # them), and Python's cyclic GC would rescan those million objects on every full
    # collection, charging the harness to whichever method runs. Freeze them out of its sight.
    gc.collect()
    gc.freeze()
    print(
        f"{len(events):,} events ({len(events) - len(rows):,} resent duplicates) for "
        f"{contacts:,} contacts, generated in {time.perf_counter() - began:.2f}s; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )

    methods: list[tuple[str, Callable[[Path, list[dict[str, Any]], int], float], list]] = [
        ("sqlite3 executemany", raw_executemany, rows),
        ("sqlite-utils insert_all", sqlite_utils_insert_all, rows),
        (f"clm-engine ingest_many ({args.batch_size:,}/tx)", engine_ingest_many, events),
    ]
    small_batch = args.batch_size // 4  # what an embedding host ingesting as it goes might use
    methods.append((f"clm-engine ingest_many ({small_batch:,}/tx)", engine_ingest_many, events))
    methods.append((f"  + example rulesets ({args.batch_size:,}/tx)", engine_with_rules, events))
    methods.append(
        (
            f"  + rulesets and dispatch ({args.batch_size:,}/tx)",
            engine_with_rules_and_dispatch,
            events,
        )
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="clm-bench-") as tmp:
        for index, (name, run, data) in enumerate(methods):
            batch = small_batch if index == 3 else args.batch_size
            times = []
            for attempt in range(max(1, args.repeat)):
                path = Path(tmp) / f"{index}-{attempt}.db"  # the last one's file is checked
                times.append(run(path, data, batch))
            results.append((name, len(data), min(times), path))
        baseline = results[0][2]
        print()
        print(f"best of {max(1, args.repeat)} runs of each method")
        print(f"{'method':<38} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'x raw':>7}")
        for name, count, seconds, _ in results:
            print(
                f"{name:<38} {count:>9,} {seconds:>8.2f} {count / seconds:>10,.0f} "
                f"{seconds / baseline:>7.1f}"
            )

        checked = validation_only(events, args.repeat)
        print(
            f"{'(floor: validating the events alone)':<38} {len(events):>9,} {checked:>8.2f} "
            f"{len(events) / checked:>10,.0f} {checked / baseline:>7.1f}"
        )
        ran = TOTALS[results[-1][3]]["actions"]
        print(f"{'':<38} actions run (inline and dispatched) in the last row: {ran:,}")
        engine_db = results[2][3]
        totals = TOTALS[engine_db]
        stored = count_rows(engine_db, "SELECT count(*) FROM events")
        distinct = count_rows(engine_db, "SELECT count(DISTINCT id) FROM events")
        stored_contacts = count_rows(engine_db, "SELECT count(*) FROM contacts")
        ok = (
            stored == distinct == len(rows)
            and stored_contacts == contacts
            and totals["rejected"] == totals["failed"] == 0
        )
        print()
        print(
            f"check: engine stored {stored:,} events ({distinct:,} distinct ids) of "
            f"{len(rows):,} unique sent, {stored_contacts:,} of {contacts:,} contacts; "
            f"ingested {totals['ingested']:,}, duplicates dropped {totals['duplicates']:,}, "
            f"rejected {totals['rejected']}, failed {totals['failed']} -> "
            f"{'OK' if ok else 'MISMATCH'}"
        )
        print_sizes(results[2][3], results[4][3])
    engine_rate = len(events) / results[2][2]
    print(
        f"target: at least 25,000 events/s with reducers at {args.batch_size:,} per "
        f"transaction: {engine_rate:,.0f}/s, {'met' if engine_rate >= 25_000 else 'NOT met'}; "
        f"{results[2][2] / baseline:.1f}x the raw insert's time, "
        f"{results[2][2] / checked:.1f}x validating the events alone"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
