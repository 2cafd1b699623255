"""How fast does ``clm serve`` take events over real HTTP?

Run: ``.venv/bin/python benchmarks/serve.py [--events 5000] [--clients 16] [--workers 1 2]
[--postgres]``

For each worker count, a fresh database and a real ``clm serve`` (uvicorn) on 127.0.0.1, core
plugins only and no rulesets, then ``--clients`` concurrent httpx clients (asyncio, one
connection each) send ``--events`` distinct events two ways: one event per request, and
batches of 100 per request. Reported per run: events/s, requests/s, and the p50 / p99
latency of a request, measured by the client (connection reuse, JSON encoding and the
response included). The load generator runs on the same machine and shares its CPUs: on a
small machine it takes a noticeable part of them, so read the figures as a floor. The engine
alone (``Engine.ingest_many`` in this process, same events, same sizes) is printed first, as
the baseline measured on the same machine at the same time.

With ``--postgres`` the same runs go to a throwaway PostgreSQL cluster (``tests/postgres.py``:
Debian's server binaries, a temporary folder, a loopback port, fsync off), a fresh database per
worker count, after the SQLite runs: where SQLite serialises the workers' writes through one
writer at a time, PostgreSQL takes them side by side, so events/s should grow with the workers
until the CPUs (shared here by the server, the database and the load generator) run out. The
ratio of each run to one worker's is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

# The tests' helpers: a real ``clm serve`` (tests/http_server.py), keys, a PostgreSQL cluster.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["CLM_LOAD_PLUGINS"] = ""  # core only, in this process and the servers it starts

from clm_engine import Engine
from tests.http_helpers import make_key
from tests.http_server import running

START = datetime(2026, 3, 1, tzinfo=UTC)


#: Contacts the events are spread over: live traffic comes from many contacts, and sixteen
#: clients' requests arrive in no particular order, so few contacts would make many of their
#: events late against each other (a late event re-folds its contact: ``benchmarks/ingest.py``
#: measures that).
CONTACTS = 100_000


def event(n: int, run: str, day: int = 0) -> dict:
    """The ``n``-th event of ``run``; each run its own ``day``, so that no run's events arrive
    late against an earlier run's on the same contacts."""
    return {
        "id": f"{run}-{n}",
        "contact_id": f"c{n * 7919 % CONTACTS}",
        "type": "purchase" if n % 4 == 0 else "page.viewed",
        "occurred_at": (START + timedelta(days=day, seconds=n)).isoformat(),
        "properties": {"amount": 10 + n % 90, "path": "/pricing"},
    }


