"""How fast is the analytics report, next to the same figures by hand-written plain SQL?

Run: ``.venv/bin/python benchmarks/report.py [--contacts 100000] [--months 3]``

Builds a history with the synthetic generator (about 15 events per contact over three months,
so 100,000 contacts make about 1.5 million events), ingested through the engine with the
example lifecycle-stages ruleset (so stage transitions and traces exist), then refreshes the
analytics (models and RFM) once. Building is not timed. Then, in the same process, each
repeated and the best of three kept:

a. ``kpis()``: every figure of ``clm report``'s analytics section (the Python API), all by
   aggregate queries in the store;
b. plain SQL: the same headline figures written by hand as the simplest SQL that gives them
   (one query per figure, no CTE layering), fetched and nothing else.

It prints both times, their ratio, and the peak of Python memory allocated while computing
the report (``tracemalloc``), at the full size and at a quarter of it: bounded means the
peak does not grow with the number of contacts (the report holds aggregates, never rows per
contact).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ["CLM_LOAD_PLUGINS"] = ""  # core only, before the engine loads plugins

from clm_engine import Engine, VirtualClock
from clm_engine.analytics import refresh
from clm_engine.analytics.figures import kpis
from clm_engine.store.analytics_dialect import Dialect, analytics_db, dialect_of
from clm_engine.synthetic import generate_events

RULESET = Path(__file__).resolve().parent.parent / "rulesets" / "lifecycle-stages.json"
NOW = datetime(2026, 9, 1, tzinfo=UTC)


def plain_queries(d: Dialect) -> dict[str, str]:
    """The hand-written queries: the headline figures, each the plainest SQL that gives it
    (a JSON field read with the store's own function: ``d.number`` / ``d.text``)."""
    amount, score = d.number("properties", "amount"), d.number("properties", "score")
    signed_up = d.text("c.data", "metrics.signed_up_at")
    month = (
        "(CAST(substr(occurred_at, 1, 4) AS INTEGER) * 12 "
        "+ CAST(substr(occurred_at, 6, 2) AS INTEGER))"
    )
    return {
        "purchases": f"SELECT count(DISTINCT contact_id), count(*), sum({amount}) FROM events "
        "WHERE type = 'purchase'",
        "repeat customers": "SELECT count(*) FROM (SELECT contact_id FROM events "
        "WHERE type = 'purchase' GROUP BY contact_id HAVING count(*) >= 2) AS repeaters",
        "orders by month": f"SELECT substr(occurred_at, 1, 7), count(*), sum({amount}) "
        "FROM events WHERE type = 'purchase' GROUP BY 1",
        "stage reach": "SELECT to_stage, count(DISTINCT contact_id) FROM stage_transitions "
        "GROUP BY to_stage",
        "stage flows": "SELECT from_stage, to_stage, count(*) FROM stage_transitions GROUP BY 1, 2",
        "cohorts": f"SELECT substr({signed_up}, 1, 7), substr(e.occurred_at, 1, 7), "
        "count(DISTINCT c.id) FROM contacts c JOIN events e ON e.contact_id = c.id "
        "WHERE e.type NOT LIKE 'clm.%' GROUP BY 1, 2",
        "nps by month": f"SELECT substr(occurred_at, 1, 7), count(*), "
        f"count(CASE WHEN {score} >= 9 THEN 1 END), count(CASE WHEN {score} <= 6 THEN 1 END) "
        "FROM events WHERE type = 'nps.answered' GROUP BY 1",
        "email by template": f"SELECT {d.text('properties', 'template')}, type, "
        "count(DISTINCT contact_id) FROM events WHERE type IN ('email.sent', 'email.opened', "
        "'email.clicked', 'unsubscribed', 'email.bounced') GROUP BY 1, 2",
        "activation": f"SELECT count(*) FROM contacts c WHERE {signed_up} IS NOT NULL",
        "referral": "SELECT count(DISTINCT contact_id) FROM events WHERE type = 'referral.signup'",
        "rfm": "SELECT r, f, count(*) FROM analytics_rfm GROUP BY r, f",
        "clv": "SELECT count(*), sum(predicted_clv) FROM analytics_customers",
        "rule fires": "SELECT substr(at, 1, 10), rule, count(*) FROM traces "
        "WHERE decision = 'fired' GROUP BY 1, 2",
        "acquisition": f"SELECT {d.text('data', 'attributes.channel')}, count(*), "
        f"sum({d.number('data', 'metrics.total_spent')}) FROM contacts "
        f"WHERE {d.text('data', 'metrics.first_order_at')} IS NOT NULL GROUP BY 1",
        "spend": f"SELECT {d.text('properties', 'channel')}, sum({amount}) FROM events "
        "WHERE type IN ('marketing.spend', 'spend') GROUP BY 1",
        "health": f"SELECT c.id, count(e.contact_id), {d.number('c.data', 'metrics.nps_score')} "
        "FROM contacts c LEFT JOIN events e ON e.contact_id = c.id AND e.occurred_at >= "
        "'2026-06-03' AND e.type IN ('login', 'feature.used', 'page.viewed', 'support.ticket') "
        "GROUP BY c.id",
        "journey moves": "SELECT cause, from_stage, to_stage, count(*) FROM stage_transitions "
        "GROUP BY 1, 2, 3",
        "journey touchpoints": "SELECT ruleset, rule, count(*), count(DISTINCT contact_id) "
        "FROM traces WHERE decision = 'fired' GROUP BY 1, 2",
        "contacts by stage": "SELECT stage, count(*) FROM contacts GROUP BY stage",
        "csat by month": f"SELECT substr(occurred_at, 1, 7), count(*), "
        f"count(CASE WHEN {score} >= 4 THEN 1 END) FROM events "
        "WHERE type = 'csat.answered' GROUP BY 1",
        "churn": f"WITH active AS (SELECT DISTINCT contact_id, {month} AS m FROM events "
        "WHERE type NOT LIKE 'clm.%') SELECT a.m, count(*), count(b.contact_id) "
        "FROM active a LEFT JOIN active b ON b.contact_id = a.contact_id AND b.m = a.m + 1 "
        "GROUP BY a.m",
        "yearly retention": "SELECT count(*), count(b.contact_id) FROM (SELECT DISTINCT "
        "contact_id FROM events WHERE type = 'purchase' AND occurred_at < '2026-07-01') a "
        "LEFT JOIN (SELECT DISTINCT contact_id FROM events WHERE type = 'purchase' "
        "AND occurred_at >= '2026-07-01') b ON b.contact_id = a.contact_id",
        "time in stage": f"SELECT to_stage, avg({d.days('left_at', 'at')}) FROM (SELECT "
        "to_stage, at, lead(at) OVER (PARTITION BY contact_id ORDER BY at) AS left_at "
        "FROM stage_transitions) AS stays GROUP BY to_stage",
        "activated": f"SELECT count(DISTINCT c.id) FROM events e JOIN contacts c "
        f"ON c.id = e.contact_id WHERE e.type = 'purchase' AND {signed_up} IS NOT NULL "
        f"AND e.occurred_at >= {signed_up} AND {d.days('e.occurred_at', signed_up)} <= 30",
    }


#: The index whose worth the benchmark measures (``--index``): the type-filtered scans of
#: ``events`` (purchases, surveys, email, spend, health's usage) become range scans.
INDEX = "CREATE INDEX IF NOT EXISTS events_by_type_time ON events (type, occurred_at)"


def build(folder: Path, contacts: int, months: int, *, index: bool = False) -> tuple[Path, int]:
    path = folder / f"report-{contacts}{'-indexed' if index else ''}.db"
    events = 0
    with Engine(path, clock=VirtualClock(NOW), rulesets=[RULESET]) as engine:
        if index:
            engine.store.db.execute(INDEX)
        batch: list[dict[str, Any]] = []
        for event in generate_events(contacts, months=months, seed=11):
            batch.append(event)
            if len(batch) == 20_000:
                events += engine.ingest_many(batch).ingested
                batch = []
        events += engine.ingest_many(batch).ingested
        refresh(engine, record_changes=False)
    return path, events


def best_of(runs: int, work: Callable[[], Any]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(path: Path | str) -> tuple[float, float, int]:
    """Report and plain SQL times (best of three) and the report's peak Python memory, on the
    store at ``path`` (a SQLite file or a postgresql:// URL)."""
    with Engine(path, clock=VirtualClock(NOW)) as engine:
        db = analytics_db(engine.store)
        queries = list(plain_queries(dialect_of(db)).values())
        book = engine.prepare_rulesets([RULESET]).book
        rulesets = [loaded.ruleset for loaded in book.rulesets]

        def report() -> Any:
            return kpis(db, now=NOW, stages=book.stages, rulesets=rulesets)

        def plain() -> Any:
            return [db.execute(sql).fetchall() for sql in queries]

        report_time = best_of(3, report)
        plain_time = best_of(3, plain)
        tracemalloc.start()
        report()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return report_time, plain_time, peak


def add_index(path: Path, *, analyze: bool = False) -> None:
    """The index; with ``analyze``, fresh statistics too (``ANALYZE``): without them SQLite's
    planner takes the index for joins where the contact index is the right one."""
    with sqlite3.connect(path) as conn:
        conn.execute(INDEX)
        if analyze:
            conn.execute("ANALYZE")


def on_postgres(paths: dict[int, Path], sizes: tuple[int, int]) -> None:
    """The same measurements on PostgreSQL, each history copied there (``clm copy``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from clm_engine.store.copy import copy_to_postgres
    from tests.postgres import running_cluster

    peaks = {}
    with running_cluster() as cluster:
        for contacts in sizes:
            with cluster.database() as url:
                copy_to_postgres(str(paths[contacts]), url)
                report_time, plain_time, peak = measure(url)
                peaks[contacts] = peak
                print(
                    f"PostgreSQL, {contacts:,} contacts: report {report_time:.2f} s, plain SQL "
                    f"{plain_time:.2f} s, ratio {report_time / plain_time:.2f}x, peak Python "
                    f"memory {peak / 1e3:,.0f} KB",
                    flush=True,
                )
    print(f"PostgreSQL peak memory ratio 4x/1x contacts: {peaks[sizes[1]] / peaks[sizes[0]]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument(
        "--index",
        action="store_true",
        help="Also measure with an index on events (type, occurred_at): the report's times "
        "and the ingestion's (the quarter-size history built again with the index).",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="Also measure on PostgreSQL: a throwaway cluster (tests/postgres.py, Debian's "
        "server binaries), each history copied into it with clm copy.",
    )
    args = parser.parse_args()
    sizes = (max(1, args.contacts // 4), args.contacts)
    with tempfile.TemporaryDirectory() as folder:
        peaks, paths, built = {}, {}, {}
        for contacts in sizes:
            started = time.perf_counter()
            path, events = build(Path(folder), contacts, args.months)
            built[contacts] = time.perf_counter() - started
            paths[contacts] = path
            report_time, plain_time, peak = measure(path)
            peaks[contacts] = peak
            print(
                f"{contacts:,} contacts, {events:,} events (built in {built[contacts]:.0f} s): "
                f"report {report_time:.2f} s, plain SQL {plain_time:.2f} s, "
                f"ratio {report_time / plain_time:.2f}x, peak Python memory {peak / 1e3:,.0f} KB",
                flush=True,
            )
        print(f"peak memory ratio 4x/1x contacts: {peaks[sizes[1]] / peaks[sizes[0]]:.2f}")
        if args.postgres:
            on_postgres(paths, sizes)
        if not args.index:
            return
        for analyze in (False, True):
            for contacts in sizes:
                add_index(paths[contacts], analyze=analyze)
                report_time, plain_time, _ = measure(paths[contacts])
                print(
                    f"with the index{' and ANALYZE' if analyze else ''}, {contacts:,} contacts: "
                    f"report {report_time:.2f} s, plain SQL {plain_time:.2f} s, "
                    f"ratio {report_time / plain_time:.2f}x",
                    flush=True,
                )
        started = time.perf_counter()
        build(Path(folder), sizes[0], args.months, index=True)
        indexed = time.perf_counter() - started
        print(
            f"building {sizes[0]:,} contacts with the index: {indexed:.0f} s "
            f"(without: {built[sizes[0]]:.0f} s)"
        )


if __name__ == "__main__":
    main()
