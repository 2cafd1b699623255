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

from datetime import datetime
from typing import TYPE_CHECKING, Any

from clm_engine import Column, Contact, Erasure, Event, Index, Table, Tables, money

from .dates import add_months, parse_moment, utc_text

if TYPE_CHECKING:
    pass  # the forget_contact hook's (erasure rewrites through it)

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

# The tables, declared for any store (``register_tables``). Stores made by the plugin's former
# sqlite-utils migrations (m001, m002) have exactly these columns and indexes already.
PRODUCTS = Table(
    "warranty_products",
    columns=(
        Column("product_id", "text"),
        Column("contact_id", "text", nullable=False),
        Column("sku", "text"),
        Column("name", "text"),
        Column("serial", "text"),
        Column("purchased_at", "timestamp"),
        Column("warranty_ends_at", "timestamp"),  # as registered; see facts.warranty_end
        Column("has_service_agreement", "boolean", default=False),
        Column("data", "json"),  # the rest of the registration
        Column("price_minor", "integer"),  # integer minor units: a float cannot hold 19.99
        Column("currency", "text"),
        Column("warranty_months", "integer"),  # as registered; NULL: the catalogue's
        Column("extension_months", "integer", nullable=False, default=0),  # summed
        Column("extended_to", "timestamp"),  # warranty.extended {warranty_ends_at}, the latest
        Column("service_agreement_ends_at", "timestamp"),  # NULL with an agreement: open-ended
        Column("status", "text", nullable=False, default="active"),  # active, returned
        Column("registered_at", "timestamp"),
        Column("returned_at", "timestamp"),
    ),
    primary_key=("product_id",),
    indexes=(
        Index(("contact_id",), name="warranty_products_by_contact"),
        Index(("warranty_ends_at",), name="warranty_products_by_ends_at"),
    ),
    description="Registered products: dates, price, agreement, status.",
)
OFFERS = Table(
    "warranty_offers",
    columns=(
        Column("offer_id", "text"),  # the offering action's idempotency key
        Column("contact_id", "text", nullable=False),
        Column("product_id", "text", nullable=False),
        Column("kind", "text", nullable=False),  # extension, service_agreement, upgrade
        Column("sku", "text"),  # what is offered (the successor, for upgrades)
        Column("months", "integer"),  # how long an extension or agreement runs
        Column("price_minor", "integer", nullable=False),
        Column("currency", "text", nullable=False),
        Column("offered_at", "timestamp", nullable=False),
        Column("expires_at", "timestamp", nullable=False),
        Column("sent", "integer", nullable=False, default=1),  # reminders that carried it
        Column("status", "text", nullable=False, default="open"),  # open, accepted, withdrawn
        Column("accepted_at", "timestamp"),
        Column("accepted_event_id", "text"),
        Column("ruleset", "text"),
        Column("rule", "text"),
    ),
    primary_key=("offer_id",),
    indexes=(
        Index(("product_id", "kind", "offered_at"), name="warranty_offers_by_product"),
        Index(("contact_id",), name="warranty_offers_by_contact"),
        Index(("kind", "status"), name="warranty_offers_by_kind"),
    ),
    description="Offers made (extension, service agreement, upgrade) and what became of them.",
)
TABLES = (PRODUCTS, OFFERS)


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
        "has_service_agreement": bool(agreement or agreement_ends is not None),
        "service_agreement_ends_at": utc_text(agreement_ends) if agreement_ends else None,
        "data": extra or None,
    }


# -- handlers ----------------------------------------------------------------------------------

#: What a second registration of a product may fill in: only what the first left unknown.
_FILLABLE = (
    "sku",
    "name",
    "serial",
    "warranty_months",
    "warranty_ends_at",
    "price_minor",
    "currency",
    "service_agreement_ends_at",
    "data",
)


def _owned(tables: Tables, contact: Contact, event: Event) -> dict[str, Any]:
    """The registration an event is about, which must belong to the event's contact."""
    product_id = product_id_of(event)
    row = tables["warranty_products"].one({"product_id": product_id}, for_update=True)
    if row is None:
        raise ValueError(
            f"{event.type} for product {product_id!r}, which is not registered: "
            "ingest its product.registered event first, then retry this one"
        )
    if row["contact_id"] != contact.id:
        raise ValueError(f"product {product_id!r} is registered to another contact")
    return row


