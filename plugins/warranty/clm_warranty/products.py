"""Registered products and the offers made for them: the plugin's tables and the handlers that
keep them from events.

Why event handlers and not reducers: a product is an entity of its own (a contact owns many,
each with its own dates) that rules time themselves on, and facts read it with SQL. Reducers
can only fold into the contact's JSON. A handler runs once per newly stored event, inside the
transaction that stores it, so the table and the event log never disagree.

Events and their effect on ``warranty_products``:

- ``product.registered``: creates the registration (idempotent on ``product_id``: a second
  registration of the same product by the same contact only fills what was unknown);
- ``warranty.extended``: moves the warranty end (``months`` added, or a new ``warranty_ends_at``);
- ``service_agreement.purchased``: sets the service agreement (and its end, if it has one);
- ``product.returned``: closes the registration (``status = 'returned'``): its reminders stop.

The handlers are written so that the order of arrival does not matter where it can: months of
extension add up, explicit end dates keep the latest, a return stays a return.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from clm_engine import Contact, Erasure, Event, money

from .dates import add_months, parse_moment, utc_text

migrations = Migrations("clm_warranty")

#: Offer kinds, as recorded in ``warranty_offers.kind`` and reported.
EXTENSION, SERVICE_AGREEMENT, UPGRADE = "extension", "service_agreement", "upgrade"
KINDS = (EXTENSION, SERVICE_AGREEMENT, UPGRADE)

#: Registration properties with a column of their own; the rest is kept in ``data``.
_COLUMNS = {
    "product_id",
    "sku",
    "name",
    "serial",
    "purchased_at",
    "warranty_months",
    "warranty_ends_at",
    "price",
    "price_minor",
    "currency",
    "service_agreement",
    "service_agreement_ends_at",
}


@migrations()
def m001_initial(db: Database) -> None:
    # One statement at a time: sqlite3's executescript() would COMMIT the caller's transaction.
    db.execute(
        """
        CREATE TABLE warranty_products (
            product_id TEXT PRIMARY KEY,
            contact_id TEXT NOT NULL,
            sku TEXT,
            name TEXT,
            serial TEXT,
            purchased_at TEXT,
            warranty_ends_at TEXT,            -- fixed-width UTC text: text order is time order
            price REAL,
            has_service_agreement INTEGER DEFAULT 0,
            data TEXT                         -- the rest of the registration, as JSON
        )
        """
    )
    db.execute("CREATE INDEX warranty_products_by_contact ON warranty_products (contact_id)")
    db.execute("CREATE INDEX warranty_products_by_ends_at ON warranty_products (warranty_ends_at)")


@migrations()
def m002_minor_units_lifecycle_and_offers(db: Database) -> None:
    """Prices in integer minor units, what extends or closes a registration, and offers.

    ``price`` (REAL, major units) becomes ``price_minor`` (INTEGER, cents): a float cannot hold
    19.99 exactly. Existing prices are converted by rounding to the nearest cent.
    """
    table = "warranty_products"
    db.execute(f"ALTER TABLE {table} ADD COLUMN price_minor INTEGER")
    db.execute(
        f"UPDATE {table} SET price_minor = CAST(ROUND(price * 100) AS INTEGER) "
        "WHERE price IS NOT NULL"
    )
    db.execute(f"ALTER TABLE {table} DROP COLUMN price")
    for column in (
        "currency TEXT",
        "warranty_months INTEGER",  # as registered; NULL: the catalogue's
        "extension_months INTEGER NOT NULL DEFAULT 0",  # warranty.extended {months}, summed
        "extended_to TEXT",  # warranty.extended {warranty_ends_at}, the latest
        "service_agreement_ends_at TEXT",  # NULL with has_service_agreement = 1: open-ended
        "status TEXT NOT NULL DEFAULT 'active'",  # active, returned
        "registered_at TEXT",
        "returned_at TEXT",
    ):
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    db.execute(
        """
        CREATE TABLE warranty_offers (
            offer_id TEXT PRIMARY KEY,        -- the offering action's idempotency key
            contact_id TEXT NOT NULL,
            product_id TEXT NOT NULL,
            kind TEXT NOT NULL,               -- extension, service_agreement, upgrade
            sku TEXT,                         -- what is offered (the successor, for upgrades)
            months INTEGER,                   -- how long an extension or agreement runs
            price_minor INTEGER NOT NULL,
            currency TEXT NOT NULL,
            offered_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            sent INTEGER NOT NULL DEFAULT 1,  -- reminders that carried this offer
            status TEXT NOT NULL DEFAULT 'open',  -- open, accepted, withdrawn
            accepted_at TEXT,
            accepted_event_id TEXT,
            ruleset TEXT,
            rule TEXT
        )
        """
    )
    db.execute(
        "CREATE INDEX warranty_offers_by_product ON warranty_offers (product_id, kind, offered_at)"
    )
    db.execute("CREATE INDEX warranty_offers_by_contact ON warranty_offers (contact_id)")
    db.execute("CREATE INDEX warranty_offers_by_kind ON warranty_offers (kind, status)")


# -- checking what events say ------------------------------------------------------------------


def product_id_of(event: Event) -> str:
    """The event's ``product_id``: every product event needs one."""
    product_id = event.properties.get("product_id")
    if not isinstance(product_id, str) or not product_id.strip():
        raise ValueError(
            f"a {event.type} event needs a non-empty string 'product_id' (got {product_id!r})"
        )
    return product_id


