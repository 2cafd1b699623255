"""clm-warranty, installed and used the way a third-party plugin is."""

from __future__ import annotations

import clm_warranty
import pytest

from clm_engine import Engine, VirtualClock
from clm_engine.testing import check_migrations, check_rejected, discover
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
        "register_migrations",
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


def test_migrations_run_once_inside_the_callers_transaction(engine, tmp_path):
    check_migrations(clm_warranty.migrations, TABLES, tmp_path)


def test_migrations_create_the_tables_and_indexes(engine):
    db = engine.store.db
    assert set(db.table_names()) >= TABLES
    indexes = {tuple(i.columns) for i in db["warranty_products"].indexes}
    assert {("contact_id",), ("warranty_ends_at",)} <= indexes
    assert db["warranty_products"].columns_dict["price_minor"] is int
    # Stored databases know the set by its name: renaming it would run its migrations again.
    applied = [m.name for m in clm_warranty.migrations.applied(db)]
    assert (clm_warranty.migrations.name, applied) == (
        "clm_warranty",
        ["m001_initial", "m002_minor_units_lifecycle_and_offers"],
    )


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
    db = engine.store.db
    removed = engine.forget("c1").removed
    assert removed["warranty_products"] == 1
    assert [r["product_id"] for r in db["warranty_products"].rows] == ["p2"]
