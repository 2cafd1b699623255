"""The writer thread's group commit: requests that wait together are ingested together, in
groups as large as the store makes worthwhile (all of them on SQLite; on PostgreSQL few
enough contacts that they are locked one by one), and each answered with its own events."""

from __future__ import annotations

from clm_engine.engine import parse_event
from clm_engine.http.writer import SERIAL_GROUP, Writer
from clm_engine.store.postgres import FEW_CONTACTS


def request(n: int, size: int) -> list:
    return [
        parse_event(
            {
                "id": f"r{n}-{i}",
                "contact_id": f"c{n}-{i}",
                "type": "signup",
                "occurred_at": "2026-03-01T10:00:00Z",
            }
        )
        for i in range(size)
    ]


def test_requests_waiting_together_commit_in_groups_the_store_can_take(engine):
    writer = Writer(engine)
    expected = FEW_CONTACTS if engine.store.concurrent_writers else SERIAL_GROUP
    assert writer.max_events == expected
    # Submitted before the thread starts: all of them wait together.
    requests = [request(n, 100) for n in range(10)] + [request(10, FEW_CONTACTS + 50)]
    futures = [writer.submit(events) for events in requests]
    writer.start()
    try:
        answers = [future.result(timeout=60) for future in futures]
    finally:
        writer.stop()
    for events, outcomes in zip(requests, answers, strict=True):
        assert len(outcomes) == len(events)
        assert {outcome.status for outcome in outcomes} == {"ingested"}
    if engine.store.concurrent_writers:
        # Two requests of 100 per group (a third would pass 256), the large one alone.
        assert writer.batches == 6
    else:
        assert writer.batches == 1
    ids = [e.id for events in requests for e in events]
    assert engine.store.read().existing_event_ids(ids) == set(ids)