def _string(props: dict[str, Any], key: str) -> str | None:
    value = props.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"a product's {key!r} must be a string (got {value!r})")
    return value


def _months(props: dict[str, Any], key: str, low: int = 0) -> int | None:
    value = props.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 1200:
        raise ValueError(f"{key!r} must be a whole number from {low} to 1200 (got {value!r})")
    return value


def _moment(props: dict[str, Any], key: str) -> datetime | None:
    value = props.get(key)
    return None if value is None else parse_moment(value, f"{key!r}")


def to_minor(value: Any, what: str = "'price'") -> int:
    """An amount in major units (``129``, ``"19.99"``, ``19.99`` from an event's JSON) as
    integer minor units (cents), by the core's exact decimal conversion."""
    try:
        amount = money.to_minor(value, allow_float=True)
    except ValueError:
        amount = None  # not a number, or a fraction of a cent
    if amount is None or amount < 0:
        raise ValueError(
            f"{what} must be a positive amount like 19.99, in whole cents (got {value!r})"
        )
    return amount


def price_of(props: dict[str, Any]) -> int | None:
    """``price_minor`` (integer cents) if given, else ``price`` (major units) converted."""
    minor = props.get("price_minor")
    if minor is not None:
        if not isinstance(minor, int) or isinstance(minor, bool) or minor < 0:
            raise ValueError(f"'price_minor' must be a whole number of cents (got {minor!r})")
        return minor
    price = props.get("price")
    return None if price is None else to_minor(price)


def check_registration(event: Event) -> dict[str, Any]:
    """The columns of a ``product.registered`` event's row, after checking every property.

    Raises ``ValueError`` naming the property, which the engine records as the failure.
    """
    props = event.properties
    product_id = product_id_of(event)
    for key in ("sku", "name", "serial"):
        _string(props, key)
    currency = _string(props, "currency")
    if currency is not None and not (len(currency) == 3 and currency.isalpha()):
        raise ValueError(f"'currency' must be an ISO 4217 code like 'USD' (got {currency!r})")
    purchased = _moment(props, "purchased_at") or event.occurred_at
    months = _months(props, "warranty_months")
    ends = _moment(props, "warranty_ends_at")
    if ends is None and months is not None:
        ends = add_months(purchased, months)
    agreement = props.get("service_agreement", False)
    if not isinstance(agreement, bool):
        raise ValueError(f"'service_agreement' must be true or false (got {agreement!r})")
    agreement_ends = _moment(props, "service_agreement_ends_at")
    extra = {k: v for k, v in props.items() if k not in _COLUMNS}
    return {
        "product_id": product_id,
        "sku": props.get("sku"),
        "name": props.get("name"),
        "serial": props.get("serial"),
        "purchased_at": utc_text(purchased),
        "warranty_months": months,
        "warranty_ends_at": utc_text(ends) if ends else None,
        "price_minor": price_of(props),
        "currency": currency.upper() if currency else None,
        "has_service_agreement": int(agreement or agreement_ends is not None),
        "service_agreement_ends_at": utc_text(agreement_ends) if agreement_ends else None,
        "data": json.dumps(extra, sort_keys=True) if extra else None,
    }


