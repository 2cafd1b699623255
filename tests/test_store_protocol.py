"""The Store protocol is the contract: every implementation passes this one suite.

Parametrised over the implementations (the embedded SQLite store, and the PostgreSQL store on
a throwaway cluster the tests start: ``tests/postgres.py``), each test drives the protocol's
methods as the engine does and checks what a second implementation must give back.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta, timezone

import pytest

from clm_engine import Column, Contact, Event, Index, StoreError, Table
from clm_engine.store import (
    ActionStep,
    IngestFailure,
    StageTransition,
    Store,
    StoreTransaction,
    Trace,
)
from clm_engine.store.postgres import PostgresStore, PostgresTransaction
from clm_engine.store.sqlite import SQLiteStore, SQLiteTransaction

IMPLEMENTATIONS = {
    "sqlite": (SQLiteStore, SQLiteTransaction),
    "postgres": (PostgresStore, PostgresTransaction),
}


#: What the PostgreSQL store does not do yet, and says so with a StoreError: copying itself
#: into a SQLite file for a simulation.
NOT_YET_ON_POSTGRES: set[str] = set()


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def open_store(request, tmp_path):
    """Opens a store of the implementation, again on the same database each time."""
    store_class, _ = IMPLEMENTATIONS[request.param]
    opened = []
    if request.param == "postgres" and request.node.originalname in NOT_YET_ON_POSTGRES:
        pytest.skip("not on PostgreSQL yet (docs/architecture.md, 'The PostgreSQL store')")
    if request.param == "postgres":  # a fresh database on the session's throwaway cluster
        target = request.getfixturevalue("postgres_url")
    else:
        target = tmp_path / "store.db"

    def open_it():
        store = store_class(target)
        opened.append(store)
        return store

    yield open_it
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store):
    opened = open_store()
    opened.migrate()
    return opened


def protocol_members(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(protocol).items()
        if callable(member) and not name.startswith("_")
    }


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@pytest.mark.parametrize("protocol", [Store, StoreTransaction], ids=lambda p: p.__name__)
def test_an_implementation_has_every_method_of_the_protocol_with_its_parameters(name, protocol):
    implementation = IMPLEMENTATIONS[name][0 if protocol is Store else 1]
    for method, signature in protocol_members(protocol).items():
        assert hasattr(implementation, method), f"{implementation.__name__} lacks {method}"
        mine = inspect.signature(getattr(implementation, method))
        assert list(mine.parameters) == list(signature.parameters), method


def event(n: int, contact: str = "c1", type_: str = "page.viewed", day: int = 1) -> Event:
    return Event(
        id=f"e{n}",
        contact_id=contact,
        type=type_,
        occurred_at=datetime(2026, 3, day, 10, n % 60, tzinfo=UTC),
        properties={"n": n},
    )


def row(key: str, contact: str = "c1", due: str = "2026-03-01T10:00:00.000000Z", **extra):
    return {
        "key": key,
        "ruleset": "rs",
        "version": 1,
        "content_hash": "h",
        "rule": "r",
        "contact_id": contact,
        "action": "tag.add",
        "params": {"tag": "x"},
        "priority": 0,
        "depth": 0,
        "due_at": due,
        "created_at": "2026-03-01T10:00:00.000000Z",
        **extra,
    }


def test_a_write_commits_whole_or_not_at_all_and_a_savepoint_alone(store):
    with store.write() as tx:
        tx.insert_events([event(1)], received_at="now")
        with pytest.raises(RuntimeError), tx.savepoint():
            tx.insert_events([event(2)], received_at="now")
            raise RuntimeError("this step only")
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.insert_events([event(3)], received_at="now")
        raise RuntimeError("the whole transaction")
    assert store.read().existing_event_ids(["e1", "e2", "e3"]) == {"e1"}


def test_events_in_time_order_with_their_origins_counted_and_deleted(store):
    with store.write() as tx:
        tx.insert_events(
            [event(2, day=2), event(1, day=1), event(3, type_="purchase", day=3)],
            received_at="now",
            origins={"e3": "rs/r/c1/e1/0"},
        )
    reader = store.read()
    events, origins = reader.contact_history("c1")
    assert [e.id for e in events] == ["e1", "e2", "e3"]
    assert origins == {"e3": "rs/r/c1/e1/0"}
    assert [e.id for e in reader.contact_events("c1")] == ["e1", "e2", "e3"]
    assert reader.event_of("c1", "e2").properties == {"n": 2}
    assert reader.event_of("c2", "e2") is None  # another contact's id finds nothing
    assert reader.count_events("c1", "page.viewed", None) == 2
    assert reader.count_events("c1", "page.viewed", "2026-03-02T00:00:00Z") == 1
    assert [e.id for e in store.recent_events("c1", limit=2)] == ["e3", "e2"]
    assert store.last_event("c1", "purchase").id == "e3"
    with store.write() as tx:
        tx.delete_events(["e3"])
    assert store.read().existing_event_ids(["e1", "e3"]) == {"e1"}


def test_contacts_upserted_loaded_listed_and_counted(store):
    ann = Contact(id="ann", stage="purchase", timezone="Europe/Paris", metrics={"orders_count": 2})
    bob = Contact(id="bob", stage="awareness")
    with store.write() as tx:
        tx.upsert_contacts([ann, bob], updated_at="2026-03-01T00:00:00.000000Z")
        ann.stage = "retention"
        tx.upsert_contacts([ann], updated_at="2026-03-02T00:00:00.000000Z")
    assert store.get_contact("ann").stage == "retention"
    assert store.get_contact("nobody") is None
    assert Contact.model_validate_json(store.read().load_contacts(["ann"])["ann"]).id == "ann"
    assert [c.id for c in store.list_contacts(order_by="orders")] == ["ann", "bob"]
    assert [c.id for c in store.list_contacts(stage="awareness")] == ["bob"]
    assert [c.id for c in store.iter_contacts(chunk_size=1)] == ["ann", "bob"]
    assert store.count_contacts() == 2 and store.count_contacts(stage="retention") == 1
    assert [r[0] for r in store.read().contacts_after("", 10)] == ["ann", "bob"]
    assert [r[0] for r in store.read().contacts_after("", 10, "Europe/Paris")] == ["ann"]
    assert sorted(store.read().contact_timezones()) == ["Europe/Paris", "UTC"]
    assert store.summary()["contacts"] == 2


def test_stage_transitions_and_failures(store):
    first = StageTransition("c1", None, "awareness", "2026-03-01T10:00:00Z", "signup", "e1")
    second = StageTransition("c1", "awareness", "purchase", "2026-03-02T10:00:00Z", "order")
    with store.write() as tx:
        tx.add_transitions([first, second])
    assert store.stage_history("c1") == [first, second]
    with store.write() as tx:
        tx.replace_transitions("c1", [first])
    assert store.stage_history("c1") == [first]
    failure = IngestFailure(event(9), "core.purchase", "ValueError: no amount")
    with store.write() as tx:
        tx.record_failures([failure], failed_at="2026-03-01T00:00:00Z")
        tx.record_failures([failure], failed_at="2026-03-02T00:00:00Z")
    [recorded] = store.failures()
    assert (recorded["event_id"], recorded["attempts"]) == ("e9", 2)
    with store.write() as tx:
        tx.clear_failures(["e9"])
    assert store.failures() == []


def test_fires_of_limited_rules_are_a_log(store):
    with store.write() as tx:
        tx.record_fires(
            [
                ("c1", "rs", "r", "", "e1", "2026-03-01T10:00:00.000000Z"),
                ("c1", "rs", "r", "", "e2", "2026-03-05T10:00:00.000000Z"),
                ("c1", "rs", "r", "", "e2", "2026-03-05T10:00:00.000000Z"),  # a repeat: once
            ]
        )
    assert len(store.read().fires_of(["c1"])) == 2
    with store.write() as tx:
        tx.delete_fires("c1", [("rs", "r")], "2026-03-02")
    assert [f[4] for f in store.read().fires_of(["c1"])] == ["e1"]


def test_the_outbox_from_enqueue_to_done(store):
    now = "2026-03-01T10:00:00.000000Z"
    with store.write() as tx:
        assert (
            tx.enqueue([row("a"), row("b", priority=5), row("done", inline=1, status="done")]) == 3
        )
        assert tx.enqueue([row("a")]) == 0  # the key makes a repeat a no-op
    reader = store.read()
    assert [r.key for r in reader.due_actions(now, 10)] == ["b", "a"]  # priority first
    assert reader.decisions_of("c1")["done"][2:] == ("done", now, 1)
    a = store.actions_by_key(["a"])["a"]
    with store.write() as tx:
        tx.claim_action(
            a.seq, lease_until="2026-03-01T10:05:00.000000Z", note="running", attempts=1
        )
        assert [r.key for r in tx.claimed_actions("c1", now)] == ["a"]
        tx.finish_action(a.seq, status="done", note=None, result={"ok": 1}, at=now, attempts=1)
        b = tx.due_actions(now, 10)[0]
        tx.reschedule_action(b.seq, due_at="2026-03-02T00:00:00.000000Z", note="later", attempts=1)
        tx.redo_actions([{"key": "done", "status": "skipped", "note": "again", "due_at": now}])
        tx.retract_actions(["b"], note="no longer implied", at=now)
    assert store.read().action(a.seq).result == {"ok": 1}
    statuses = {r.key: r.status for r in store.actions_for("c1")}
    assert statuses == {"a": "done", "b": "retracted", "done": "skipped"}
    assert store.rules_summary()[0]["actions"] == {"done": 1, "retracted": 1, "skipped": 1}
    assert sorted(store.read().actions_since(0)) == [
        ("rs", "r", "done", "2026-03-01", 1),
        ("rs", "r", "retracted", "2026-03-02", 1),  # b was rescheduled to the 2nd
        ("rs", "r", "skipped", "2026-03-01", 1),
    ]
    assert store.read().high_water()[1] == 3
    assert store.outcome_counts("tag.add") == [
        ("done", None, 1),
        ("retracted", "no longer implied", 1),
        ("skipped", "again", 1),
    ]
    assert store.outcome_counts("email.send") == []


def test_action_history_is_written_at_commit_dropped_with_its_savepoint_and_pruned(store):
    def step(seq: int, kind: str, at: str, until: str | None = None) -> ActionStep:
        return ActionStep(seq, "c1", kind, at, "2026-03-01T10:00:00Z", 1, f"{kind}!", until)

    with store.write() as tx:
        tx.enqueue([row("a"), row("b")])
    a, b = (store.actions_by_key(["a", "b"])[key].seq for key in ("a", "b"))
    with store.write() as tx:
        tx.add_action_history([step(a, "deferred", "2026-03-01", until="2026-03-08")])
        with pytest.raises(RuntimeError), tx.savepoint():
            tx.add_action_history([step(b, "retried", "2026-03-01")])
            raise RuntimeError("this step rolls back, and its history with it")
        tx.add_action_history([step(a, "done", "2026-03-08")])
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.add_action_history([step(b, "vetoed", "2026-03-09")])
        raise RuntimeError("a transaction that rolls back keeps nothing")
    history = store.action_history([a, b])
    assert [(s.kind, s.until) for s in history[a]] == [("deferred", "2026-03-08"), ("done", None)]
    assert b not in history
    assert history[a][0] == step(a, "deferred", "2026-03-01", until="2026-03-08")
    assert store.prune_action_history("2026-03-05", dry_run=True) == 1
    assert store.prune_action_history("2026-03-05", batch_size=1) == 1
    assert [s.kind for s in store.action_history([a])[a]] == ["done"]


def test_traces_are_kept_read_and_redone(store):
    def trace(occurrence: str, at: str) -> Trace:
        return Trace("c1", "rs", 1, "h", "r", occurrence, "signup", "fired", None, {"x": 1}, [], at)

    with store.write() as tx:
        tx.add_traces([trace("e1", "2026-03-01"), trace("e2", "2026-03-05")], recorded_at="now")
    assert [t.occurrence for t in store.traces("c1")] == ["e2", "e1"]
    with store.write() as tx:
        tx.delete_traces("c1", [("rs", "r")], "2026-03-02")
    assert [t.occurrence for t in store.traces("c1", rule="r")] == ["e1"]
    assert [d[2] for d in store.read().decisions_since(0)] == ["fired"]


def test_traces_keep_what_a_decision_saw_and_are_pruned_by_age_in_batches(store):
    def trace(occurrence: str, at: str) -> Trace:
        seen = {"contact.created_at": {"dt": "2026-01-01T00:00:00+00:00"}, "n": 1}
        return Trace(
            "c1", "rs", 1, "h", "r", occurrence, "signup", "fired", None, None, [], at, seen
        )

    days = ("2026-03-01", "2026-03-02", "2026-03-03", "2026-03-09")
    with store.write() as tx:
        tx.add_traces([trace(f"e{n}", day) for n, day in enumerate(days)], recorded_at="now")
    assert store.traces("c1")[0].seen == trace("e3", days[3]).seen
    assert store.traces_pruned_before() is None
    assert store.prune_traces("2026-03-05", at="now", dry_run=True) == 3
    assert store.traces_pruned_before() is None  # a dry run changes nothing
    assert store.prune_traces("2026-03-05", at="now", batch_size=2) == 3
    assert [t.occurrence for t in store.traces("c1")] == ["e3"]
    assert store.traces_pruned_before() == "2026-03-05"
    assert store.prune_traces("2026-03-05", at="now") == 0


def test_ruleset_versions_are_recorded_once_by_content(store):
    with store.write() as tx:
        assert tx.record_ruleset("rs", 1, "h1", "rs.json", "{}", "2026-03-01")
        assert not tx.record_ruleset("rs", 1, "h1", "rs.json", "{}", "2026-03-02")
    assert [(v["name"], v["content_hash"]) for v in store.ruleset_versions()] == [("rs", "h1")]
    assert store.read().ruleset_source("rs", "h1") == "{}"
    assert store.read().ruleset_source("rs", "h2") is None


def test_anchors_and_schedule_slots(store):
    key = ("rs", "r", "c1", "")
    with store.write() as tx:
        tx.reset_anchor_rule("rs", "r", '{"anchor": "contact.created_at"}')
        tx.put_anchors([(*key, "2026-03-01T00:00:00Z", "2026-03-04T00:00:00Z")])
        tx.set_schedule_slot("rs", "weekly", "UTC", "2026-03-02T09:00:00Z")
    reader = store.read()
    assert reader.anchor_definitions() == {("rs", "r"): '{"anchor": "contact.created_at"}'}
    assert reader.anchors_for(["c1"])[key][2] == "pending"
    assert reader.due_anchors("2026-03-03", 10) == []
    assert len(reader.due_anchors("2026-03-05", 10)) == 1
    assert reader.schedule_slot("rs", "weekly", "UTC") == "2026-03-02T09:00:00Z"
    with store.write() as tx:
        tx.close_anchor(key, status="fired", note=None)
        tx.drop_anchors([key])  # a fired anchor stays, as history
    assert store.anchors_of("c1", "rs", "r")[0][3] == "fired"


def test_workers_claim_due_rows_under_a_lease_and_only_the_holder_takes_them(store):
    now, later = "2026-03-01T10:00:00.000000Z", "2026-03-01T10:05:00.000000Z"
    with store.write() as tx:
        tx.enqueue([row("a"), row("b", priority=5), row("c", due="2026-03-02T00:00:00Z")])
    with store.write(concurrent=True) as tx:
        claimed = tx.claim_due_actions(now, 10, lease_until=later, worker="w1")
    assert [r.key for r in claimed] == ["b", "a"]  # dispatch order; c is not due
    assert store.read().due_actions(now, 10) == []  # held: nobody else's until the lease ends
    with store.write(concurrent=True) as tx:
        assert tx.claim_due_actions(now, 10, lease_until=later, worker="w2") == []
    seqs = [r.seq for r in claimed]
    with store.write(concurrent=True) as tx:  # another worker, or an older lease: not theirs
        assert tx.held_actions(seqs, worker="w2", lease_until=later) == []
        assert tx.held_actions(seqs, worker="w1", lease_until=now) == []
    with store.write(concurrent=True) as tx:
        held = tx.held_actions(seqs, worker="w1", lease_until=later)
        assert [r.key for r in held] == ["b", "a"]
        tx.finish_action(held[0].seq, status="done", note=None, result=None, at=now, attempts=1)
    # "a" was taken (its lease released) but not finished: due again at once, for anyone
    assert [r.key for r in store.read().due_actions(now, 10)] == ["a"]
    with store.write(concurrent=True) as tx:
        again = tx.claim_due_actions(now, 10, lease_until=later, worker="w2")
    assert [r.key for r in again] == ["a"]
    # a worker that died: its lease runs out and the row is due, and claimable, again
    after = "2026-03-01T10:06:00.000000Z"
    assert [r.key for r in store.read().due_actions(after, 10)] == ["a"]
    with store.write(concurrent=True) as tx:
        assert [r.key for r in tx.claim_due_actions(after, 10, lease_until="z", worker="w3")] == [
            "a"
        ]
        assert tx.held_actions(seqs, worker="w2", lease_until=later) == []  # w2's lease is gone


def test_a_cron_slot_runs_chunk_by_chunk_from_a_cursor(store):
    reader = store.read()
    assert reader.take_schedule("rs", "daily", "UTC") == (None, None)  # never seen
    with store.write(concurrent=True) as tx:
        tx.set_schedule_slot("rs", "daily", "UTC", "2026-03-01T09:00:00Z")
        assert tx.take_schedule("rs", "daily", "UTC") == ("2026-03-01T09:00:00Z", None)
        tx.start_schedule_run("rs", "daily", "UTC", "2026-03-02T09:00:00Z")
    assert reader.take_schedule("rs", "daily", "UTC") == ("2026-03-02T09:00:00Z", "")
    assert reader.schedule_slot("rs", "daily", "UTC") == "2026-03-02T09:00:00Z"
    with store.write(concurrent=True) as tx:
        tx.set_schedule_cursor("rs", "daily", "UTC", "c500")
    assert reader.take_schedule("rs", "daily", "UTC") == ("2026-03-02T09:00:00Z", "c500")
    with store.write(concurrent=True) as tx:
        tx.set_schedule_cursor("rs", "daily", "UTC", None)  # the run is over
    assert reader.take_schedule("rs", "daily", "UTC") == ("2026-03-02T09:00:00Z", None)


def test_a_write_holds_the_contacts_it_names(store):
    with store.write() as tx:
        assert tx.lock_contacts(["c1", "c2"]) == {"c1", "c2"}
    with store.write(concurrent=True) as tx:
        assert tx.lock_contacts(["c1", "c2", "c1"]) == {"c1", "c2"}
        assert tx.lock_contacts(["c3"], wait=False) == {"c3"}
        assert tx.lock_contacts([]) == set()


def test_forget_erases_the_contact_everywhere_and_records_the_erasure(store):
    with store.write() as tx:
        tx.insert_events([event(1)], received_at="now")
        tx.upsert_contacts([Contact(id="c1", email="c1@example.com")], updated_at="now")
        tx.enqueue([row("k")])
    erasure, report = store.forget(
        "c1",
        also=lambda tables, erasure: {"plugin_table": 0},
        erased_at="now",
        requested_by="ops",
    )
    assert erasure.emails == ("c1@example.com",)
    assert report.removed == {"events": 1, "contacts": 1, "outbox": 1}
    assert store.get_contact("c1") is None and store.actions_for("c1") == []
    record = query(store, "SELECT erasure_id, requested_by FROM erasures")
    assert record == [(erasure.pseudonym, "ops")]


def test_forget_rewrites_other_contacts_references_to_the_pseudonym(store):
    friend = Contact(id="c2", attributes={"referred_by": "c1", "note": "met c1@example.com"})
    with store.write() as tx:
        tx.upsert_contacts([Contact(id="c1", email="c1@example.com"), friend], updated_at="now")
        tx.insert_events([event(2, contact="c2")], received_at="now", origins={"e2": "rs/r/c1/0"})
    erasure, report = store.forget(
        "c1", also=lambda tables, erasure: {}, erased_at="now", requested_by="ops"
    )
    assert report.pseudonymised == {"contacts": 1, "events": 1}
    kept = store.get_contact("c2")
    assert kept.attributes["referred_by"] == erasure.pseudonym
    assert "c1@example.com" not in kept.attributes["note"]


def query(store, sql):
    """A raw query on either store, for what the protocol has no method for (tests only)."""
    if isinstance(store, PostgresStore):
        return [tuple(row) for row in store._all(sql)]
    return store.db.execute(sql).fetchall()


# -- plugins' declared tables --------------------------------------------------------------------

ITEMS = Table(
    "test_items",
    columns=(
        Column("id", "text"),
        Column("owner", "text", nullable=False),
        Column("n", "integer", nullable=False, default=0),
        Column("price", "real"),
        Column("active", "boolean", nullable=False, default=True),
        Column("data", "json"),
        Column("at", "timestamp"),
        Column("code", "text"),
    ),
    primary_key=("id",),
    unique=(("owner", "code"),),
    indexes=(Index(("owner", "at")),),
)


@pytest.fixture
def items(open_store):
    store = open_store()
    store.migrate(tables=[ITEMS])
    return store


def add_items(store, *rows):
    with store.write() as tx:
        return tx.tables["test_items"].insert_many(rows)


def test_declared_tables_are_created_once_and_only_ever_added_to(open_store):
    store = open_store()
    done = store.migrate(tables=[ITEMS])
    assert "test_items:create table" in done
    assert store.migrate(tables=[ITEMS]) == []  # up to date: nothing to do
    grown = Table(
        "test_items",
        columns=(*ITEMS.columns, Column("note", "text"), Column("tries", "integer", default=1)),
        primary_key=("id",),
        unique=ITEMS.unique,
        indexes=(*ITEMS.indexes, Index(("note",))),
    )
    add_items(store, {"id": "a", "owner": "o"})
    again = open_store()
    assert again.migrate(tables=[grown]) == [
        "test_items:add column note",
        "test_items:add column tries",
        "test_items:add index test_items_by_note",
    ]
    assert again.tables["test_items"].one({"id": "a"})["tries"] == 1  # the default, for old rows
    for wrong in (
        Table("test_items", columns=ITEMS.columns, primary_key=("owner",)),
        Table(
            "test_items",
            columns=(*ITEMS.columns[:-1], Column("code", "integer")),
            primary_key=("id",),
        ),
        Table(
            "test_items",
            columns=(*ITEMS.columns, Column("must", "text", nullable=False)),
            primary_key=("id",),
        ),
    ):
        with pytest.raises(StoreError):
            open_store().migrate(tables=[wrong])


def test_a_declaration_is_checked_when_it_is_made():
    for make in (
        lambda: Table("test_x", columns=(Column("id", "text"),), primary_key=()),
        lambda: Table("events", columns=(Column("id", "text"),), primary_key=("id",)),
        lambda: Table("test_x", columns=(Column("id", "text"),), primary_key=("nope",)),
        lambda: Table("test x", columns=(Column("id", "text"),), primary_key=("id",)),
        lambda: Column("id; DROP TABLE events", "text"),
        lambda: Column("id", "varchar"),
        lambda: Column("n", "integer", default="one"),
        lambda: Table("test_x", columns=(Column("j", "json"),), primary_key=("j",)),
    ):
        with pytest.raises(StoreError):
            make()


def test_rows_keep_their_portable_types(items):
    at = datetime(2026, 3, 1, 11, 30, tzinfo=timezone(timedelta(hours=1)))
    add_items(
        items,
        {"id": "a", "owner": "o", "price": 2, "active": False, "data": {"k": [1]}, "at": at},
    )
    row = items.tables["test_items"].one({"id": "a"})
    assert row == {
        "id": "a",
        "owner": "o",
        "n": 0,
        "price": 2.0,
        "active": False,
        "data": {"k": [1]},
        "at": "2026-03-01T10:30:00.000000Z",  # UTC, fixed width: text order is time order
        "code": None,
    }
    assert isinstance(row["price"], float) and row["active"] is False
    table = items.tables["test_items"]
    assert table.one({"at": "2026-03-01T10:30:00Z"})["id"] == "a"  # any ISO text, normalised
    with store_error(), items.write() as tx:
        tx.tables["test_items"].insert({"id": "b", "owner": 1})
    with store_error(), items.write() as tx:
        tx.tables["test_items"].insert({"id": "b", "owner": "o", "active": 1})
    with store_error(), items.write() as tx:
        tx.tables["test_items"].insert({"id": "b", "owner": "o", "at": datetime(2026, 3, 1)})


def store_error():
    return pytest.raises(StoreError)


def test_where_order_limit_and_columns(items):
    add_items(
        items,
        *(
            {
                "id": f"i{n}",
                "owner": "o" if n % 2 else "p",
                "n": n,
                "code": None if n == 3 else f"c{n}",
            }
            for n in range(6)
        ),
    )
    table = items.tables["test_items"]

    def ids(where=None, **options):
        return [r["id"] for r in table.rows(where, columns=["id"], **options)]

    assert ids(order_by=["-n"]) == ["i5", "i4", "i3", "i2", "i1", "i0"]
    assert ids({"owner": "o"}, order_by=["n"]) == ["i1", "i3", "i5"]
    assert ids({"n": (">=", 2), "owner": ("!=", "o")}, order_by=["n"]) == ["i2", "i4"]
    assert ids({"n": ("in", [1, 4, 9])}, order_by=["n"]) == ["i1", "i4"]
    assert ids({"n": ("not-in", [0, 1, 2, 3])}, order_by=["n"]) == ["i4", "i5"]
    assert ids({"n": ("in", [])}) == []
    assert ids({"n": ("between", (2, 3))}, order_by=["n"]) == ["i2", "i3"]
    assert ids({"code": None}) == ["i3"]
    assert ids({"code": ("!=", None)}, order_by=["n"], limit=2, offset=1) == ["i1", "i2"]
    assert ids({"code": ("!=", "c1")}, order_by=["n"]) == ["i0", "i2", "i4", "i5"]  # never NULL
    assert ids({"active": True}, order_by=["-id"], limit=1) == ["i5"]
    assert ids(order_by=["code", "n"])[:2] == ["i3", "i0"]  # NULL first, ascending
    assert table.count() == 6 and table.count({"owner": "p"}) == 3
    assert table.one({"owner": "nobody"}) is None
    assert table.one({"owner": "o"}, order_by=["-n"], columns=["n"]) == {"n": 5}
    for bad in (
        lambda: table.rows({"nope": 1}),
        lambda: table.rows({"data": {"k": 1}}),  # json is not comparable portably
        lambda: table.rows({"n": ("like", 1)}),
        lambda: table.rows({"n": ("<", None)}),
        lambda: table.rows(order_by=["n; DROP TABLE events"]),
        lambda: table.rows(columns=["*"]),
    ):
        with store_error():
            bad()


def test_insert_upsert_update_delete(items):
    with items.write() as tx:
        table = tx.tables["test_items"]
        assert table.insert({"id": "a", "owner": "o", "code": "x"})
        assert not table.insert({"id": "a", "owner": "o"}, on_conflict="ignore")
        assert not table.insert({"id": "b", "owner": "o", "code": "x"}, on_conflict="ignore")
        with store_error():
            table.insert({"id": "a", "owner": "o"})
        assert (
            table.insert_many(
                [{"id": "c", "owner": "o"}, {"id": "a", "owner": "o"}], on_conflict="ignore"
            )
            == 1
        )
        table.upsert({"id": "a", "owner": "o", "n": 7})  # by the primary key
        table.upsert(
            {"id": "z", "owner": "o", "code": "x", "price": 1.5},
            key=["owner", "code"],
            update=["price"],
        )  # by a unique constraint: row a, its price only
        with store_error():
            table.upsert({"id": "q", "owner": "o"}, key=["owner"])  # not a key
        assert table.update({"owner": "o"}, add={"n": 1}) == 2
        assert table.update({"id": "c"}, {"code": "y", "active": False}, add={"n": 10}) == 1
        with store_error():
            table.update({"id": "c"}, add={"code": 1})
    table = items.tables["test_items"]
    assert table.rows(columns=["id", "n", "price", "code", "active"], order_by=["id"]) == [
        {"id": "a", "n": 8, "price": 1.5, "code": "x", "active": True},
        {"id": "c", "n": 11, "price": None, "code": "y", "active": False},
    ]
    with items.write() as tx:
        assert tx.tables["test_items"].delete({"id": ("in", ["a", "q"])}) == 1
        with store_error():
            tx.tables["test_items"].delete(None)
    assert table.count() == 1
    with items.write() as tx:
        assert tx.tables["test_items"].delete({}) == 1


def test_table_writes_belong_to_their_transaction(items):
    with pytest.raises(RuntimeError), items.write() as tx:
        tx.tables["test_items"].insert({"id": "gone", "owner": "o"})
        raise RuntimeError("rolled back")
    with items.write() as tx:
        with pytest.raises(RuntimeError), tx.savepoint():
            tx.tables["test_items"].insert({"id": "step", "owner": "o"})
            raise RuntimeError("this step only")
        tx.tables["test_items"].insert({"id": "kept", "owner": "o"})
    assert [r["id"] for r in items.tables["test_items"].rows()] == ["kept"]
    assert items.read().tables["test_items"].count() == 1
    for view in (items.tables, items.read().tables):
        with store_error():
            view["test_items"].insert({"id": "x", "owner": "o"})  # read only
        with store_error():
            view["events"]  # not declared: the core's tables are not reachable
    assert "test_items" in items.tables and items.tables.names == ["test_items"]


def test_backup_to_copies_the_store_as_committed(items, open_store, tmp_path):
    add_items(items, {"id": "a", "owner": "o"})
    with items.write() as tx:
        tx.insert_events([event(1)], received_at="now")
    items.backup_to(tmp_path / "copy.db")
    copy = SQLiteStore(tmp_path / "copy.db")
    try:
        copy.migrate(tables=[ITEMS])
        assert copy.read().existing_event_ids(["e1"]) == {"e1"}
        assert copy.tables["test_items"].count() == 1
    finally:
        copy.close()


#: A ledger: numbered entries (an auto-increment key), append-only, with one open entry per
#: account at a time (a partial unique index).
ENTRIES = Table(
    "test_entries",
    columns=(
        Column("seq", "integer", auto_increment=True),
        Column("account", "text", nullable=False),
        Column("currency", "text", nullable=False),
        Column("amount", "integer", nullable=False),
        Column("weight", "real"),
        Column("open", "boolean", nullable=False, default=False),
        Column("closed_at", "timestamp"),
    ),
    primary_key=("seq",),
    indexes=(
        Index(("account",), unique=True, where={"open": True, "closed_at": None}),
        Index(("account", "currency")),
    ),
    append_only=True,
)


@pytest.fixture
def entries(open_store):
    store = open_store()
    store.migrate(tables=[ENTRIES])
    return store


def test_an_auto_increment_key_numbers_the_rows_and_insert_returns_it(entries):
    with entries.write() as tx:
        table = tx.tables["test_entries"]
        first = table.insert({"account": "a", "currency": "USD", "amount": 5})
        second = table.insert({"account": "b", "currency": "USD", "amount": -5})
        assert isinstance(first, int) and first >= 1 and second > first
        assert (
            table.insert_many([{"account": "c", "currency": "EUR", "amount": n} for n in (1, 2)])
            == 2
        )
    with entries.write() as tx:
        third = tx.tables["test_entries"].insert({"account": "d", "currency": "EUR", "amount": 3})
    seqs = [r["seq"] for r in entries.tables["test_entries"].rows(order_by=["seq"])]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5 and seqs[-1] == third
    assert entries.tables["test_entries"].one({"seq": second})["account"] == "b"
    for wrong in (
        lambda: Column("n", "text", auto_increment=True),
        lambda: Table(
            "test_x",
            columns=(Column("n", "integer", auto_increment=True), Column("k", "text")),
            primary_key=("n", "k"),
        ),
    ):
        with store_error():
            wrong()


def test_a_partial_unique_index_holds_among_its_rows_only(entries, open_store):
    with entries.write() as tx:
        table = tx.tables["test_entries"]
        assert table.insert({"account": "a", "currency": "USD", "amount": 1, "open": True})
        for _ in range(2):  # closed or not open: as many as wanted
            assert table.insert({"account": "a", "currency": "USD", "amount": 1})
            assert table.insert(
                {"account": "a", "currency": "USD", "amount": 1, "open": True, "closed_at": T}
            )
        with store_error():
            table.insert({"account": "a", "currency": "USD", "amount": 1, "open": True})
        assert not table.insert(
            {"account": "a", "currency": "USD", "amount": 2, "open": True}, on_conflict="ignore"
        )
        assert table.insert({"account": "b", "currency": "USD", "amount": 1, "open": True})
    assert open_store().migrate(tables=[ENTRIES]) == []  # known by its name
    assert ("account",) not in ENTRIES.conflict_keys()  # no upsert key: it holds among some
    for wrong in (
        lambda: Index(("a",), unique=True, where={}),
        lambda: Index(("a",), unique=True, where={"b": ("<", 3)}),
        lambda: Table(
            "test_x",
            columns=(Column("k", "text"), Column("n", "integer")),
            primary_key=("k",),
            indexes=(Index(("n",), where={"n": "one"}),),
        ),
    ):
        with store_error():
            wrong()


T = "2026-03-01T10:00:00.000000Z"


def test_an_append_only_table_refuses_updates_deletes_and_upserts(entries):
    with entries.write() as tx:
        table = tx.tables["test_entries"]
        seq = table.insert({"account": "a", "currency": "USD", "amount": 1})
        for change in (
            lambda: table.update({"seq": seq}, {"amount": 2}),
            lambda: table.update({"seq": seq}, add={"amount": 1}),
            lambda: table.delete({"seq": seq}),
            lambda: table.delete({}),
            lambda: table.upsert({"seq": seq, "account": "a", "currency": "USD", "amount": 9}),
        ):
            with store_error():
                change()
    assert entries.tables["test_entries"].one({"seq": seq})["amount"] == 1


def test_aggregates_count_and_sum_by_group(entries):
    with entries.write() as tx:
        tx.tables["test_entries"].insert_many(
            {"account": account, "currency": currency, "amount": amount, "weight": weight}
            for account, currency, amount, weight in (
                ("a", "USD", 5, 0.5),
                ("a", "USD", -2, 1.0),
                ("a", "EUR", 7, None),
                ("b", "USD", -10, 2),
            )
        )
    table = entries.tables["test_entries"]
    assert table.aggregate(group_by=["account", "currency"], sums=["amount", "weight"]) == [
        {"account": "a", "currency": "EUR", "count": 1, "amount": 7, "weight": 0.0},
        {"account": "a", "currency": "USD", "count": 2, "amount": 3, "weight": 1.5},
        {"account": "b", "currency": "USD", "count": 1, "amount": -10, "weight": 2.0},
    ]
    assert table.aggregate({"currency": "USD"}, sums=["amount"]) == [{"count": 3, "amount": -7}]
    assert table.aggregate({"account": "z"}, sums=["amount"]) == [{"count": 0, "amount": 0}]
    assert table.aggregate({"amount": (">", 0)}, group_by=["open"]) == [{"open": False, "count": 2}]
    for bad in (
        lambda: table.aggregate(sums=["account"]),  # text is not summed
        lambda: table.aggregate(group_by=["nope"]),
        lambda: table.aggregate(group_by=["amount"], sums=["amount"]),
    ):
        with store_error():
            bad()


def test_tables_give_the_keyed_hash_an_erasure_keeps(items):
    hashed = items.tables.erasure_hash("Ada@Example.com")
    assert hashed is not None and hashed.startswith("hmac:")
    assert hashed == items.tables.erasure_hash(" ada@example.com")  # normalised
    with items.write() as tx:
        assert tx.tables.erasure_hash("ada@example.com") == hashed

    def plugin(tables, erasure):  # an erasure's own hash of the same value
        assert erasure.keyed_hash("ada@example.com") == hashed
        return {}

    items.forget("nobody", also=plugin, erased_at="now", requested_by="ops")


#: A plugin's append-only ledger that names contacts, in text and in JSON.
MENTIONS = Table(
    "test_mentions",
    columns=(
        Column("id", "text"),
        Column("contact_id", "text"),
        Column("note", "text"),
        Column("detail", "json"),
        Column("amount", "integer"),
    ),
    primary_key=("id",),
    append_only=True,
)


def test_an_erasure_pseudonymises_a_plugins_rows_append_only_too(open_store):
    """``pseudonymise`` is the one change an append-only table takes: in the erasure's
    transaction, every text and JSON mention of the contact becomes the pseudonym (even in a
    key, after ``erasure.rename``), other values and rows untouched; the core's check that
    nothing mentions the contact any more then passes."""
    store = open_store()
    store.migrate(tables=[MENTIONS])
    with store.write() as tx:
        tx.upsert_contacts([Contact(id="c1", email="ada@example.com")], updated_at="now")
        tx.tables["test_mentions"].insert_many(
            [
                {
                    "id": "reward-c1",
                    "contact_id": "c2",
                    "note": "referred c1",
                    "detail": None,
                    "amount": 5,
                },
                {
                    "id": "r2",
                    "contact_id": "c2",
                    "note": "thanks",
                    "detail": {"from": "ada@example.com", "list": ["c1", "c3"]},
                    "amount": 7,
                },
                {
                    "id": "r3",
                    "contact_id": "c3",
                    "note": "c10 is not c1's",
                    "detail": {"to": "c10"},
                    "amount": 9,
                },
            ]
        )

    def plugin(tables, erasure):
        erasure.rename("reward-c1", "reward-" + erasure.pseudonym)
        return {"test_mentions": 0} if tables["test_mentions"].pseudonymise(erasure) else {}

    erasure, report = store.forget("c1", also=plugin, erased_at="now", requested_by="ops")
    p = erasure.pseudonym
    rows = {r["id"]: r for r in store.tables["test_mentions"].rows()}
    assert rows == {
        f"reward-{p}": {
            "id": f"reward-{p}",
            "contact_id": "c2",
            "note": f"referred {p}",
            "detail": None,
            "amount": 5,
        },
        "r2": {
            "id": "r2",
            "contact_id": "c2",
            "note": "thanks",
            "detail": {"from": erasure.pseudonym_email, "list": [p, "c3"]},
            "amount": 7,
        },
        "r3": {
            "id": "r3",
            "contact_id": "c3",
            "note": f"c10 is not {p}'s",
            "detail": {"to": "c10"},
            "amount": 9,
        },
    }
    assert report.pseudonymised["test_mentions"] == 3


def test_pseudonymise_is_a_write(open_store):
    store = open_store()
    store.migrate(tables=[MENTIONS])
    from clm_engine import Erasure

    with store_error():
        store.tables["test_mentions"].pseudonymise(Erasure("c1", emails=(), names=()))


def test_the_erasure_key_is_read_once_per_view_of_the_store(items, monkeypatch):
    """It is made once with the schema and never changes; every suppression check asks for it
    (an email each), so a view of the store reads it once, not once per hash."""
    reads = []
    real = type(items.tables)._read_erasure_key

    def counted(self):
        reads.append(1)
        return real(self)

    monkeypatch.setattr(type(items.tables), "_read_erasure_key", counted)
    first = items.tables.erasure_hash("ada@example.com")
    assert all(items.tables.erasure_hash("ada@example.com") == first for _ in range(5))
    assert first is not None and len(reads) <= 1  # here, or before by the view's first hash
