"""clm-warranty: registered products, warranty reminders and offers, for clm-engine.

The hooks are here; the parts live beside them:

- ``products``: the tables (declared for any store) and the event handlers that keep them
  (``product.registered``, ``warranty.extended``, ``service_agreement.purchased``,
  ``product.returned``), and acceptance of offers;
- ``catalogue``: the catalogue document (per SKU: warranty, extensions and agreements sold,
  expected life, successor);
- ``facts``: anchor dates per product and per-product facts for conditions;
- ``actions``: the offer actions, which record offers and hand messages to the email plugin;
- ``reports`` and ``cli``: ``clm warranty products | upcoming | offers``;
- ``demo``: events and a summary for ``make demo``.

``README.md`` describes it for users.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clm_engine import Contact, Erasure, Event, Tables, hookimpl

from . import actions, catalogue, facts, products

if TYPE_CHECKING:
    import click


def apply_registration(contact: Contact, event: Event) -> None:
    """``product.registered``: the contact's registered products.

    Properties: ``product_id`` (required), ``sku``, ``name``, ``purchased_at`` (ISO 8601) and
    ``warranty_months`` (all optional, checked when present). ``metrics["product_ids"]`` is the
    sorted list of distinct product ids and ``metrics["products_registered"]`` their number, so
    registering the same product twice counts it once. The product facts read it to skip the
    table for contacts who never registered a product (most contacts, on most events).
    """
    product_id = products.check_registration(event)["product_id"]
    product_ids: list[Any] = contact.metrics.setdefault("product_ids", [])
    if product_id not in product_ids:
        product_ids.append(product_id)
        product_ids.sort()
    contact.metrics["products_registered"] = len(product_ids)


@hookimpl
def register_reducers(register: Callable[..., None]) -> None:
    register("product.registered", apply_registration, name="warranty.product_registered")


@hookimpl
def register_tables(register: Callable[..., None]) -> None:
    for table in products.TABLES:
        register(table)


@hookimpl
def register_event_handlers(register: Callable[..., None]) -> None:
    register("product.registered", products.on_registered, name="warranty.registered")
    register("warranty.extended", products.on_extended, name="warranty.extended")
    register(
        "service_agreement.purchased",
        products.on_service_agreement,
        name="warranty.service_agreement",
    )
    register("product.returned", products.on_returned, name="warranty.returned")


@hookimpl
def register_documents(register: Callable[..., None]) -> None:
    register(
        catalogue.KIND,
        catalogue.Catalogue,
        check=catalogue.check_catalogue,
        description="Products sold, per SKU: warranty, extensions, agreements, life, successor.",
    )


@hookimpl
def register_actions(register: Callable[..., None]) -> None:
    for name, (run, params, description) in actions.ACTIONS.items():
        register(name, run, params, description=description)


@hookimpl
def register_facts(register: Callable[..., None]) -> None:
    for name, (compute, description, kind) in facts.FACTS.items():
        register(
            name,
            compute,
            type=kind,
            description=" ".join((description or "").split()),
            # The product dates (the anchors of relative rules) change only with a product's
            # row: recomputed after these events, not after every event of a contact.
            moved_by=facts.PRODUCT_EVENTS if kind == "dates" else None,
        )


@hookimpl
def register_commands(cli: click.Group) -> None:
    from .cli import warranty

    cli.add_command(warranty)


@hookimpl
def forget_contact(tables: Tables, contact_id: str, erasure: Erasure) -> dict[str, int]:
    return products.forget(tables, contact_id, erasure)
