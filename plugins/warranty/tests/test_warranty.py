"""clm-warranty, installed and used the way a third-party plugin is."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import clm_warranty
import pytest
import sqlite_utils

from clm_engine import Engine, ReducerError, VirtualClock
from clm_engine.plugins import get_migrations, pm

NAME = "warranty"
TABLES = {"warranty_products"}

DISCOVER = """
import json
from clm_engine.plugins import get_plugin_info, load_plugins
load_plugins()
print(json.dumps([[i.name, i.source, i.version, list(i.hooks)] for i in get_plugin_info()]))
"""


@pytest.fixture
def plugin(monkeypatch):
    # clm_engine loads plugins once per process, and the core's tests run in this process with
    # no external plugin: register the module directly and leave the manager as it was found.
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    added = pm.get_plugin(NAME) is None
    if added:
        pm.register(clm_warranty, name=NAME)
    try:
        yield clm_warranty
    finally:
        if added:
            pm.unregister(name=NAME)


@pytest.fixture
def engine(plugin, tmp_path):
    with Engine(tmp_path / "x.db", clock=VirtualClock()) as engine:
        yield engine


def event(type_, properties=None, *, contact_id="c1", at="2026-03-01T10:00:00Z", **extra):
    return {
        "contact_id": contact_id,
        "type": type_,
        "occurred_at": at,
        "properties": properties or {},
        **extra,
    }


def test_discovered_through_its_entry_point():
    # In a fresh process: this one's plugin manager is shared with the core's tests.
    env = {**os.environ, "CLM_LOAD_PLUGINS": NAME}
    done = subprocess.run(
        [sys.executable, "-c", DISCOVER], env=env, capture_output=True, text=True, check=True
    )
    loaded = {name: rest for name, *rest in json.loads(done.stdout)}
    source, version, hooks = loaded[NAME]
    assert (source, version) == ("clm-warranty", "0.1.0")
    assert set(hooks) == {"register_reducers", "register_migrations", "forget_contact"}
    # CLM_LOAD_PLUGINS is an allow-list: the other installed plugins stay out.
    assert "email" not in loaded and "referral" not in loaded


def test_migrations_create_the_tables_once(engine, tmp_path):
    db = engine.store.db
    assert set(db.table_names()) >= TABLES
    indexes = {tuple(i.columns) for i in db["warranty_products"].indexes}
    assert {("contact_id",), ("warranty_ends_at",)} <= indexes
    assert db["warranty_products"].columns_dict["price"] is float
    # Applying again is a no-op, in this store and in a new one on the same file.
    assert engine.store.migrate(get_migrations()) == []
    with Engine(tmp_path / "x.db") as again:
        assert set(again.store.db.table_names()) >= TABLES
    applied = db.execute(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = 'clm_warranty'"
    ).fetchall()
    assert applied == [("m001_initial",)]


def test_migrations_stay_inside_the_callers_transaction():
    db = sqlite_utils.Database(memory=True)
    db.conn.execute("BEGIN")
    clm_warranty.migrations.apply(db)
    assert set(db.table_names()) >= TABLES
    db.conn.execute("ROLLBACK")  # executescript() would have committed: nothing to roll back
    assert not TABLES & set(db.table_names())
    clm_warranty.migrations.apply(db)
    clm_warranty.migrations.apply(db)
    assert set(db.table_names()) >= TABLES


def test_registered_products_are_counted_once_each(engine):
    engine.ingest(event("product.registered", {"product_id": "p2", "sku": "KET-1"}))
    product = {
        "product_id": "p1",
        "sku": "TOA-2",
        "name": "Toaster",
        "purchased_at": "2026-02-20",
        "warranty_months": 24,
    }
    engine.ingest(event("product.registered", product, at="2026-03-02T10:00:00Z"))
    engine.ingest(event("product.registered", {"product_id": "p2"}, at="2026-03-03T10:00:00Z"))
    metrics = engine.contact("c1").metrics
    assert metrics["product_ids"] == ["p1", "p2"]
    assert metrics["products_registered"] == 2


@pytest.mark.parametrize(
    ("properties", "reason"),
    [
        ({"sku": "TOA-2"}, "product_id"),
        ({"product_id": "p1", "purchased_at": "last tuesday"}, "purchased_at"),
        ({"product_id": "p1", "warranty_months": "24"}, "warranty_months"),
    ],
)
def test_a_bad_registration_is_a_recorded_failure(engine, properties, reason):
    engine.ingest(event("product.registered", {"product_id": "p0"}))
    before = engine.contact("c1")
    with pytest.raises(ReducerError, match=reason):
        engine.ingest(event("product.registered", properties, id="reg-1"))
    assert engine.contact("c1") == before
    [failure] = engine.store.failures()
    assert failure["event_id"] == "reg-1"
    assert failure["reducer"] == "warranty.product_registered"


def test_forget_removes_the_contacts_rows(engine):
    engine.ingest(event("product.registered", {"product_id": "p1"}))
    db = engine.store.db
    db["warranty_products"].insert_all(
        [
            {"product_id": "p1", "contact_id": "c1", "sku": "TOA-2", "price": 49.0},
            {"product_id": "p2", "contact_id": "c2", "sku": "KET-1", "price": 29.0},
        ]
    )
    removed = engine.forget("c1")
    assert removed["warranty:warranty_products"] == 1
    assert [r["product_id"] for r in db["warranty_products"].rows] == ["p2"]
