"""Facts about a contact's products, for rule conditions and relative-time triggers.

Two families:

- **Anchor facts** give a date per product, ``{product_id: date}``, for the contact's *active*
  products: ``product.warranty_ends_at``, ``product.end_of_life_at``, ``product.purchased_at``.
  A rule ``{"when": {"before": "product.warranty_ends_at", "days": 30}}`` gets one anchor per
  product; when a date moves (an extension) the pending fire moves, and a returned product
  drops out of the mapping, which cancels its pending fires.
- **Per-product facts** answer for one product: the entity the rule fires for (``ctx.entity``,
  set by the anchor), or else the ``product_id`` property of the triggering event, so the same
  facts work in ``product.registered`` event rules.

Every fact reads the plugin's table through ``ctx.tables`` (once per evaluation: the rows are
kept in ``ctx.cache``) and the catalogue through ``ctx.documents``; without a store, or for a
product the contact does not own, a fact is ``MISSING`` (its leaf is false).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from clm_engine import MISSING, FactContext

from .catalogue import CatalogueItem, lookup
from .dates import add_months, optional_moment, utc_text, whole_days

_ROWS = ("clm_warranty", "products")
#: What the facts read of a registration.
FACT_COLUMNS = (
    "product_id",
    "sku",
    "status",
    "purchased_at",
    "warranty_months",
    "warranty_ends_at",
    "extension_months",
    "extended_to",
    "has_service_agreement",
    "service_agreement_ends_at",
    "price_minor",
)


# -- what a registration comes to, given the catalogue ------------------------------------------


def warranty_end(row: Mapping[str, Any], item: CatalogueItem | None) -> datetime | None:
    """The warranty's current end: as registered (or purchase + the catalogue's months), plus
    the months of every extension, or the latest explicit new end if that is later."""
    base = optional_moment(row.get("warranty_ends_at"))
    purchased = optional_moment(row.get("purchased_at"))
    if base is None and purchased is not None:
        months = row.get("warranty_months")
        if months is None and item is not None:
            months = item.warranty_months
        if months is not None:
            base = add_months(purchased, months)
    if base is not None and row.get("extension_months"):
        base = add_months(base, row["extension_months"])
    extended_to = optional_moment(row.get("extended_to"))
    ends = [moment for moment in (base, extended_to) if moment is not None]
    return max(ends) if ends else None


def end_of_life(row: Mapping[str, Any], item: CatalogueItem | None) -> datetime | None:
    """Purchase plus the catalogue's expected useful life (``None`` if either is unknown)."""
    purchased = optional_moment(row.get("purchased_at"))
    if purchased is None or item is None or item.expected_life_months is None:
        return None
    return add_months(purchased, item.expected_life_months)


def agreement_active(row: Mapping[str, Any], now: datetime) -> bool:
    """Whether the product is covered by a service agreement at ``now``."""
    if not row.get("has_service_agreement"):
        return False
    ends = row.get("service_agreement_ends_at")
    return ends is None or ends > utc_text(now)


# -- reading ---------------------------------------------------------------------------------


def products_of(ctx: FactContext) -> list[dict[str, Any]] | None:
    """The contact's registrations (active and returned), read once per evaluation.

    One indexed query, and none for a contact who never registered a product (the reducer's
    ``metrics["product_ids"]`` says so), with no check that the table exists: facts run for
    every relative-time rule on every event a contact gets, so each query counts (the
    plugin's migrations created the table before any rule could ask).
    """
    cache = getattr(ctx, "cache", None)
    if cache is not None and _ROWS in cache:
        cached: list[dict[str, Any]] = cache[_ROWS]
        return cached
    tables = ctx.tables
    if tables is None:
        return None
    if not ctx.contact.metrics.get("product_ids"):
        return []  # the registration reducer keeps this list: no product, no query
    rows = tables["warranty_products"].rows(
        {"contact_id": ctx.contact.id}, columns=FACT_COLUMNS, order_by=["product_id"]
    )
    if cache is not None:
        cache[_ROWS] = rows
    return rows


def _item(ctx: FactContext, row: Mapping[str, Any]) -> CatalogueItem | None:
    found = lookup(getattr(ctx, "documents", None), row.get("sku"))
    return found[1] if found else None


def _product(ctx: FactContext) -> dict[str, Any] | None:
    """The product a per-product fact is about: the anchor's entity, or the event's product."""
    product_id = getattr(ctx, "entity", None)
    event = getattr(ctx, "event", None)
    if product_id is None and event is not None:
        product_id = event.properties.get("product_id")
    if not isinstance(product_id, str):
        return None
    for row in products_of(ctx) or ():
        if row["product_id"] == product_id:
            return row
    return None


def _dates(ctx: FactContext, date_of: Callable[..., datetime | None]) -> Any:
    rows = products_of(ctx)
    if rows is None:
        return MISSING
    found = {}
    for row in rows:
        if row["status"] != "active":
            continue
        moment = date_of(row, _item(ctx, row))
        if moment is not None:
            found[row["product_id"]] = utc_text(moment)
    return found


