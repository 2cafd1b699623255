"""clm-warranty, installed and used the way a third-party plugin is."""

from __future__ import annotations

import sqlite3

import clm_warranty
import pytest

from clm_engine import Engine, VirtualClock
from clm_engine.store import open_store
from clm_engine.testing import check_rejected, check_tables, discover
from clm_engine.testing import make_event as event

NAME = "warranty"
TABLES = {"warranty_products", "warranty_offers"}


@pytest.fixture
def engine(monkeypatch, tmp_path):
    # Should this test be the first in the process to load plugins, load no other one.
    monkeypatch.setenv("CLM_LOAD_PLUGINS", NAME)
    with Engine(tmp_path / "x.db", clock=VirtualClock()) as engine:
        yield engine


def test_discovered_through_its_entry_point():
    loaded = discover(NAME)
    assert (loaded[NAME]["source"], loaded[NAME]["version"]) == ("clm-warranty", "0.1.0")
    hooks = {
        "register_reducers",
        "register_tables",
        "register_event_handlers",
        "register_documents",
        "register_actions",
        "register_facts",
        "register_commands",
        "forget_contact",
    }
    assert set(loaded[NAME]["hooks"]) == hooks
    # CLM_LOAD_PLUGINS is an allow-list: the other installed plugins stay out.
    assert "email" not in loaded and "referral" not in loaded


def test_the_tables_are_declared_and_created_once(engine, tmp_path):
    check_tables(TABLES, tmp_path)


def test_the_declared_tables_have_their_indexes(engine):
    declared = {t.name: t for t in engine.registry.tables}
    assert set(declared) >= TABLES
    indexes = {i.columns for i in declared["warranty_products"].indexes}
    assert {("contact_id",), ("warranty_ends_at",)} <= indexes
    assert declared["warranty_products"].column("price_minor").type == "integer"


#: The tables as the plugin's former sqlite-utils migrations (m001 and m002) left them.
FORMER_SCHEMA = [
    """CREATE TABLE warranty_products (product_id TEXT PRIMARY KEY, contact_id TEXT NOT NULL,
    sku TEXT, name TEXT, serial TEXT, purchased_at TEXT, warranty_ends_at TEXT,
    has_service_agreement INTEGER DEFAULT 0, data TEXT, price_minor INTEGER, currency TEXT,
    warranty_months INTEGER, extension_months INTEGER NOT NULL DEFAULT 0, extended_to TEXT,
    service_agreement_ends_at TEXT, status TEXT NOT NULL DEFAULT 'active', registered_at TEXT,
    returned_at TEXT)""",
    "CREATE INDEX warranty_products_by_contact ON warranty_products (contact_id)",
    "CREATE INDEX warranty_products_by_ends_at ON warranty_products (warranty_ends_at)",
    """CREATE TABLE warranty_offers (offer_id TEXT PRIMARY KEY, contact_id TEXT NOT NULL,
    product_id TEXT NOT NULL, kind TEXT NOT NULL, sku TEXT, months INTEGER,
    price_minor INTEGER NOT NULL, currency TEXT NOT NULL, offered_at TEXT NOT NULL,
    expires_at TEXT NOT NULL, sent INTEGER NOT NULL DEFAULT 1,
    status TEXT NOT NULL DEFAULT 'open', accepted_at TEXT, accepted_event_id TEXT, ruleset TEXT,
    rule TEXT)""",
    "CREATE INDEX warranty_offers_by_product ON warranty_offers (product_id, kind, offered_at)",
    "CREATE INDEX warranty_offers_by_contact ON warranty_offers (contact_id)",
    "CREATE INDEX warranty_offers_by_kind ON warranty_offers (kind, status)",
]


def test_a_store_made_by_the_former_migrations_needs_no_change(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in FORMER_SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO warranty_products (product_id, contact_id, has_service_agreement, data)"
            " VALUES ('p1', 'c1', 1, '{\"colour\": \"red\"}')"
        )
    store = open_store(str(path))
    try:
        applied = store.migrate(clm_warranty.products.TABLES)
        assert [
            a for a in applied if not a.startswith("clm_engine:")
        ] == []  # the core's schema only
        row = store.tables["warranty_products"].one({"product_id": "p1"})
        assert (row["has_service_agreement"], row["data"]) == (True, {"colour": "red"})
    finally:
        store.close()


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
    registration = event("product.registered", properties, id="reg-1")
    check_rejected(engine, registration, match=reason, reducer="warranty.product_registered")


def test_forget_removes_the_contacts_rows(engine):
    engine.ingest(event("product.registered", {"product_id": "p1", "sku": "TOA-2"}))
    engine.ingest(event("product.registered", {"product_id": "p2"}, contact_id="c2"))
    removed = engine.forget("c1").removed
    assert removed["warranty_products"] == 1
    assert [r["product_id"] for r in engine.store.tables["warranty_products"].rows()] == ["p2"]