# -- handlers ----------------------------------------------------------------------------------


def _owned(db: Database, contact: Contact, event: Event) -> dict[str, Any]:
    """The registration an event is about, which must belong to the event's contact."""
    product_id = product_id_of(event)
    rows = list(db.query("SELECT * FROM warranty_products WHERE product_id = ?", [product_id]))
    if not rows:
        raise ValueError(
            f"{event.type} for product {product_id!r}, which is not registered: "
            "ingest its product.registered event first, then retry this one"
        )
    if rows[0]["contact_id"] != contact.id:
        raise ValueError(f"product {product_id!r} is registered to another contact")
    return rows[0]


def on_registered(db: Database, contact: Contact, event: Event) -> None:
    """``product.registered``: create the registration, or fill in what was unknown.

    Idempotent on ``product_id``: registering a product again (a second form, a re-import)
    never resets its extensions, agreement or status. A product registered to another contact
    is refused (transfers are not supported: return it first, or forget the old owner).
    Also accepts an open upgrade offer whose successor SKU the contact just registered.
    """
    row = check_registration(event)
    existing = list(
        db.query(
            "SELECT contact_id FROM warranty_products WHERE product_id = ?", [row["product_id"]]
        )
    )
    if existing and existing[0]["contact_id"] != contact.id:
        raise ValueError(f"product {row['product_id']!r} is registered to another contact")
    at = utc_text(event.occurred_at)
    db.execute(
        """
        INSERT INTO warranty_products (
            product_id, contact_id, sku, name, serial, purchased_at, warranty_months,
            warranty_ends_at, price_minor, currency, has_service_agreement,
            service_agreement_ends_at, data, registered_at
        ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (product_id) DO UPDATE SET
            sku = COALESCE(sku, excluded.sku),
            name = COALESCE(name, excluded.name),
            serial = COALESCE(serial, excluded.serial),
            warranty_months = COALESCE(warranty_months, excluded.warranty_months),
            warranty_ends_at = COALESCE(warranty_ends_at, excluded.warranty_ends_at),
            price_minor = COALESCE(price_minor, excluded.price_minor),
            currency = COALESCE(currency, excluded.currency),
            has_service_agreement = MAX(has_service_agreement, excluded.has_service_agreement),
            service_agreement_ends_at = COALESCE(
                service_agreement_ends_at, excluded.service_agreement_ends_at
            ),
            data = COALESCE(data, excluded.data),
            registered_at = MIN(
                COALESCE(registered_at, excluded.registered_at), excluded.registered_at
            )
        """,
        [
            row["product_id"],
            contact.id,
            row["sku"],
            row["name"],
            row["serial"],
            row["purchased_at"],
            row["warranty_months"],
            row["warranty_ends_at"],
            row["price_minor"],
            row["currency"],
            row["has_service_agreement"],
            row["service_agreement_ends_at"],
            row["data"],
            at,
        ],
    )
    if row["sku"]:
        _accept(db, event, kind=UPGRADE, contact_id=contact.id, sku=row["sku"])