#: The events whose handlers change a product's row (``products.on_*``): the only ones after
#: which a product date may differ.
PRODUCT_EVENTS = frozenset(
    {"product.registered", "warranty.extended", "service_agreement.purchased", "product.returned"}
)


# -- the facts ---------------------------------------------------------------------------------


def warranty_ends_at(ctx: FactContext) -> Any:
    """``{product_id: date}``: when each active product's warranty ends (extensions included)."""
    return _dates(ctx, warranty_end)


def end_of_life_at(ctx: FactContext) -> Any:
    """``{product_id: date}``: purchase plus the catalogue's expected useful life."""
    return _dates(ctx, end_of_life)


def purchased_at(ctx: FactContext) -> Any:
    """``{product_id: date}``: when each active product was bought."""
    return _dates(ctx, lambda row, _item: optional_moment(row["purchased_at"]))


def days_until_warranty_end(ctx: FactContext) -> Any:
    """Whole days from now until the product's warranty ends (negative once it has ended)."""
    row = _product(ctx)
    ends = warranty_end(row, _item(ctx, row)) if row else None
    return MISSING if ends is None else whole_days(ctx.now, ends)


def has_service_agreement(ctx: FactContext) -> Any:
    """Whether the product is covered by a service agreement now."""
    row = _product(ctx)
    return MISSING if row is None else agreement_active(row, ctx.now)


def extended(ctx: FactContext) -> Any:
    """Whether the product's warranty was ever extended (``warranty.extended``)."""
    row = _product(ctx)
    if row is None:
        return MISSING
    return bool(row["extension_months"] or row["extended_to"])


def age_days(ctx: FactContext) -> Any:
    """Whole days since the product was bought."""
    row = _product(ctx)
    bought = optional_moment(row["purchased_at"]) if row else None
    return MISSING if bought is None else whole_days(bought, ctx.now)


def life_used(ctx: FactContext) -> Any:
    """The share of the expected useful life used so far: 0.5 halfway, 1.0 at its end."""
    row = _product(ctx)
    if row is None:
        return MISSING
    bought = optional_moment(row["purchased_at"])
    eol = end_of_life(row, _item(ctx, row))
    if bought is None or eol is None or eol <= bought:
        return MISSING
    return round((ctx.now - bought) / (eol - bought), 4)


def price_minor(ctx: FactContext) -> Any:
    """What the customer paid, in minor units (cents): 30000 is 300.00."""
    row = _product(ctx)
    if row is None or row["price_minor"] is None:
        return MISSING
    return row["price_minor"]


def sku(ctx: FactContext) -> Any:
    """The product's SKU."""
    row = _product(ctx)
    return MISSING if row is None or row["sku"] is None else row["sku"]


def status(ctx: FactContext) -> Any:
    """``"active"``, or ``"returned"`` after ``product.returned``."""
    row = _product(ctx)
    return MISSING if row is None else row["status"]


def other_skus(ctx: FactContext) -> Any:
    """The SKUs of the contact's other active products (a list: test with ``contains``)."""
    row = _product(ctx)
    if row is None:
        return MISSING
    return sorted(
        {
            other["sku"]
            for other in products_of(ctx) or ()
            if other["product_id"] != row["product_id"]
            and other["status"] == "active"
            and other["sku"]
        }
    )


def other_products(ctx: FactContext) -> Any:
    """How many other active products the contact owns."""
    row = _product(ctx)
    if row is None:
        return MISSING
    return sum(
        1
        for other in products_of(ctx) or ()
        if other["product_id"] != row["product_id"] and other["status"] == "active"
    )


#: Every fact: name -> (compute, description, type: a ``clm_engine.plugins.FactType``).
FACTS = {
    "product.warranty_ends_at": (warranty_ends_at, warranty_ends_at.__doc__, "dates"),
    "product.end_of_life_at": (end_of_life_at, end_of_life_at.__doc__, "dates"),
    "product.purchased_at": (purchased_at, purchased_at.__doc__, "dates"),
    "product.days_until_warranty_end": (
        days_until_warranty_end,
        days_until_warranty_end.__doc__,
        "number",
    ),
    "product.has_service_agreement": (
        has_service_agreement,
        has_service_agreement.__doc__,
        "boolean",
    ),
    "product.extended": (extended, extended.__doc__, "boolean"),
    "product.age_days": (age_days, age_days.__doc__, "number"),
    "product.life_used": (life_used, life_used.__doc__, "number"),
    "product.price_minor": (price_minor, price_minor.__doc__, "number"),
    "product.sku": (sku, sku.__doc__, "text"),
    "product.status": (status, status.__doc__, "text"),
    "product.other_skus": (other_skus, other_skus.__doc__, "list"),
    "product.other_products": (other_products, other_products.__doc__, "number"),
}
