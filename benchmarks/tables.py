"""What the plugins' table API costs next to raw SQL on SQLite: a typical insert and select.

The warranty plugin's shapes: an offer inserted (12 columns, ``on_conflict="ignore"``) and a
contact's products read by an index (11 columns, one contact's few rows), each through
``tx.tables[...]`` and through the same statement on the store's ``sqlite3`` connection, in the
same write transaction. Prints microseconds per call and the difference.

    python benchmarks/tables.py --rows 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from clm_warranty.facts import FACT_COLUMNS  # what the facts read: the query measured
from clm_warranty.products import TABLES

from clm_engine.store import open_store

COLUMNS = (
    "offer_id",
    "contact_id",
    "product_id",
    "kind",
    "sku",
    "months",
    "price_minor",
    "currency",
    "offered_at",
    "expires_at",
    "ruleset",
    "rule",
)


def offer(n: int, prefix: str) -> dict[str, object]:
    return {
        "offer_id": f"{prefix}{n}",
        "contact_id": f"c{n % 1000}",
        "product_id": f"p{n}",
        "kind": "extension",
        "sku": "CAM-1",
        "months": 12,
        "price_minor": 3900,
        "currency": "USD",
        "offered_at": "2026-03-01T10:00:00.000000Z",
        "expires_at": "2026-03-31T10:00:00.000000Z",
        "ruleset": "warranty-offers",
        "rule": "extension-60d",
    }


def raw(conn: Any, sql: str, contacts: list[str]) -> float:
    start = time.perf_counter()
    for contact in contacts:
        cursor = conn.execute(sql, [contact])
        names = [d[0] for d in cursor.description]
        [dict(zip(names, r, strict=True)) for r in cursor]
    return time.perf_counter() - start


def api(products: Any, contacts: list[str]) -> float:
    start = time.perf_counter()
    for contact in contacts:
        products.rows({"contact_id": contact}, columns=FACT_COLUMNS, order_by=["product_id"])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000, help="Inserts and selects timed.")
    parser.add_argument("--repeat", type=int, default=3, help="Best of this many runs.")
    args = parser.parse_args()
    n = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(str(Path(tmp) / "bench.db"))
        store.migrate(TABLES)
        insert_sql = (
            f"INSERT INTO warranty_offers ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(COLUMNS))}) ON CONFLICT DO NOTHING"
        )
        select_sql = (
            f"SELECT {', '.join(FACT_COLUMNS)} FROM warranty_products WHERE contact_id = ? "
            "ORDER BY product_id"
        )
        with store.write() as tx:
            tx.tables["warranty_products"].insert_many(
                {
                    "product_id": f"p{i}",
                    "contact_id": f"c{i % (n // 3 or 1)}",
                    "sku": "CAM-1",
                    "purchased_at": "2026-01-01T00:00:00.000000Z",
                    "has_service_agreement": False,
                }
                for i in range(n)
            )
        results: dict[str, float] = {}
        for run in range(args.repeat):
            with store.write() as tx:
                conn = tx.conn  # type: ignore[attr-defined]  # the SQLite store's, for the baseline
                table = tx.tables["warranty_offers"]
                rows = [offer(i, f"raw{run}-") for i in range(n)]
                start = time.perf_counter()
                for row in rows:
                    conn.execute(insert_sql, [row[c] for c in COLUMNS])
                raw_insert = time.perf_counter() - start
                rows = [offer(i, f"api{run}-") for i in range(n)]
                start = time.perf_counter()
                for row in rows:
                    table.insert(row, on_conflict="ignore")
                api_insert = time.perf_counter() - start
                products = tx.tables["warranty_products"]
                contacts = [f"c{i % (n // 3 or 1)}" for i in range(n)]

                # Alternate which goes first: the second runs on a warmer cache.
                if run % 2:
                    api_select = api(products, contacts)
                    raw_select = raw(conn, select_sql, contacts)
                else:
                    raw_select = raw(conn, select_sql, contacts)
                    api_select = api(products, contacts)
            for name, seconds in (
                ("raw insert", raw_insert),
                ("api insert", api_insert),
                ("raw select", raw_select),
                ("api select", api_select),
            ):
                results[name] = min(results.get(name, float("inf")), seconds / n * 1e6)
        store.close()
    for name, micros in results.items():
        print(f"{name:12} {micros:7.2f} µs/call")
    print(
        f"table API overhead: insert +{results['api insert'] - results['raw insert']:.2f} µs, "
        f"select +{results['api select'] - results['raw select']:.2f} µs "
        f"({n:,} calls each, best of {args.repeat})"
    )


if __name__ == "__main__":
    main()
