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

from clm_engine import Contact, Event, hookimpl

from . import facts, products
from .products import migrations


def apply_registration(contact: Contact, event: Event) -> None:
    """``product.registered``: the contact's registered products.

    Properties: ``product_id`` (required), ``sku``, ``name``, ``purchased_at`` (ISO 8601) and
    ``warranty_months`` (all optional, checked when present). ``metrics["product_ids"]`` is the
    sorted list of distinct product ids and ``metrics["products_registered"]`` their number, so
    registering the same product twice counts it once.
    """
    product_id = products.check_registration(event)["product_id"]
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
def register_facts(register):
    for name, (compute, description) in facts.FACTS.items():
        register(name, compute, description=" ".join(description.split()))


@hookimpl
def register_commands(cli):
    from .cli import warranty

    cli.add_command(warranty)


@hookimpl
def forget_contact(db, contact_id):
    return products.forget(db, contact_id)
