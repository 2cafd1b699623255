"""clm-warranty: registered products and their warranties, for clm-engine.

What it does now:

* ``product.registered`` counts the contact's distinct registered products in
  ``metrics["products_registered"]`` and keeps their ids in ``metrics["product_ids"]``.
* Its own table, ``warranty_products``, created by its migrations.
* GDPR erasure of a contact's rows in that table.

Filling ``warranty_products`` from events, warranty-expiry facts and service-agreement offers
come in the plugin's own issue.
"""

from __future__ import annotations

from datetime import datetime

from sqlite_utils.migrations import Migrations

from clm_engine import Contact, Event, hookimpl

migrations = Migrations("clm_warranty")


@migrations()
def m001_initial(db) -> None:
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


def _check(event: Event) -> str:
    """The event's product id, after checking every property the plugin understands."""
    props = event.properties
    product_id = props.get("product_id")
    if not isinstance(product_id, str) or not product_id.strip():
        raise ValueError(
            f"a product.registered event needs a non-empty string 'product_id' (got {product_id!r})"
        )
    for key in ("sku", "name"):
        if props.get(key) is not None and not isinstance(props[key], str):
            raise ValueError(f"a product's {key!r} must be a string (got {props[key]!r})")
    purchased_at = props.get("purchased_at")
    if purchased_at is not None:
        try:
            datetime.fromisoformat(purchased_at)
        except (TypeError, ValueError):
            raise ValueError(
                "a product's 'purchased_at' must be an ISO 8601 date or time, like "
                f"'2026-11-02' (got {purchased_at!r})"
            ) from None
    months = props.get("warranty_months")
    if months is not None and (
        not isinstance(months, int) or isinstance(months, bool) or not 0 <= months <= 1200
    ):
        raise ValueError(
            f"a product's 'warranty_months' must be a whole number from 0 to 1200 (got {months!r})"
        )
    return product_id


def apply_registration(contact: Contact, event: Event) -> None:
    """``product.registered``: the contact's registered products.

    Properties: ``product_id`` (required), ``sku``, ``name``, ``purchased_at`` (ISO 8601) and
    ``warranty_months`` (all optional, checked when present). ``metrics["product_ids"]`` is the
    sorted list of distinct product ids and ``metrics["products_registered"]`` their number, so
    registering the same product twice counts it once.
    """
    product_id = _check(event)
    product_ids: list = contact.metrics.setdefault("product_ids", [])
    if product_id not in product_ids:
        product_ids.append(product_id)
        product_ids.sort()
    contact.metrics["products_registered"] = len(product_ids)


@hookimpl
def register_reducers(register):
    register("product.registered", apply_registration, name="warranty.product_registered")


@hookimpl
def register_migrations(register):
    register(migrations)


@hookimpl
def forget_contact(db, contact_id):
    if not db["warranty_products"].exists():
        return {}
    cursor = db.execute("DELETE FROM warranty_products WHERE contact_id = ?", [contact_id])
    return {"warranty_products": cursor.rowcount}
