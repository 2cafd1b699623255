"""How fast does ``clm serve`` take events over real HTTP?

Run: ``.venv/bin/python benchmarks/serve.py [--events 5000] [--clients 16] [--workers 1 2]``

For each worker count, a fresh database and a real ``clm serve`` (uvicorn) on 127.0.0.1, core
plugins only and no rulesets, then ``--clients`` concurrent httpx clients (asyncio, one
connection each) send ``--events`` distinct events two ways: one event per request, and
batches of 100 per request. Reported per run: events/s, requests/s, and the p50 / p99
latency of a request, measured by the client (connection reuse, JSON encoding and the
response included). The load generator runs on the same machine and shares its CPUs: on a
small machine it takes a noticeable part of them, so read the figures as a floor. The engine
alone (``Engine.ingest_many`` in this process, same events, same sizes) is printed first, as
the baseline measured on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from clm_engine import Engine
from clm_engine.http.auth import hash_token, new_token

START = datetime(2026, 3, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def event(n: int, run: str) -> dict:
    return {
        "id": f"{run}-{n}",
        "contact_id": f"c{n % 1000}",
        "type": "purchase" if n % 4 == 0 else "page.viewed",
        # In time order, as live traffic mostly is (a late event re-folds its contact).
        "occurred_at": (START + timedelta(seconds=n)).isoformat(),
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


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def run(workers: int, events: int, clients: int, folder: Path) -> None:
    db = folder / f"bench-{workers}.db"
    Engine(db).close()
    key_id, token = new_token()
    with Engine(db) as engine:
        engine.store.create_api_key(
            key_id,
            name="bench",
            scope="ingest",
            token_hash=hash_token(token),
            created_at="2026-01-01",
        )
    port = free_port()
    log = (folder / f"server-{workers}.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clm_engine",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
        env={**os.environ, "CLM_LOAD_PLUGINS": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("clm serve did not start")
            time.sleep(0.1)
        for label, size in (("single", 1), ("batch of 100", 100)):
            tag = f"w{workers}-{size}"
            items = [event(n, tag) for n in range(events)]
            bodies = [
                items[0 + i] if size == 1 else items[i : i + size]
                for i in range(0, len(items), size)
            ]
            start = time.perf_counter()
            latencies = asyncio.run(load(url, token, bodies, clients))
            elapsed = time.perf_counter() - start
            print(
                f"workers={workers}  {label:<13} {events / elapsed:>9,.0f} events/s  "
                f"{len(bodies) / elapsed:>8,.0f} requests/s  "
                f"p50 {percentile(latencies, 50) * 1000:7.1f} ms  "
                f"p99 {percentile(latencies, 99) * 1000:7.1f} ms"
            )
        with Engine(db) as engine:
            stored = engine.store.read().existing_event_ids(
                [f"w{workers}-{size}-{n}" for size in (1, 100) for n in range(events)]
            )
        assert len(stored) == 2 * events, (len(stored), 2 * events)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        log.close()


def engine_alone(events: int, folder: Path) -> None:
    """The same events through ``Engine.ingest_many`` in this process, one call per request's
    worth: what HTTP, JSON, keys and the writer queue add on top, on this machine, now."""
    with Engine(folder / "alone.db") as engine:
        for label, size in (("single", 1), ("batch of 100", 100)):
            items = [event(n, f"alone-{size}") for n in range(events)]
            start = time.perf_counter()
            for i in range(0, len(items), size):
                engine.ingest_many(items[i : i + size])
            elapsed = time.perf_counter() - start
            print(f"engine alone {label:<13} {events / elapsed:>9,.0f} events/s (no HTTP)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(
        f"{args.events:,} events per run, {args.clients} concurrent clients, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory() as name:
        engine_alone(args.events, Path(name))
        for workers in args.workers:
            run(workers, args.events, args.clients, Path(name))
    print("every event stored -> OK")


if __name__ == "__main__":
    main()
