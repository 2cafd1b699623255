"""The core's cross-channel log and policies (``clm_engine.channels``), on both stores.

The channel plugins' end-to-end tests (email, SMS and webhooks under one cap) are in
``plugins/sms/tests/test_cross_channel.py``; here: the log, the erasure, and the arithmetic
of caps and quiet hours held against a brute-force search.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clm_engine import Engine, VirtualClock, channels
from tests.helpers import store_in

START = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def sent(n: int, type_: str = "sms.sent", at: str = "2026-11-02T12:00:00Z", **properties):
    return {
        "id": f"sent-{n}",
        "contact_id": "c1",
        "type": type_,
        "occurred_at": at,
        "properties": {"category": "marketing", **properties},
    }


def test_sent_events_are_logged_once_and_erased_with_the_contact(tmp_path, on_store):
    with Engine(store_in(tmp_path), clock=VirtualClock(START)) as engine:
        engine.ingest({"contact_id": "c1", "type": "signup", "occurred_at": "2026-11-01T00:00:00Z"})
        engine.ingest(sent(1, sent_at="2026-11-02T12:00:05.250000+00:00"))
        engine.ingest(sent(1))  # a replay: no second row
        engine.ingest(sent(2, "webhook.sent"))  # no category in a webhook's: operational
        engine.ingest({**sent(3, "email.sent"), "properties": {}})  # marketing by default
        engine.ingest(sent(4, "invoice.sent"))  # not a channel: not a message
        rows = engine.store.tables[channels.TABLE_NAME].rows(
            {"contact_id": "c1"}, order_by=["event_id"]
        )
        assert [(r["channel"], r["category"], r["sent_at"]) for r in rows] == [
            ("sms", "marketing", "2026-11-02T12:00:05.250000Z"),
            ("webhook", "marketing", "2026-11-02T12:00:00.000000Z"),
            ("email", "marketing", "2026-11-02T12:00:00.000000Z"),
        ]
        report = engine.forget("c1")
        assert report.removed[channels.TABLE_NAME] == 3
        assert engine.store.tables[channels.TABLE_NAME].count({"contact_id": "c1"}) == 0


def test_a_sent_event_with_an_unreadable_time_is_refused_naming_it(tmp_path):
    with Engine(tmp_path / "clm.db", clock=VirtualClock(START)) as engine:
        result = engine.ingest_many([sent(1, sent_at="yesterday")])
        assert not result.ingested
        [failure] = engine.store.failures()
        assert "'sent_at' must be an ISO 8601 time (got 'yesterday')" in failure["error"]


WINDOWS = st.sampled_from(["PT1H", "P1D", "P7D"])
CLOCK = st.integers(0, 23).map(lambda h: f"{h:02d}:00")


@settings(max_examples=300, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 14 * 24 * 60), max_size=8),
    cap_max=st.integers(1, 4),
    window=WINDOWS,
    quiet=st.one_of(st.none(), st.tuples(CLOCK, CLOCK).filter(lambda q: q[0] != q[1])),
    timezone=st.sampled_from(["UTC", "Europe/Paris", "Asia/Kolkata", "America/New_York"]),
)
def test_next_allowed_is_the_first_moment_every_constraint_allows(
    offsets, cap_max, window, quiet, timezone
):
    now = START + timedelta(days=7)
    sends = [START + timedelta(minutes=m) for m in offsets if START + timedelta(minutes=m) <= now]
    policy = channels.ChannelPolicy(
        name="p",
        categories=["marketing"],
        frequency_caps=[{"max": cap_max, "per": window}],
        quiet_hours=None if quiet is None else {"start": quiet[0], "end": quiet[1]},
    )
    found, reasons = channels.next_allowed(now, sends=sends, policy=policy, timezone=timezone)
    span = policy.frequency_caps[0].window

    def allowed(t: datetime) -> bool:
        under = sum(1 for s in sends if t - span < s <= t) < cap_max
        quiet_now = (
            policy.quiet_hours is not None
            and channels.quiet_until(t, policy.quiet_hours, timezone) is not None
        )
        return under and not quiet_now

    # Brute force: the first minute from now on that both constraints allow.
    brute = now
    while not allowed(brute):
        brute += timedelta(minutes=1)
    assert found == brute
    assert (found > now) == bool(reasons)


def test_bad_policy_files_say_which_file_and_what(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text('{"policies": [{"name": "x", "categories": ["marketing"], "max": 3}]}')
    with pytest.raises(ValueError, match=r"policy.json is not valid: .*max"):
        channels.resolve_policies({channels.POLICY_ENV: str(path)})
    with pytest.raises(ValueError, match="cannot be read"):
        channels.resolve_policies({channels.POLICY_ENV: str(tmp_path / "missing.json")})
    assert channels.resolve_policies({}).policies == []
