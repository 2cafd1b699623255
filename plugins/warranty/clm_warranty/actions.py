"""The offer actions: an extension, a service agreement, or the successor of a worn product.

Each records the offer in ``warranty_offers`` (kind, product, price in minor units, currency,
when it was made and until when it holds) through ``ctx.tables``, so the row commits with
the action being marked done: exactly once, whatever retries happen. Then, if the rule names an
``email_template`` and an ``email.send`` action is installed (the clm-email plugin), it hands
the message over as a follow-up action with the offer's fields as template data.

Why the checks at dispatch (recorded as "skipped" with the reason): between the rule firing
and the action running, the customer may have extended the warranty, bought an agreement or
returned the product, and the catalogue may have stopped selling what the rule offers.

A reminder sequence (60, 30, 7 days before the warranty ends) carries one offer: while an
offer of the same kind for the product is open and unexpired, a later reminder re-sends it
(``sent`` counts them) instead of recording a new one, so "offers made" counts offers, not
emails.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clm_engine import ActionContext

from .catalogue import KIND as CATALOGUE
from .catalogue import CatalogueItem, lookup
from .dates import utc_text
from .facts import agreement_active, warranty_end
from .products import EXTENSION, SERVICE_AGREEMENT, UPGRADE
from .reports import money

#: How long an offer holds when the rule does not say (an extension: until the warranty ends).
DEFAULT_VALID_DAYS = 30
EMAIL_ACTION = "email.send"


class OfferParams(BaseModel):
    """What every offer action takes in a rule's ``with``."""

    model_config = ConfigDict(extra="forbid")

    email_template: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "The email plugin's template for the message; leave out to record the offer only "
            "(also what happens when no email.send action is installed)."
        ),
    )
    reply_to: str | None = Field(default=None, description="Passed on to email.send.")
    valid_days: int | None = Field(
        default=None,
        ge=1,
        le=365,
        description=(
            "How long the offer holds; default 30 days (an extension: until the warranty "
            "ends, and never beyond it)."
        ),
    )

    @classmethod
    def check_references(cls, params: OfferParams, documents: dict[str, Any]) -> list[str]:
        """At load: offers price what the catalogue says, so one must be loaded."""
        if not (documents or {}).get(CATALOGUE):
            return [
                "warranty offers need a product catalogue: add a catalogue document "
                '({"catalogue": "NAME", "currency": ..., "products": {...}}) to the rulesets'
            ]
        return []


class UpgradeParams(OfferParams):
    discount_percent: int = Field(
        default=0,
        ge=0,
        le=90,
        description="Off the successor's list price, in whole percent.",
    )


def offer_extension(ctx: ActionContext, params: OfferParams) -> dict[str, Any]:
    """``warranty.offer_extension``: more warranty, as the catalogue sells it for the SKU."""

    def terms(row: dict[str, Any], item: CatalogueItem) -> dict[str, Any] | str:
        if item.extension is None:
            return f"extensions are not sold for SKU {row['sku']!r}"
        if row["extension_months"] or row["extended_to"]:
            return "the warranty was already extended"
        ends = warranty_end(row, item)
        if ends is None:
            return "the warranty's end is not known"
        if ends <= ctx.now:
            return f"the warranty ended on {utc_text(ends)[:10]}"
        valid = ends if params.valid_days is None else min(ends, _after(ctx, params.valid_days))
        return {
            "sku": row["sku"],
            "name": row["name"] or item.name,
            "months": item.extension.months,
            "price_minor": item.extension.price_minor,
            "expires_at": valid,
            "warranty_ends_at": utc_text(ends),
        }

    return _offer(ctx, params, EXTENSION, terms)


def offer_service_agreement(ctx: ActionContext, params: OfferParams) -> dict[str, Any]:
    """``warranty.offer_service_agreement``: for a product not covered by one."""

    def terms(row: dict[str, Any], item: CatalogueItem) -> dict[str, Any] | str:
        if item.service_agreement is None:
            return f"service agreements are not sold for SKU {row['sku']!r}"
        if agreement_active(row, ctx.now):
            return "the product already has a service agreement"
        return {
            "sku": row["sku"],
            "name": row["name"] or item.name,
            "months": item.service_agreement.months,
            "price_minor": item.service_agreement.price_minor,
            "expires_at": _after(ctx, params.valid_days or DEFAULT_VALID_DAYS),
        }

    return _offer(ctx, params, SERVICE_AGREEMENT, terms)


def offer_upgrade(ctx: ActionContext, params: UpgradeParams) -> dict[str, Any]:
    """``warranty.offer_upgrade``: the successor SKU, near the end of the product's life."""

    def terms(row: dict[str, Any], item: CatalogueItem) -> dict[str, Any] | str:
        if item.successor is None:
            return f"SKU {row['sku']!r} has no successor in the catalogue"
        found = lookup(ctx.documents, item.successor)
        if found is None or found[1].price_minor is None:
            return f"successor {item.successor!r} has no price in the catalogue"
        assert ctx.tables is not None  # _offer checked it
        owned = ctx.tables["warranty_products"].count(
            {"contact_id": ctx.contact.id, "sku": item.successor, "status": "active"}
        )
        if owned:
            return f"the contact already owns a {item.successor}"
        list_price = found[1].price_minor
        return {
            "sku": item.successor,
            "name": found[1].name,
            "months": None,
            "price_minor": (list_price * (100 - params.discount_percent) + 50) // 100,
            "list_price_minor": list_price,
            "currency": found[0].currency,
            "expires_at": _after(ctx, params.valid_days or DEFAULT_VALID_DAYS),
            "replaces": row["sku"],
        }

    return _offer(ctx, params, UPGRADE, terms)