async def load(url: str, token: str, bodies: list, clients: int) -> list[float]:
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def client() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
            while not queue.empty():
                body = queue.get_nowait()
                start = time.perf_counter()
                response = await http.post("/v1/events", json=body)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200 or response.json()["rejected"]:
                    raise SystemExit(f"unexpected answer {response.status_code}: {response.text}")

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def process_tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by process ``root`` and its live descendants,
    from ``/proc`` (Linux): where the machine's CPUs went during a run."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[
            stat.rindex(")") + 2 :
        ].split()  # after the command name, which may hold spaces
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    tree, frontier = {root}, [root]
    while frontier:
        found = children.get(frontier.pop(), [])
        tree.update(found)
        frontier.extend(found)
    return sum(times.get(pid, 0.0) for pid in tree)


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def run(
    workers: int, events: int, clients: int, folder: Path, db: Path | str, database_pid: int = 0
) -> dict[str, float]:
    """One server with ``workers`` over ``db`` (a SQLite file or a PostgreSQL URL): events/s
    for single events and for batches of 100. Where the CPUs went is printed beside: this
    process (the load generator), the server's processes, and ``database_pid``'s tree (the
    PostgreSQL server), in CPUs busy on average over the run."""
    Engine(db).close()  # created and migrated, so that the key can be added first
    token = make_key(db, "ingest", name="bench")
    log = folder / f"server-{workers}-{store_name(db)}.log"
    with running(db, workers, log) as server:

        def cpu_seconds() -> list[float]:
            return [
                time.process_time(),
                process_tree_cpu(server.process.pid),
                process_tree_cpu(database_pid) if database_pid else 0.0,
            ]

        rates: dict[str, float] = {}
        for label, size in (("single", 1), ("batch of 100", 100)):
            tag = f"w{workers}-{size}"
            items = [event(n, tag, day=size) for n in range(events)]
            bodies = [
                items[0 + i] if size == 1 else items[i : i + size]
                for i in range(0, len(items), size)
            ]
            before = cpu_seconds()
            start = time.perf_counter()
            latencies = asyncio.run(load(server.url, token, bodies, clients))
            elapsed = time.perf_counter() - start
            after = cpu_seconds()
            busy = [(now - was) / elapsed for now, was in zip(after, before, strict=True)]
            rates[label] = events / elapsed
            print(
                f"{store_name(db):<10} workers={workers}  {label:<13} "
                f"{events / elapsed:>9,.0f} events/s  "
                f"{len(bodies) / elapsed:>8,.0f} requests/s  "
                f"p50 {percentile(latencies, 50) * 1000:7.1f} ms  "
                f"p99 {percentile(latencies, 99) * 1000:7.1f} ms  "
                f"CPUs busy: load {busy[0]:.2f} server {busy[1]:.2f}"
                + (f" postgres {busy[2]:.2f}" if database_pid else "")
            )
    with Engine(db) as engine:
        stored = engine.store.read().existing_event_ids(
            [f"w{workers}-{size}-{n}" for size in (1, 100) for n in range(events)]
        )
    assert len(stored) == 2 * events, (len(stored), 2 * events)
    return rates


def store_name(db: Path | str) -> str:
    return "postgresql" if isinstance(db, str) else "sqlite"


def scaling(store: str, results: dict[int, dict[str, float]]) -> None:
    """Each worker count's events/s as a multiple of one worker's (or the fewest run)."""
    fewest = min(results)
    for workers, rates in sorted(results.items()):
        ratios = "  ".join(
            f"{label} {rate / results[fewest][label]:.2f}x" for label, rate in rates.items()
        )
        print(f"{store:<10} workers={workers} vs workers={fewest}: {ratios}")


def postgres_runs(args: argparse.Namespace, folder: Path) -> None:
    from tests.postgres import running_cluster

    with running_cluster() as cluster:
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        with cluster.database() as url:
            engine_alone(args.events, url)
        results = {}
        for workers in args.workers:
            with cluster.database() as url:
                results[workers] = run(
                    workers, args.events, args.clients, folder, url, database_pid=postmaster
                )
        scaling("postgresql", results)


def engine_alone(events: int, db: Path | str) -> None:
    """The same events through ``Engine.ingest_many`` in this process, one call per request's
    worth: what HTTP, JSON, keys and the writer queue add on top, on this machine, now."""
    with Engine(db) as engine:
        for label, size in (("single", 1), ("batch of 100", 100)):
            items = [event(n, f"alone-{size}", day=size) for n in range(events)]
            start = time.perf_counter()
            for i in range(0, len(items), size):
                engine.ingest_many(items[i : i + size])
            elapsed = time.perf_counter() - start
            print(
                f"{store_name(db):<10} engine alone  {label:<13} "
                f"{events / elapsed:>9,.0f} events/s (no HTTP)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--postgres", action="store_true", help="also on a throwaway PostgreSQL cluster"
    )
    args = parser.parse_args()
    print(
        f"{args.events:,} events per run, {args.clients} concurrent clients, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        engine_alone(args.events, folder / "alone.db")
        results = {
            workers: run(workers, args.events, args.clients, folder, folder / f"w{workers}.db")
            for workers in args.workers
        }
        scaling("sqlite", results)
        if args.postgres:
            postgres_runs(args, folder)
    print("every event stored -> OK")


if __name__ == "__main__":
    main()
