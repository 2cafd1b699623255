"""``clm warranty``: a contact's products, what fires soon, and how offers convert.

Read-only commands on the store (``--db``); ``--json`` for machines. ``--at`` answers "as if
now were" (a simulation's store, a test), and defaults to the wall clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from clm_engine import ClmError
from clm_engine.cli import console, db_option, json_option, open_engine, print_json, rulesets_option

from . import reports
from .dates import parse_moment

at_option = click.option(
    "--at",
    "at_text",
    metavar="TIME",
    help="Answer as of this time (ISO 8601, UTC if no offset) instead of now.",
)


def _now(at_text: str | None, option: str = "--at") -> datetime:
    if at_text is None:
        return datetime.now(UTC)
    try:
        return parse_moment(at_text, option)
    except ValueError as error:
        raise ClmError(str(error)) from None


#: Columns of a table written to a file or a pipe: wide enough that none is cut.
FILE_WIDTH = 160


def _print_table(table: Table) -> None:
    """On a terminal, fit its width; into a file or a pipe, keep every column readable."""
    if console.is_terminal:
        _print_table(table)
    else:
        Console(file=console.file, width=FILE_WIDTH, highlight=False).print(table)


def _documents(engine: Any) -> dict[str, Any]:
    return getattr(engine, "documents", None) or {}


@click.group()
def warranty() -> None:
    """Registered products, warranty reminders and offers (the clm-warranty plugin)."""


@warranty.command("products")
@click.argument("contact_id")
@db_option
@rulesets_option
@at_option
@json_option
def products_command(
    contact_id: str,
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    at_text: str | None,
    as_json: bool,
) -> None:
    """A contact's registered products: warranty end, agreement, end of life, offers.

    With --rulesets, the catalogue documents there fill in what a registration left out (the
    warranty length of its SKU, its expected life).
    """
    now = _now(at_text)
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        if engine.contact(contact_id) is None:
            raise ClmError(f"no contact {contact_id!r} in {db_path}")
        found = reports.products(engine.store.tables, contact_id, now, _documents(engine))
    if as_json:
        print_json({"contact_id": contact_id, "products": found})
        return
    if not found:
        console.print(f"{contact_id} has no registered products", markup=False)
        return
    table = Table(
        "product",
        "sku",
        "status",
        "bought",
        "warranty ends",
        "agreement",
        "end of life",
        "price",
        "offers",
        title=f"products of {contact_id}",
        title_justify="left",
    )
    for p in found:
        offers = ", ".join(f"{o['kind']} {o['status']}" for o in p["offers"])
        ends = (p["warranty_ends_at"] or "")[:10] + (" (extended)" if p["extended"] else "")
        table.add_row(
            p["product_id"],
            p["sku"] or "",
            p["status"],
            (p["purchased_at"] or "")[:10],
            ends,
            "yes" if p["service_agreement"] else "no",
            (p["end_of_life_at"] or "")[:10],
            reports.money(p["price_minor"], p["currency"]),
            offers or "-",
        )
    _print_table(table)


@warranty.command("upcoming")
@click.option(
    "--days", default=30, show_default=True, type=click.FloatRange(0), help="How far ahead."
)
@db_option
@at_option
@json_option
def upcoming_command(days: float, db_path: Path, at_text: str | None, as_json: bool) -> None:
    """What will fire on products in the next DAYS days (reminders, offers), soonest first.

    Pending relative-time fires of the rules timed on product dates, as the engine's last
    ingest or sweep left them; overdue ones (the next `clm tick` fires them) come first.
    """
    now = _now(at_text)
    with open_engine(db_path) as engine:
        rows = reports.upcoming(engine, now, days)
    if as_json:
        print_json({"now": now.isoformat(), "days": days, "upcoming": rows})
        return
    if not rows:
        console.print(f"nothing fires on products in the next {days:g} days", markup=False)
        return
    table = Table(
        "fires at",
        "rule",
        "contact",
        "product",
        "sku",
        "date",
        title=f"{len(rows):,} fires in the next {days:g} days",
        title_justify="left",
    )
    for row in rows:
        table.add_row(
            row["fire_at"][:16].replace("T", " "),
            f"{row['ruleset']}/{row['rule']}",
            row["contact_id"],
            row["product_id"],
            row["sku"] or "",
            row["anchor_at"][:10],
        )
    _print_table(table)


@warranty.command("offers")
@click.option("--since", "since_text", metavar="TIME", help="Only offers made from this time.")
@db_option
@at_option
@json_option
def offers_command(
    since_text: str | None, db_path: Path, at_text: str | None, as_json: bool
) -> None:
    """Offers made and accepted, by kind (extension, service agreement, upgrade).

    An offer is accepted when the customer buys what it offered while it was valid: a
    warranty.extended or service_agreement.purchased event for the product, or the
    registration of the successor SKU.
    """
    now = _now(at_text)
    since = _now(since_text, "--since") if since_text else None
    with open_engine(db_path) as engine:
        report = reports.offers(engine.store.tables, now, since)
    if as_json:
        print_json(report)
        return
    console.print(reports.format_offers(report), markup=False)