Terms = Callable[[dict[str, Any], CatalogueItem], "dict[str, Any] | str"]


def _after(ctx: ActionContext, days: int) -> datetime:
    return ctx.now + timedelta(days=days)


def _offer(ctx: ActionContext, params: OfferParams, kind: str, terms: Terms) -> dict[str, Any]:
    """Check the product, price the offer, record it (or re-send the open one), hand to email."""
    tables, product_id = ctx.tables, ctx.entity
    if tables is None:
        return {"failed": "warranty offers need the engine's write transaction (ctx.tables)"}
    if product_id is None:
        return {
            "failed": "no product: time the rule on a product date (product.warranty_ends_at, "
            "product.end_of_life_at, product.purchased_at) or give it "
            '"limit": {"once_per": "event.properties.product_id"}'
        }
    row = tables["warranty_products"].one({"product_id": product_id, "contact_id": ctx.contact.id})
    if row is None:
        return {"skipped": f"product {product_id!r} is not registered to this contact"}
    if row["status"] != "active":
        return {"skipped": f"product {product_id!r} was {row['status']}"}
    found = lookup(ctx.documents, row["sku"])
    if found is None:
        return {"skipped": f"SKU {row['sku']!r} is in no catalogue"}
    catalogue, item = found
    offered = terms(row, item)
    if isinstance(offered, str):
        return {"skipped": offered}
    now_text = utc_text(ctx.now)
    currency = offered.get("currency") or catalogue.currency
    offers = tables["warranty_offers"]
    current = offers.one(
        {"product_id": product_id, "kind": kind, "status": "open", "expires_at": (">", now_text)},
        order_by=["-offered_at"],
    )
    if current is not None:
        offers.update({"offer_id": current["offer_id"]}, add={"sent": 1})
        offer = current
    else:
        offer = {
            "offer_id": ctx.key,
            "contact_id": ctx.contact.id,
            "product_id": product_id,
            "kind": kind,
            "sku": offered["sku"],
            "months": offered["months"],
            "price_minor": offered["price_minor"],
            "currency": currency,
            "offered_at": now_text,
            "expires_at": utc_text(offered["expires_at"]),
            "ruleset": ctx.ruleset,
            "rule": ctx.rule,
        }
        offers.insert(offer, on_conflict="ignore")
        # In the contact's history too: `clm contacts show` lists it, and rules can count
        # offers (events.count of warranty.offered) to cap them.
        ctx.emit(
            "warranty.offered",
            {
                k: offer[k]
                for k in ("offer_id", "kind", "product_id", "sku", "price_minor", "currency")
            }
            | {"expires_at": offer["expires_at"]},
        )
    result = {
        "offer": offer["offer_id"],
        "kind": kind,
        "product_id": product_id,
        "price_minor": offer["price_minor"],
        "currency": offer["currency"],
        "expires_at": offer["expires_at"],
        "reminder": current is not None,
    }
    result["email"] = _hand_to_email(ctx, params, offer, offered, row)
    return result


def _hand_to_email(
    ctx: ActionContext,
    params: OfferParams,
    offer: dict[str, Any],
    offered: dict[str, Any],
    row: dict[str, Any],
) -> str:
    """Queue the message through the email plugin, if the rule asks and it is installed."""
    if params.email_template is None:
        return "not asked (no email_template)"
    if EMAIL_ACTION not in ctx.actions:
        return f"not sent: no {EMAIL_ACTION} action is installed (the clm-email plugin)"
    data: dict[str, Any] = {
        "offer_id": offer["offer_id"],
        "offer_kind": offer["kind"],
        "product_id": offer["product_id"],
        "product_sku": row["sku"],
        "product_name": row["name"],
        "serial": row["serial"],
        "offered_sku": offer["sku"],
        "offered_name": offered.get("name"),
        "months": offer["months"],
        "price_minor": offer["price_minor"],
        "price": money(offer["price_minor"], None),
        "currency": offer["currency"],
        "expires_at": offer["expires_at"],
        "expires_on": offer["expires_at"][:10],
        **{
            k: offered[k]
            for k in ("warranty_ends_at", "list_price_minor", "replaces")
            if k in offered
        },
    }
    email = {"template": params.email_template, "category": "marketing", "data": data}
    if params.reply_to:
        email["reply_to"] = params.reply_to
    ctx.enqueue(EMAIL_ACTION, email, due_at=ctx.now, occurrence="email", entity=offer["product_id"])
    return "queued"


#: name -> (run, params model, description), registered by the plugin.
ACTIONS = {
    "warranty.offer_extension": (
        offer_extension,
        OfferParams,
        "Offer a warranty extension for the product (catalogue price); records the offer.",
    ),
    "warranty.offer_service_agreement": (
        offer_service_agreement,
        OfferParams,
        "Offer a service agreement for a product without one; records the offer.",
    ),
    "warranty.offer_upgrade": (
        offer_upgrade,
        UpgradeParams,
        "Offer the product's successor SKU near its end of life; records the offer.",
    ),
}
