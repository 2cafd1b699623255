"""Many workers on one PostgreSQL database, in threads of one process (each with a store and a
pool of its own, as separate processes would have): claims never overlap, a contact is held
by one write at a time, a deadlock is run again, cron slots and anchors run once.

``tests/test_pg_worker_faults.py`` does the same with real ``clm run`` processes killed by
SIGKILL.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from clm_engine import Engine, VirtualClock
from clm_engine.store import WriteConflict, retry_conflicts
from clm_engine.store.postgres import PostgresStore


def event(contact_id: str, type_: str, at: datetime, *, id: str | None = None) -> dict:
    return {
        "id": id or f"{type_}-{contact_id}",
        "contact_id": contact_id,
        "type": type_,
        "occurred_at": at.isoformat(),
        "properties": {},
    }


def rows(n: int, due: str = "2026-03-01T10:00:00.000000Z") -> list[dict]:
    return [
        {
            "key": f"k{i:05d}",
            "ruleset": "rs",
            "version": 1,
            "content_hash": "h",
            "rule": "r",
            "contact_id": f"c{i % 97}",
            "action": "tag.add",
            "params": {"tag": "x"},
            "priority": i % 3,
            "depth": 0,
            "due_at": due,
            "created_at": due,
        }
        for i in range(n)
    ]


def test_workers_claiming_at_once_never_claim_the_same_row(postgres_url):
    total, workers = 4000, 4
    first = PostgresStore(postgres_url)
    with first.write() as tx:
        tx.enqueue(rows(total))
    first.close()
    now, lease = "2026-03-01T10:00:00.000000Z", "2026-03-01T10:05:00.000000Z"
    start = threading.Barrier(workers)

    def work(n: int) -> list[int]:
        store = PostgresStore(postgres_url, pool_size=2)
        mine: list[int] = []
        start.wait()
        try:
            while True:
                with store.write(concurrent=True) as tx:
                    batch = tx.claim_due_actions(now, 50, lease_until=lease, worker=f"w{n}")
                if not batch:
                    return mine
                mine.extend(r.seq for r in batch)
        finally:
            store.close()

    with ThreadPoolExecutor(workers) as pool:
        claimed = list(pool.map(work, range(workers)))
    everything = [seq for mine in claimed for seq in mine]
    assert len(everything) == total  # every row claimed ...
    assert len(set(everything)) == total  # ... by exactly one worker
    assert sum(1 for mine in claimed if mine) >= 2  # and the work was shared
    check = PostgresStore(postgres_url)
    try:
        owners = dict(check._all("SELECT seq, worker FROM outbox"))
    finally:
        check.close()
    for n, mine in enumerate(claimed):
        assert {owners[seq] for seq in mine} <= {f"w{n}"}


def test_a_contact_is_held_by_one_concurrent_write_at_a_time(postgres_url):
    holder, other = PostgresStore(postgres_url), PostgresStore(postgres_url)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.write(concurrent=True) as tx:
            tx.lock_contacts(["c1"])
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        with other.write(concurrent=True) as tx:  # others go on beside it ...
            assert tx.lock_contacts(["c1", "c2"], wait=False) == {"c2"}  # ... but not on c1
    finally:
        release.set()
        thread.join()
    with other.write(concurrent=True) as tx:
        assert tx.lock_contacts(["c1"], wait=False) == {"c1"}  # released with its commit
    holder.close()
    other.close()


def test_two_writes_that_lock_contacts_crosswise_conflict_and_run_again(postgres_url):
    stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    both = threading.Barrier(2)
    conflicts: list[int] = []

    def cross(n: int) -> str:
        first, second = ("a", "b") if n == 0 else ("b", "a")
        attempts = 0

        def once() -> str:
            nonlocal attempts
            attempts += 1
            with stores[n].write(concurrent=True) as tx:
                tx.lock_contacts([first])
                if attempts == 1:
                    both.wait(10)  # both hold their first contact: now each wants the other's
                tx.lock_contacts([second])
            return f"{first}{second}"

        try:
            return retry_conflicts(once)
        finally:
            conflicts.append(attempts)

    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(cross, range(2)))
    assert done == ["ab", "ba"]  # both got through ...
    assert sorted(conflicts) == [1, 2]  # ... one of them on its second attempt
    for store in stores:
        store.close()


def test_a_deadlock_is_a_write_conflict(postgres_url):
    stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    both = threading.Barrier(2)

    def cross(n: int) -> str:
        try:
            with stores[n].write(concurrent=True) as tx:
                tx.lock_contacts(["x" if n else "y"])
                both.wait(10)
                tx.lock_contacts(["y" if n else "x"])
        except WriteConflict as error:
            return str(error)
        return "ok"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(cross, range(2)), key=lambda o: o != "ok")
    assert outcomes[0] == "ok"  # PostgreSQL let one through, and rolled the other back
    assert "rolled back, run it again" in outcomes[1] and "deadlock" in outcomes[1]
    for store in stores:
        store.close()


LATER = {"after": {"minutes": 1}}
PINGS = {
    "ruleset": "shared",
    "version": 1,
    "rules": [
        {
            "id": "ping",
            "when": {"event": "ping"},
            "then": [
                {"action": "score.add", "with": {"score": "pings", "points": 1}, **LATER},
                {"action": "event.emit", "with": {"type": "pong"}, **LATER},
            ],
        },
        {
            "id": "pong",
            "when": {"event": "pong"},
            "then": [{"action": "score.add", "with": {"score": "pongs", "points": 1}, **LATER}],
        },
    ],
}


def test_engines_dispatching_at_once_run_every_action_once(postgres_url, tmp_path):
    rules = tmp_path / "shared.json"
    rules.write_text(json.dumps(PINGS))
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    contacts, pings = 60, 10
    with Engine(postgres_url, clock=VirtualClock(start), rulesets=[rules]) as engine:
        engine.ingest_many(
            event(f"c{c:02d}", "ping", start, id=f"p{c}-{n}")
            for c in range(contacts)
            for n in range(pings)
        )
    later = start + timedelta(minutes=5)  # pings' actions are due; pongs' come due after them
    engines = [
        Engine(postgres_url, clock=VirtualClock(later), rulesets=[rules], migrate=False)
        for _ in range(3)
    ]
    for one in engines:
        one.dispatch_group = 7  # many small groups: more chances to meet
    go = threading.Barrier(len(engines))

    def run(one: Engine) -> Counter[str]:
        go.wait(10)
        done: Counter[str] = Counter()
        for _ in range(3):  # the pongs' scores fall due once the pings' emits ran
            one.clock.advance(timedelta(minutes=2))  # type: ignore[attr-defined]  # a VirtualClock here
            done.update(one.dispatch(batch=40).outcomes)
        return done

    with ThreadPoolExecutor(len(engines)) as pool:
        outcomes = list(pool.map(run, engines))
    try:
        total = sum(outcomes, Counter())
        left = engines[0].store._all(  # type: ignore[attr-defined]  # PostgresStore's own query helper, in a test
            "SELECT key, status, due_at, lease_until, worker FROM outbox WHERE status <> 'done'"
        )
        assert left == []
        assert total == {"done": contacts * pings * 3}  # score, emit, and the pong's score
        assert sum(1 for o in outcomes if o) >= 2  # shared between the engines
        store = engines[0].store
        for c in range(contacts):
            scores = store.get_contact(f"c{c:02d}").scores  # type: ignore[union-attr]  # the contact exists: it was just ingested
            assert (scores["pings"], scores["pongs"]) == (pings, pings)
        workers = dict(store._all("SELECT worker, count(*) FROM outbox GROUP BY worker"))  # type: ignore[attr-defined]  # PostgresStore's own query helper, in a test
        assert set(workers) <= {e.worker for e in engines} | {None}
    finally:
        for one in engines:
            one.close()


DAILY = {
    "ruleset": "nightly",
    "version": 1,
    "rules": [
        {
            "id": "digest",
            "when": {"schedule": "0 2 * * *"},
            "then": [{"action": "tag.add", "with": {"tag": "digested"}}],
        }
    ],
}


@pytest.mark.parametrize("workers", [1, 3])
def test_a_cron_slot_runs_once_over_every_contact_however_many_workers_tick(
    postgres_url, tmp_path, workers
):
    rules = tmp_path / "nightly.json"
    rules.write_text(json.dumps(DAILY))
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    contacts = 2500  # three chunks of the sweep
    with Engine(postgres_url, clock=VirtualClock(start), rulesets=[rules]) as engine:
        engine.ingest_many(event(f"c{c:05d}", "signup", start) for c in range(contacts))
        engine.tick()  # first sight: the schedule's clock starts now
    night = datetime(2026, 3, 2, 2, 30, tzinfo=UTC)
    engines = [
        Engine(postgres_url, clock=VirtualClock(night), rulesets=[rules], migrate=False)
        for _ in range(workers)
    ]
    go = threading.Barrier(workers)

    def tick(one: Engine) -> int:
        go.wait(10)
        return one.tick().contacts_evaluated

    try:
        with ThreadPoolExecutor(workers) as pool:
            evaluated = list(pool.map(tick, engines))
        assert sum(evaluated) == contacts  # each contact judged once, by one worker or another
        store = engines[0].store
        traces = store._all(  # type: ignore[attr-defined]  # PostgresStore's own query helper, in a test
            "SELECT contact_id, count(*) FROM traces WHERE rule = 'digest' GROUP BY contact_id"
        )
        assert len(traces) == contacts and {n for _, n in traces} == {1}
        assert store.read().take_schedule("nightly", "digest", "UTC") == (
            "2026-03-02T02:00:00.000000Z",
            None,
        )
    finally:
        for one in engines:
            one.close()


def test_the_pool_size_comes_from_the_environment_and_is_checked(postgres_url, monkeypatch):
    from clm_engine import StoreError
    from clm_engine.store.postgres import DEFAULT_POOL_SIZE, pool_size_from_env

    monkeypatch.delenv("CLM_PG_POOL_SIZE", raising=False)
    assert pool_size_from_env() == DEFAULT_POOL_SIZE
    monkeypatch.setenv("CLM_PG_POOL_SIZE", "2")
    store = PostgresStore(postgres_url)
    try:
        assert store.pool.max_size == 2
    finally:
        store.close()
    for wrong in ("0", "-3", "two", "1e3", "1001", "4 workers"):
        monkeypatch.setenv("CLM_PG_POOL_SIZE", wrong)
        with pytest.raises(StoreError, match="CLM_PG_POOL_SIZE must be a whole number"):
            pool_size_from_env()


def test_a_large_batch_locks_buckets_of_contacts_not_each_one(postgres_url):
    big = [f"c{n:05d}" for n in range(5000)]  # an ingest batch of 5,000 contacts
    holder, other = PostgresStore(postgres_url), PostgresStore(postgres_url)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.write(concurrent=True) as tx:
            assert tx.lock_contacts(big) == set(big)
            slots = tx._one(  # type: ignore[attr-defined]  # PostgresTransaction's own query helper, in a test
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"
            )[0]
            assert slots <= 1024 + 1  # its buckets, and the shared write lock
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(20)
        with other.write(concurrent=True) as tx:  # a contact in the batch, one not in it
            assert tx.lock_contacts(["c00007", "zz-not-in-the-batch"], wait=False) <= {
                "zz-not-in-the-batch"
            }
            assert "c00007" not in tx.lock_contacts(["c00007"], wait=False)
    finally:
        release.set()
        thread.join()
    with other.write(concurrent=True) as tx:
        assert tx.lock_contacts(big, wait=False) == set(big)  # all free again
    holder.close()
    other.close()
