"""``clm serve`` for real: uvicorn with several worker processes on one SQLite file, concurrent
httpx clients on 127.0.0.1, resends and invalid events; then SIGKILL mid-load."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import pytest

from clm_engine import Engine
from tests.http_helpers import make_key
from tests.http_server import running

pytestmark = pytest.mark.slow


def valid(n: int) -> dict:
    return {
        "id": f"ev-{n}",
        "contact_id": f"c{n % 97}",
        "type": "purchase" if n % 3 == 0 else "page.viewed",
        "occurred_at": f"2026-0{n % 9 + 1}-{n % 28 + 1:02d}T10:{n % 60:02d}:00Z",
        "properties": {"amount": n % 50 + 1, "n": n},
    }


def invalid(n: int) -> dict:
    return {"id": f"bad-{n}", "contact_id": f"c{n}", "occurred_at": "2026-01-01T00:00:00Z"}


async def send_all(url: str, token: str, requests: list[list[dict]], clients: int) -> list:
    """Send every request (a list of events; one alone goes as an object), ``clients`` at a
    time; returns (request, status, answer) for each."""
    queue: asyncio.Queue[list[dict]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    answers: list = []
    headers = {"Authorization": f"Bearer {token}"}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
            while not queue.empty():
                request = queue.get_nowait()
                body = request[0] if len(request) == 1 else request
                response = await http.post("/v1/events", json=body)
                answers.append((request, response.status_code, response.json()))

    await asyncio.gather(*(client() for _ in range(clients)))
    return answers


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path):
    """Where the server keeps its state: one SQLite file, or a PostgreSQL database."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    db = tmp_path / "clm.db"
    Engine(db).close()
    return db


def test_workers_store_every_valid_event_exactly_once(target, tmp_path):
    """Three workers on one SQLite file (one writer at a time, never 'database is locked'),
    or on one PostgreSQL database (writing side by side)."""
    db = target
    rng = random.Random(16)
    events = [valid(n) for n in range(3000)]
    resent = rng.sample(events, 400)
    bad = [invalid(n) for n in range(150)]
    items = events + resent + bad
    rng.shuffle(items)
    requests: list[list[dict]] = []
    while items:
        size = rng.choice([1, 1, 1, 5, 20, 100])
        requests.append(items[:size])
        items = items[size:]
    token = make_key(db, "ingest")
    with running(db, 3, tmp_path / "server.log") as server:
        answers = asyncio.run(send_all(server.url, token, requests, clients=24))
    assert len(answers) == len(requests)
    assert {status for _, status, _ in answers} == {200}, "no 5xx, no 4xx: reasons per event"
    ingested: dict[str, int] = {}
    for request, _, answer in answers:
        assert len(answer["results"]) == len(request)
        for event, result in zip(request, answer["results"], strict=True):
            if event["id"].startswith("bad-"):
                assert result["status"] == "rejected"
                assert "type: is required" in result["reason"]
            else:
                assert result["status"] in ("ingested", "duplicate"), result
                ingested[event["id"]] = ingested.get(event["id"], 0) + (
                    result["status"] == "ingested"
                )
    assert len(ingested) == 3000
    assert set(ingested.values()) == {1}, "each valid event answered 'ingested' exactly once"
    with Engine(db) as engine:
        stored = engine.store.read().existing_event_ids([e["id"] for e in events])
        assert len(stored) == 3000
        assert not engine.store.read().existing_event_ids([e["id"] for e in bad])
        assert engine.store.read().count_events("c0", "purchase", None) == sum(
            1 for e in events if e["contact_id"] == "c0" and e["type"] == "purchase"
        )
    log = (tmp_path / "server.log").read_text()
    assert "database is locked" not in log
    assert "Traceback" not in log


