"""The product catalogue: what the shop sells per SKU, in a JSON document beside the rulesets.

Ops teams edit it like a ruleset, and the core validates it like one (file:line:col, JSON
pointer) because the plugin registers it as a document of kind ``catalogue``:

```json
{
  "catalogue": "aurora",
  "currency": "USD",
  "products": {
    "AUR-CAM-OUT": {
      "name": "Aurora Outdoor Camera",
      "price_minor": 24900,
      "warranty_months": 24,
      "expected_life_months": 60,
      "extension": {"months": 12, "price_minor": 3900},
      "service_agreement": {"months": 12, "price_minor": 5900},
      "successor": "AUR-CAM-OUT-2"
    }
  }
}
```

Amounts are integers in minor units (cents), never floats, so an offer's price is exact. An
``extension`` or ``service_agreement`` that is absent (or ``null``) is not sold for that SKU,
and its offers are skipped (with the reason recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

KIND = "catalogue"

#: A SKU as shops write them: letters, digits and ``-_.``, starting with a letter or digit.
Sku = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Sold(_Model):
    """An extension or a service agreement as sold for one SKU: how long, and its price."""

    months: int = Field(ge=1, le=120, description="How many months it adds or covers.")
    price_minor: int = Field(ge=0, description="Its price in minor units (cents): 3900 is 39.00.")


class CatalogueItem(_Model):
    """One SKU: its warranty, what is sold for it, how long it lasts and what replaces it."""

    name: str | None = Field(default=None, description="What customers call it.")
    price_minor: int | None = Field(
        default=None,
        ge=0,
        description="List price in minor units: the price of an upgrade offer to this SKU.",
    )
    warranty_months: int = Field(
        ge=0,
        le=1200,
        description="The warranty from purchase, used when a registration does not say.",
    )
    expected_life_months: int | None = Field(
        default=None, ge=1, le=1200, description="The expected useful life from purchase."
    )
    extension: Sold | None = Field(default=None, description="Extensions sold, or null.")
    service_agreement: Sold | None = Field(
        default=None, description="Service agreements sold, or null."
    )
    successor: Sku | None = Field(default=None, description="The SKU that replaces it.")


class Catalogue(_Model):
    """A catalogue document: ``{"catalogue": NAME, "currency": ..., "products": {SKU: ...}}``."""

    schema_: str | None = Field(default=None, alias="$schema", description="For editors.")
    catalogue: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="Its name.")
    description: str | None = None
    currency: str = Field(
        pattern=r"^[A-Z]{3}$", description="ISO 4217 code of every price in it (USD, EUR)."
    )
    products: dict[Sku, CatalogueItem]


def check_catalogue(document: Catalogue, context: Any) -> list[tuple[str, str]]:
    """What the model cannot say: successors must be sold, and a SKU lives in one catalogue.

    ``context.documents`` holds every loaded document by kind and name, so a successor may
    come from another catalogue; an upgrade offer needs its price, so a successor without
    ``price_minor`` is a problem too.
    """
    problems: list[tuple[str, str]] = []
    others = {
        name: other
        for name, other in (_documents_of(context).get(KIND) or {}).items()
        if name != document.catalogue
    }
    for sku, item in document.products.items():
        pointer = f"/products/{_escape(sku)}"
        for name, other in sorted(others.items()):
            if sku in other.products:
                problems.append((pointer, f"SKU {sku!r} is also in catalogue {name!r}"))
        if item.successor is None:
            continue
        if item.successor == sku:
            problems.append((f"{pointer}/successor", f"SKU {sku!r} cannot succeed itself"))
            continue
        found = lookup({KIND: {document.catalogue: document, **others}}, item.successor)
        if found is None:
            known = ", ".join(sorted(document.products)[:8])
            problems.append(
                (
                    f"{pointer}/successor",
                    f"successor {item.successor!r} is in no catalogue (this one has: {known})",
                )
            )
        elif found[1].price_minor is None:
            problems.append(
                (
                    f"{pointer}/successor",
                    f"successor {item.successor!r} has no price_minor, which upgrade offers need",
                )
            )
    return problems


def lookup(
    documents: Mapping[str, Mapping[str, Any]] | None, sku: str | None
) -> tuple[Catalogue, CatalogueItem] | None:
    """The catalogue and entry of ``sku`` among the loaded documents, or ``None``."""
    if not documents or sku is None:
        return None
    for catalogue in (documents.get(KIND) or {}).values():
        item = catalogue.products.get(sku)
        if item is not None:
            return catalogue, item
    return None


def _documents_of(context: Any) -> Mapping[str, Mapping[str, Any]]:
    documents = getattr(context, "documents", None)
    return documents if isinstance(documents, Mapping) else {}


def _escape(token: str) -> str:
    """A JSON pointer token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")
