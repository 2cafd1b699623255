"""Properties of the ledger, whatever order and duplication events arrive in.

- the balance is the sum of the entries, every running balance (in ledger order) is at least
  zero, and what is left of the lots adds up to the balance;
- delivering the same history again changes nothing, and the same delivery into a fresh
  store gives the same ledger, entry for entry;
- SQLite and PostgreSQL keep the same ledger for the same delivery.
"""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clm_loyalty
import loyalty_testing
from clm_loyalty import ledger
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clm_engine import Engine, VirtualClock
from clm_engine.testing import make_event

# The shared fixtures this module uses (loyalty_testing.py says why not a conftest.py).
rules = loyalty_testing.rules


START = datetime(2026, 1, 1, tzinfo=UTC)
CONTACTS = ("ada", "bob")
COLUMNS = ("key", "contact_id", "kind", "points", "at", "expires_at", "lot_key", "qualifying")

operation = st.one_of(
    st.tuples(
        st.just("purchase"), st.sampled_from(CONTACTS), st.integers(0, 2_000), st.integers(0, 900)
    ),
    st.tuples(
        st.just("reward.claimed"),
        st.sampled_from(CONTACTS),
        st.integers(1, 1_500),
        st.integers(0, 900),
    ),
    st.tuples(
        st.just("support.goodwill"),
        st.sampled_from(CONTACTS),
        st.integers(-400, 400).filter(bool),
        st.integers(0, 900),
    ),
)


def history(ops):
    events = []
    for n, (type_, contact, value, day) in enumerate(ops):
        at = START + timedelta(days=day, minutes=n)
        props = (
            {"amount": value + 0.5, "currency": "USD"} if type_ == "purchase" else {"points": value}
        )
        events.append(make_event(type_, props, contact_id=contact, at=at, id=f"e{n}"))
    return events


@st.composite
def deliveries(draw):
    """A history, then how it arrives: shuffled, some events twice, in batches; and the
    moments (days) at which the engine dispatches what is due (expiries, tier reviews)."""
    events = history(draw(st.lists(operation, min_size=1, max_size=25)))
    order = draw(st.permutations(events))
    again = draw(st.lists(st.sampled_from(events), max_size=5))
    arriving = list(order) + again
    cuts = sorted(draw(st.lists(st.integers(0, len(arriving)), max_size=4)))
    batches, last = [], 0
    for cut in [*cuts, len(arriving)]:
        if cut > last:
            batches.append(arriving[last:cut])
            last = cut
    ticks = sorted(draw(st.lists(st.integers(0, 1_200), max_size=3)))
    return batches, ticks


def deliver(where, rules: Path, batches, ticks):
    clock = VirtualClock(START)
    with Engine(where, clock=clock, plugins={"loyalty": clm_loyalty}, rulesets=[rules]) as engine:
        for n, batch in enumerate(batches):
            engine.ingest_many(batch)
            if n < len(ticks):  # dispatch part-way, at a time of its own
                clock.set(max(clock.now(), START + timedelta(days=ticks[n])))
                engine.dispatch()
        clock.set(max(clock.now(), START + timedelta(days=1_300)))
        engine.dispatch()
        return snapshot(engine)


def snapshot(engine):
    tables = engine.store.tables
    rows = tables["loyalty_entries"].rows(order_by=["seq"])
    tiers = tables["loyalty_tiers"].rows(
        columns=["key", "contact_id", "tier", "at"], order_by=["seq"]
    )
    milestones = tables["loyalty_milestones"].rows(order_by=["contact_id", "milestone"])
    return rows, tiers, milestones


def check_sound(rows):
    for contact in CONTACTS:
        mine = [r for r in rows if r["contact_id"] == contact]
        book = ledger.replay(mine)
        assert book.balance == sum(r["points"] for r in mine)
        assert all(balance >= 0 for balance in book.running), book.running
        assert all(lot.remaining >= 0 for lot in book.lots.values())
        assert sum(lot.remaining for lot in book.lots.values()) == book.balance
        dates = [r["at"] for r in mine]
        assert dates == sorted(dates)  # a prefix of the ledger is the ledger as of a time


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(deliveries())
def test_balances_are_sums_never_negative_and_replays_change_nothing(rules, case):
    batches, ticks = case
    with tempfile.TemporaryDirectory() as folder:
        first = deliver(Path(folder) / "a.db", rules, batches, ticks)
        rows = first[0]
        check_sound(rows)
        # The same delivery into a fresh store: the same ledger, entry for entry.
        assert deliver(Path(folder) / "b.db", rules, batches, ticks) == first
        # Everything delivered again into the first store: nothing changes.
        again = deliver(Path(folder) / "a.db", rules, [[e for b in batches for e in b]], [])
        assert again == first
        with Engine(Path(folder) / "a.db", plugins={"loyalty": clm_loyalty}) as engine:
            assert ledger.negative_balances(engine.store.tables) == []
            sums = engine.store.tables["loyalty_entries"].aggregate(
                group_by=["contact_id"], sums=["points"]
            )
            for row in sums:
                mine = [r for r in rows if r["contact_id"] == row["contact_id"]]
                assert row["points"] == ledger.replay(mine).balance


def test_sqlite_and_postgresql_keep_the_same_ledger(rules, new_store, tmp_path):
    rng = random.Random(19)
    ops = [
        (
            rng.choice(["purchase", "purchase", "reward.claimed", "support.goodwill"]),
            rng.choice(CONTACTS),
            rng.randint(1, 900),
            rng.randint(0, 800),
        )
        for _ in range(60)
    ]
    events = history(ops)
    rng.shuffle(events)
    batches = [events[:20], events[20:45] + events[:5], events[45:]]
    ticks = [200, 500]
    here = deliver(new_store("clm.db"), rules, batches, ticks)
    reference = deliver(tmp_path / "reference.db", rules, batches, ticks)
    check_sound(here[0])

    def comparable(snap):
        rows, tiers, milestones = snap
        return [{c: r[c] for c in COLUMNS} for r in rows], tiers, milestones

    assert comparable(here) == comparable(reference)
    assert any(r["kind"] == "expire" for r in here[0])
    assert any(r["kind"] == "redeem" for r in here[0])
