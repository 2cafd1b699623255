"""The parts that need no engine: dates, money, the catalogue, the table handlers and facts.

Handlers and facts run here on the plugin's declared tables in a store's transaction
(``clm_engine.testing.declared_tables``), the way the engine calls them, so a mistake shows
without the whole pipeline.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clm_warranty import facts, products
from clm_warranty.catalogue import Catalogue, check_catalogue, lookup
from clm_warranty.dates import add_months, parse_moment, utc_text, whole_days
from clm_warranty.demo import extra_events
from pydantic import ValidationError

from clm_engine import Contact, Event
from clm_engine.testing import declared_tables
from clm_engine.types import MISSING

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)

CATALOGUE = {
    "catalogue": "test",
    "currency": "USD",
    "products": {
        "CAM-1": {
            "name": "Camera",
            "price_minor": 24900,
            "warranty_months": 24,
            "expected_life_months": 60,
            "extension": {"months": 12, "price_minor": 3900},
            "service_agreement": {"months": 12, "price_minor": 5900},
            "successor": "CAM-2",
        },
        "CAM-2": {"price_minor": 29900, "warranty_months": 24},
        "BULB": {"warranty_months": 0},
    },
}


# -- dates and money ---------------------------------------------------------------------------


def test_months_are_calendar_months_clamped_to_the_month_end():
    assert add_months(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2026, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2027, 12, 31, tzinfo=UTC), 2) == datetime(2028, 2, 29, tzinfo=UTC)
    assert add_months(datetime(2026, 5, 15, 9, tzinfo=UTC), 24) == datetime(
        2028, 5, 15, 9, tzinfo=UTC
    )


def test_dates_parse_to_utc_and_store_as_fixed_width_text():
    assert parse_moment("2026-11-02") == datetime(2026, 11, 2, tzinfo=UTC)
    assert parse_moment("2026-11-02T12:00:00+02:00") == datetime(2026, 11, 2, 10, tzinfo=UTC)
    assert utc_text(datetime(2026, 11, 2, 10, tzinfo=UTC)) == "2026-11-02T10:00:00.000000Z"
    with pytest.raises(ValueError, match="'purchased_at' must be an ISO 8601 date"):
        parse_moment("last tuesday", "'purchased_at'")
    assert whole_days(T0, T0 + timedelta(days=29, hours=23)) == 29
    assert whole_days(T0, T0 - timedelta(hours=1)) == -1


@pytest.mark.parametrize(
    ("value", "minor"), [(19.99, 1999), ("19.99", 1999), (129, 12900), (0.1 + 0.2, None)]
)
def test_prices_become_exact_minor_units(value, minor):
    if minor is None:  # 0.30000000000000004 is not a whole number of cents
        with pytest.raises(ValueError, match="whole cents"):
            products.to_minor(value)
    else:
        assert products.to_minor(value) == minor


# -- the catalogue -----------------------------------------------------------------------------


@dataclass
class CheckContext:
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)


def test_the_catalogue_model_refuses_typos_and_floats():
    Catalogue.model_validate(CATALOGUE)
    bad = json.loads(json.dumps(CATALOGUE))
    bad["products"]["CAM-1"]["extension"]["price"] = 39.0
    with pytest.raises(ValidationError, match="price"):
        Catalogue.model_validate(bad)
    bad = json.loads(json.dumps(CATALOGUE))
    bad["products"]["CAM-1"]["extension"]["price_minor"] = 39.5
    with pytest.raises(ValidationError, match="price_minor"):
        Catalogue.model_validate(bad)
    with pytest.raises(ValidationError, match="currency"):
        Catalogue.model_validate({**CATALOGUE, "currency": "dollars"})


def test_the_catalogue_check_finds_unknown_successors_and_shared_skus():
    document = Catalogue.model_validate(CATALOGUE)
    assert check_catalogue(document, CheckContext({"catalogue": {"test": document}})) == []
    data = json.loads(json.dumps(CATALOGUE))
    data["products"]["CAM-1"]["successor"] = "CAM-3"
    data["products"]["CAM-2"]["successor"] = "CAM-2"
    broken = Catalogue.model_validate(data)
    other = Catalogue.model_validate(
        {"catalogue": "other", "currency": "EUR", "products": {"BULB": {"warranty_months": 0}}}
    )
    problems = dict(
        check_catalogue(broken, CheckContext({"catalogue": {"test": broken, "other": other}}))
    )
    assert problems["/products/CAM-1/successor"].startswith("successor 'CAM-3' is in no catalogue")
    assert problems["/products/CAM-2/successor"] == "SKU 'CAM-2' cannot succeed itself"
    assert problems["/products/BULB"] == "SKU 'BULB' is also in catalogue 'other'"
    assert lookup({"catalogue": {"test": broken}}, "CAM-2")[1].price_minor == 29900


def test_the_example_catalogue_covers_every_registered_sku_of_the_sample():
    from clm_engine.synthetic import _DEVICES

    path = _example_catalogue()
    document = Catalogue.model_validate_json(path.read_text())
    assert {p.sku for p in _DEVICES} <= set(document.products)
    assert (
        check_catalogue(document, CheckContext({"catalogue": {document.catalogue: document}})) == []
    )


def _example_catalogue() -> Path:
    """The catalogue shipped with the example rulesets."""
    return Path(__file__).resolve().parents[3] / "rulesets" / "warranty-catalogue.json"


# -- handlers and facts on the declared tables --------------------------------------------------


@pytest.fixture
def db():
    with declared_tables(products.TABLES) as tables:
        yield tables


def ev(type_: str, at: datetime, contact: str = "c1", **props: Any) -> Event:
    return Event(contact_id=contact, type=type_, occurred_at=at, properties=props)


def contact(contact_id: str = "c1") -> Contact:
    return Contact(id=contact_id, created_at=T0, updated_at=T0)


def register(db, at: datetime = T0, contact_id: str = "c1", **props: Any) -> None:
    props.setdefault("product_id", "p1")
    products.on_registered(
        db, contact(contact_id), ev("product.registered", at, contact_id, **props)
    )


@dataclass
class Ctx:
    """What facts read of a FactContext: the contact, the time, the database, the entity."""

    contact: Contact
    now: datetime
    tables: Any = None
    documents: dict[str, Any] = field(default_factory=dict)
    entity: str | None = None
    event: Event | None = None
    cache: dict[Any, Any] = field(default_factory=dict)


def ctx(db, now: datetime, entity: str | None = "p1", **kwargs: Any) -> Ctx:
    documents = {"catalogue": {"test": Catalogue.model_validate(CATALOGUE)}}
    owner = contact("c1")
    owner.metrics["product_ids"] = ["p1"]  # what the registration reducer keeps
    return Ctx(owner, now, db, documents, entity, **kwargs)


def test_registration_is_idempotent_and_fills_only_what_was_unknown(db):
    register(db, sku="CAM-1", price=249.0, purchased_at="2026-02-20", warranty_months=24)
    products.on_extended(
        db, contact(), ev("warranty.extended", T0 + timedelta(days=1), product_id="p1", months=12)
    )
    register(db, T0 + timedelta(days=2), serial="X-1", warranty_months=12, price=1.0)
    row = db["warranty_products"].one()
    assert (row["serial"], row["warranty_months"], row["price_minor"]) == ("X-1", 24, 24900)
    assert (row["extension_months"], row["warranty_ends_at"][:10]) == (12, "2028-02-20")
    with pytest.raises(ValueError, match="registered to another contact"):
        register(db, contact_id="c2")


def test_warranty_end_counts_the_catalogue_and_every_extension(db):
    register(db, sku="CAM-1", purchased_at="2026-02-20")  # no months: the catalogue's 24
    assert facts.warranty_ends_at(ctx(db, T0)) == {"p1": "2028-02-20T00:00:00.000000Z"}
    products.on_extended(db, contact(), ev("warranty.extended", T0, product_id="p1", months=6))
    products.on_extended(
        db, contact(), ev("warranty.extended", T0, product_id="p1", warranty_ends_at="2028-06-01")
    )
    assert facts.warranty_ends_at(ctx(db, T0)) == {"p1": "2028-08-20T00:00:00.000000Z"}
    products.on_extended(
        db, contact(), ev("warranty.extended", T0, product_id="p1", warranty_ends_at="2029-01-01")
    )
    assert facts.warranty_ends_at(ctx(db, T0)) == {"p1": "2029-01-01T00:00:00.000000Z"}
    assert facts.extended(ctx(db, T0)) is True


def test_per_product_facts(db):
    register(db, sku="CAM-1", purchased_at="2026-02-20", price=249, warranty_months=24)
    register(db, product_id="p2", sku="BULB", purchased_at="2026-01-01")
    register(db, product_id="p3", sku="CAM-2", purchased_at="2026-01-01")
    products.on_returned(db, contact(), ev("product.returned", T0, product_id="p3"))
    now = datetime(2027, 2, 20, tzinfo=UTC)
    c = ctx(db, now)
    assert facts.days_until_warranty_end(c) == 365
    assert facts.age_days(c) == 365
    assert facts.life_used(c) == pytest.approx(0.2, abs=0.001)
    assert facts.price_minor(c) == 24900
    assert facts.has_service_agreement(c) is False
    assert facts.extended(c) is False
    assert facts.other_skus(c) == ["BULB"]  # p3 was returned
    assert facts.other_products(c) == 1
    assert facts.end_of_life_at(c) == {"p1": "2031-02-20T00:00:00.000000Z"}  # BULB: no life
    assert facts.status(ctx(db, now, "p3")) == "returned"
    assert facts.price_minor(ctx(db, now, "nope")) is MISSING
    assert facts.price_minor(Ctx(contact(), now)) is MISSING  # no database
    assert facts.warranty_ends_at(Ctx(contact(), now, db)) == {}  # no product registered
    on_event = ctx(db, now, None, event=ev("product.registered", now, product_id="p1"))
    assert facts.sku(on_event) == "CAM-1"


def test_service_agreements_and_returns(db):
    register(db, sku="CAM-1", purchased_at="2026-02-20")
    register(db, product_id="p2", sku="CAM-1", service_agreement=True)
    products.on_service_agreement(
        db, contact(), ev("service_agreement.purchased", T0, product_id="p1", months=12)
    )
    assert facts.has_service_agreement(ctx(db, T0 + timedelta(days=364))) is True
    assert facts.has_service_agreement(ctx(db, T0 + timedelta(days=366))) is False
    assert facts.has_service_agreement(ctx(db, T0 + timedelta(days=3000), "p2")) is True
    products.on_returned(db, contact(), ev("product.returned", T0, product_id="p1"))
    assert set(facts.warranty_ends_at(ctx(db, T0))) == {"p2"}
    with pytest.raises(ValueError, match="not registered"):
        products.on_returned(db, contact(), ev("product.returned", T0, product_id="p9"))
    with pytest.raises(ValueError, match="needs 'months'"):
        products.on_extended(db, contact(), ev("warranty.extended", T0, product_id="p2"))


def _offer(db, kind: str, at: datetime, days: int = 30, **extra: Any) -> None:
    db["warranty_offers"].insert(
        {
            "offer_id": f"o-{kind}-{at.isoformat()}",
            "contact_id": "c1",
            "product_id": "p1",
            "kind": kind,
            "price_minor": 3900,
            "currency": "USD",
            "offered_at": utc_text(at),
            "expires_at": utc_text(at + timedelta(days=days)),
            **extra,
        }
    )


def test_a_purchase_accepts_the_latest_open_offer_made_before_it(db):
    register(db, sku="CAM-1", purchased_at="2026-02-20")
    _offer(db, "extension", T0)
    _offer(db, "extension", T0 + timedelta(days=10))
    _offer(db, "extension", T0 + timedelta(days=40))  # made after the purchase below
    _offer(db, "service_agreement", T0, days=5)  # expired before the purchase below
    bought = T0 + timedelta(days=20)
    products.on_extended(db, contact(), ev("warranty.extended", bought, product_id="p1", months=12))
    products.on_service_agreement(
        db, contact(), ev("service_agreement.purchased", bought, product_id="p1")
    )
    statuses = [
        (r["kind"], r["offered_at"][:10], r["status"])
        for r in db["warranty_offers"].rows(order_by=["kind", "offered_at"])
    ]
    assert statuses == [
        ("extension", "2026-03-01", "open"),
        ("extension", "2026-03-11", "accepted"),
        ("extension", "2026-04-10", "open"),
        ("service_agreement", "2026-03-01", "open"),
    ]


def test_registering_the_successor_accepts_an_upgrade_offer(db):
    register(db, sku="CAM-1", purchased_at="2026-02-20")
    _offer(db, "upgrade", T0, sku="CAM-2")
    register(db, T0 + timedelta(days=3), product_id="p2", sku="CAM-2")
    assert db["warranty_offers"].one()["status"] == "accepted"


# -- the demo's derived events -----------------------------------------------------------------


def test_extra_events_are_deterministic_and_follow_their_registrations():
    from clm_engine.synthetic import generate_events

    history = list(generate_events(300, months=6, seed=7))
    derived = extra_events(history, seed=7)
    assert derived == extra_events(history, seed=7)
    types = {e["type"] for e in derived}
    assert types == {
        "warranty.extended",
        "service_agreement.purchased",
        "product.returned",
        "product.registered",  # older devices, and the successors bought for them
    }
    registered = {
        e["properties"]["product_id"]: e["occurred_at"]
        for e in history + derived
        if e["type"] == "product.registered"
    }
    for event in derived:
        Event.model_validate(event)
        if event["type"] != "product.registered":
            assert event["occurred_at"] > registered[event["properties"]["product_id"]]
        elif "replaces" in event["properties"]:
            assert event["occurred_at"] > registered[event["properties"]["replaces"]]
    cut = extra_events(history, seed=7, until="2026-11-01")
    assert cut and all(e["occurred_at"] <= "2026-11-01" for e in cut)
    assert len(cut) < len(derived)


def test_the_demos_older_devices_are_as_in_the_example_catalogue():
    from clm_warranty.demo import LEGACY

    document = Catalogue.model_validate_json(_example_catalogue().read_text())
    for sku, name, price, warranty, life, successor in LEGACY:
        item = document.products[sku]
        assert (item.name, item.price_minor, item.warranty_months) == (name, price, warranty)
        assert (item.expected_life_months, item.successor) == (life, successor)