def test_killing_the_server_mid_load_loses_no_acknowledged_event(target, tmp_path):
    db = target
    token = make_key(db, "ingest")
    acknowledged: set[str] = set()
    with running(db, 2, tmp_path / "server.log") as server:
        killed = asyncio.Event()

        async def load(stop_at: float) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            counter = iter(range(10**9))

            async def client() -> None:
                async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
                    while time.monotonic() < stop_at:
                        batch = [valid(next(counter)) for _ in range(random.choice([1, 10]))]
                        try:
                            response = await http.post("/v1/events", json=batch, timeout=5)
                        except httpx.HTTPError:
                            if killed.is_set():
                                return  # the server is gone
                            continue  # slow (a loaded machine): not acknowledged, go on
                        if response.status_code == 200:
                            for event, result in zip(
                                batch, response.json()["results"], strict=True
                            ):
                                if result["status"] in ("ingested", "duplicate"):
                                    acknowledged.add(event["id"])

            async def killer() -> None:
                # Mid-load by what the server has done, not by the clock: a loaded machine
                # may take seconds to answer the first request.
                while len(acknowledged) < 50 and time.monotonic() < stop_at - 5:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)
                server.kill()
                killed.set()

            await asyncio.gather(killer(), *(client() for _ in range(16)))

        asyncio.run(load(time.monotonic() + 90))
    assert len(acknowledged) > 20
    with Engine(db) as engine:
        stored = engine.store.read().existing_event_ids(sorted(acknowledged))
    assert stored == acknowledged


def _counter(text: str, name: str, outcome: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _ruleset(version: int) -> str:
    rule = {
        "id": "tag",
        "when": {"event": "signup"},
        "then": [{"action": "tag.add", "with": {"tag": f"v{version}"}}],
    }
    return json.dumps({"ruleset": "live", "version": version, "rules": [rule]})


def test_metrics_and_reloads_reach_every_worker(tmp_path):
    """With --workers N: /metrics counts what every worker did, whichever answers; a reload
    through one worker is followed by the others before their next request."""
    db, rules = tmp_path / "clm.db", tmp_path / "rules"
    rules.mkdir()
    (rules / "live.json").write_text(_ruleset(1))
    Engine(db).close()
    ingest, read, admin = (make_key(db, scope) for scope in ("ingest", "read", "admin"))
    events = [valid(n) for n in range(300)]
    with running(db, 2, tmp_path / "server.log", "--rulesets", str(rules)) as server:
        asyncio.run(send_all(server.url, ingest, [[e] for e in events], clients=8))

        def health() -> dict:
            answer = httpx.get(
                f"{server.url}/v1/admin/health",
                headers={"Authorization": f"Bearer {admin}", "Connection": "close"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            return answer.json()

        for _ in range(5):  # whichever worker answers, the total is every worker's
            text = httpx.get(
                f"{server.url}/metrics",
                headers={"Authorization": f"Bearer {read}", "Connection": "close"},
                timeout=30,
            ).text
            assert _counter(text, "clm_events_total", "ingested") == 300
        pids = set()
        for _ in range(60):
            pids.add(health()["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, "the kernel sent every connection to one worker"

        (rules / "live.json").write_text(_ruleset(2))
        reloaded = httpx.post(
            f"{server.url}/v1/admin/reload",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=60,
        )
        assert reloaded.status_code == 200 and reloaded.json()["loaded"], reloaded.text
        time.sleep(2.5)  # RELOAD_CHECK_SECONDS: the other worker looks before a request
        seen: dict[int, int] = {}
        for _ in range(80):
            answer = health()
            seen[answer["pid"]] = answer["rulesets"][0]["version"]
            if len(seen) == 2 and set(seen.values()) == {2}:
                break
        assert seen == {pid: 2 for pid in pids}


def test_every_worker_writes_its_access_lines(tmp_path):
    """A worker is a fresh process: logging set up in the parent does not reach it, so the
    set-up goes to uvicorn, which applies it in each worker. One JSON line per request."""
    db, log = tmp_path / "clm.db", tmp_path / "server.log"
    with running(db, 2, log, "--log-level", "info") as server:
        for _ in range(60):
            answer = httpx.get(f"{server.url}/healthz", headers={"Connection": "close"})
            assert answer.status_code == 200
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    lines = [line for line in lines if line["path"] == "/healthz"]  # not the start's /readyz
    assert len(lines) == 60
    assert {(line["method"], line["route"], line["status"]) for line in lines} == {
        ("GET", "/healthz", 200)
    }
    assert len({line["pid"] for line in lines}) == 2, "both workers' lines are there"