def on_extended(db: Database, contact: Contact, event: Event) -> None:
    """``warranty.extended``: ``months`` (added to the warranty) or a new ``warranty_ends_at``.

    Months add up and an explicit end keeps the latest, so two extensions give the same result
    in either order of arrival. Marks the product's latest open extension offer accepted.
    """
    product = _owned(db, contact, event)
    props = event.properties
    months = _months(props, "months", low=1)
    ends = _moment(props, "warranty_ends_at")
    if months is None and ends is None:
        raise ValueError(
            "a warranty.extended event needs 'months' (added to the warranty) or "
            "'warranty_ends_at' (the new end date)"
        )
    price_of(props)  # checked, kept in the event
    db.execute(
        "UPDATE warranty_products SET extension_months = extension_months + ?, "
        "extended_to = MAX(COALESCE(extended_to, ''), ?) WHERE product_id = ?",
        [months or 0, utc_text(ends) if ends else "", product["product_id"]],
    )
    db.execute(
        "UPDATE warranty_products SET extended_to = NULL WHERE product_id = ? AND extended_to = ''",
        [product["product_id"]],
    )
    _accept(db, event, kind=EXTENSION, product_id=product["product_id"])


def on_service_agreement(db: Database, contact: Contact, event: Event) -> None:
    """``service_agreement.purchased``: the product has one now, until ``ends_at`` or for
    ``months`` from the event (open-ended with neither). Accepts the latest open offer."""
    product = _owned(db, contact, event)
    props = event.properties
    months = _months(props, "months", low=1)
    ends = _moment(props, "ends_at")
    if ends is None and months is not None:
        ends = add_months(event.occurred_at, months)
    price_of(props)
    current = product["service_agreement_ends_at"]
    if product["has_service_agreement"] and current is None:
        new_end = None  # an open-ended agreement stays open-ended
    elif ends is None:
        new_end = None
    else:
        new_end = max(current or "", utc_text(ends))
    db.execute(
        "UPDATE warranty_products SET has_service_agreement = 1, service_agreement_ends_at = ? "
        "WHERE product_id = ?",
        [new_end, product["product_id"]],
    )
    _accept(db, event, kind=SERVICE_AGREEMENT, product_id=product["product_id"])


def on_returned(db: Database, contact: Contact, event: Event) -> None:
    """``product.returned``: close the registration; its pending reminders are cancelled
    (the anchor facts leave it out) and its open offers are withdrawn."""
    product = _owned(db, contact, event)
    at = utc_text(event.occurred_at)
    db.execute(
        "UPDATE warranty_products SET status = 'returned', "
        "returned_at = MIN(COALESCE(returned_at, ?), ?) WHERE product_id = ?",
        [at, at, product["product_id"]],
    )
    db.execute(
        "UPDATE warranty_offers SET status = 'withdrawn' WHERE product_id = ? AND status = 'open'",
        [product["product_id"]],
    )


def _accept(
    db: Database,
    event: Event,
    *,
    kind: str,
    product_id: str | None = None,
    contact_id: str | None = None,
    sku: str | None = None,
) -> None:
    """Mark the latest open offer of ``kind`` that the event takes up as accepted.

    Only an offer made before the purchase and still valid then counts: a purchase after the
    offer expired is not the offer's conversion.
    """
    at = utc_text(event.occurred_at)
    args: list[str | None]
    if product_id is not None:
        where, args = "product_id = ?", [product_id]
    else:
        where, args = "contact_id = ? AND sku = ?", [contact_id, sku]
    db.execute(
        f"""
        UPDATE warranty_offers SET status = 'accepted', accepted_at = ?, accepted_event_id = ?
        WHERE offer_id = (
            SELECT offer_id FROM warranty_offers
            WHERE {where} AND kind = ? AND status = 'open' AND offered_at <= ? AND expires_at >= ?
            ORDER BY offered_at DESC LIMIT 1
        )
        """,
        [at, event.id, *args, kind, at, at],
    )


def forget(db: Database, contact_id: str, erasure: Erasure | None = None) -> dict[str, int]:
    """GDPR erasure: the contact's registrations and offers are deleted; another contact's row
    that mentions them (an offer's text naming them) is pseudonymised."""
    removed = {}
    for table in ("warranty_products", "warranty_offers"):
        if db[table].exists():
            cursor = db.execute(f"DELETE FROM {table} WHERE contact_id = ?", [contact_id])
            removed[table] = cursor.rowcount
            if erasure is not None:
                erasure.rewrite_table(db, table)
    return removed