def on_registered(tables: Tables, contact: Contact, event: Event) -> None:
    """``product.registered``: create the registration, or fill in what was unknown.

    Idempotent on ``product_id``: registering a product again (a second form, a re-import)
    never resets its extensions, agreement or status. A product registered to another contact
    is refused (transfers are not supported: return it first, or forget the old owner).
    Also accepts an open upgrade offer whose successor SKU the contact just registered.
    """
    row = check_registration(event)
    products = tables["warranty_products"]
    at = utc_text(event.occurred_at)
    existing = products.one({"product_id": row["product_id"]}, for_update=True)
    if existing is None:
        products.insert({**row, "contact_id": contact.id, "registered_at": at})
    elif existing["contact_id"] != contact.id:
        raise ValueError(f"product {row['product_id']!r} is registered to another contact")
    else:
        changes = {k: row[k] for k in _FILLABLE if existing[k] is None and row[k] is not None}
        if row["has_service_agreement"] and not existing["has_service_agreement"]:
            changes["has_service_agreement"] = True
        if existing["registered_at"] is None or at < existing["registered_at"]:
            changes["registered_at"] = at
        if changes:
            products.update({"product_id": row["product_id"]}, changes)
    if row["sku"]:
        _accept(tables, event, kind=UPGRADE, contact_id=contact.id, sku=row["sku"])


def on_extended(tables: Tables, contact: Contact, event: Event) -> None:
    """``warranty.extended``: ``months`` (added to the warranty) or a new ``warranty_ends_at``.

    Months add up and an explicit end keeps the latest, so two extensions give the same result
    in either order of arrival. Marks the product's latest open extension offer accepted.
    """
    product = _owned(tables, contact, event)
    props = event.properties
    months = _months(props, "months", low=1)
    ends = _moment(props, "warranty_ends_at")
    if months is None and ends is None:
        raise ValueError(
            "a warranty.extended event needs 'months' (added to the warranty) or "
            "'warranty_ends_at' (the new end date)"
        )
    price_of(props)  # checked, kept in the event
    changes: dict[str, Any] = {}
    if ends is not None and utc_text(ends) > (product["extended_to"] or ""):
        changes["extended_to"] = utc_text(ends)
    tables["warranty_products"].update(
        {"product_id": product["product_id"]}, changes, add={"extension_months": months or 0}
    )
    _accept(tables, event, kind=EXTENSION, product_id=product["product_id"])


def on_service_agreement(tables: Tables, contact: Contact, event: Event) -> None:
    """``service_agreement.purchased``: the product has one now, until ``ends_at`` or for
    ``months`` from the event (open-ended with neither). Accepts the latest open offer."""
    product = _owned(tables, contact, event)
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
    tables["warranty_products"].update(
        {"product_id": product["product_id"]},
        {"has_service_agreement": True, "service_agreement_ends_at": new_end},
    )
    _accept(tables, event, kind=SERVICE_AGREEMENT, product_id=product["product_id"])


def on_returned(tables: Tables, contact: Contact, event: Event) -> None:
    """``product.returned``: close the registration; its pending reminders are cancelled
    (the anchor facts leave it out) and its open offers are withdrawn."""
    product = _owned(tables, contact, event)
    at = utc_text(event.occurred_at)
    returned_at = min(product["returned_at"] or at, at)
    tables["warranty_products"].update(
        {"product_id": product["product_id"]}, {"status": "returned", "returned_at": returned_at}
    )
    tables["warranty_offers"].update(
        {"product_id": product["product_id"], "status": "open"}, {"status": "withdrawn"}
    )


def _accept(
    tables: Tables,
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
    offers = tables["warranty_offers"]
    which: dict[str, Any] = (
        {"product_id": product_id}
        if product_id is not None
        else {"contact_id": contact_id, "sku": sku}
    )
    offer = offers.one(
        {
            **which,
            "kind": kind,
            "status": "open",
            "offered_at": ("<=", at),
            "expires_at": (">=", at),
        },
        columns=["offer_id"],
        order_by=["-offered_at"],
        for_update=True,
    )
    if offer is not None:
        offers.update(
            {"offer_id": offer["offer_id"]},
            {"status": "accepted", "accepted_at": at, "accepted_event_id": event.id},
        )


def forget(tables: Tables, contact_id: str, erasure: Erasure) -> dict[str, int]:
    """GDPR erasure: the contact's registrations and offers are deleted; another contact's row
    that mentions them (an offer's text naming them) is pseudonymised."""
    removed = {}
    for table in ("warranty_products", "warranty_offers"):
        removed[table] = tables[table].delete({"contact_id": contact_id})
        tables[table].pseudonymise(erasure)
    return removed
