"""``clm loyalty ...``: a contact's balance and ledger, and the programme report."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from clm_engine import ClmError, Engine, Tables, utc_text
from clm_engine.cli import console, db_option, json_option, open_engine, print_json, rulesets_option

from . import ledger, tiers
from .programme import Programme, programmes
from .report import format_report, report


@click.group()
def loyalty() -> None:
    """Loyalty points: balances, ledgers and the programme report."""


programme_option = click.option(
    "--programme",
    default=None,
    help="The programme's name (default: the only one the contact has, or that is loaded).",
)


def _programme_of(engine: Engine, tables: Tables, contact_id: str, name: str | None) -> str:
    if name is not None:
        return name
    loaded = sorted(programmes(engine.documents))
    held = sorted(
        {
            row["programme"]
            for row in tables["loyalty_entries"].aggregate(
                {"contact_id": contact_id}, group_by=["programme"]
            )
        }
    )
    choices = held or loaded
    if len(choices) == 1:
        return choices[0]
    if not choices:
        raise ClmError(f"{contact_id} has no loyalty points, and no programme is loaded")
    raise ClmError(f"{contact_id} is in {', '.join(choices)}: say which with --programme")


def _need_contact(engine: Engine, contact_id: str) -> None:
    if engine.contact(contact_id) is None:
        raise ClmError(f"no contact {contact_id!r}")


def balance_of(
    tables: Tables, prog: Programme | None, name: str, contact_id: str, now: str, soon: str
) -> dict[str, Any]:
    """What ``clm loyalty balance`` shows (and ``--json`` gives)."""
    rows = ledger.entries(tables, contact_id, name)
    book = ledger.replay(rows)
    upcoming = sorted(
        (lot for lot in book.lots.values() if lot.remaining > 0 and lot.expires_at),
        key=lambda lot: lot.expires_at or "",
    )
    tier_row = tiers.current(tables, contact_id, name)
    return {
        "contact": contact_id,
        "programme": name,
        "balance": book.available(now),
        "booked_balance": book.balance,  # before expiries that are due but not yet swept
        "lifetime_points": book.earned,
        "redeemed": book.redeemed,
        "expired": book.expired,
        "qualifying_points": tiers.qualifying(prog, rows, now) if prog else None,
        "tier": tier_row["tier"] if tier_row else (prog.base_tier if prog else None),
        "tier_since": tier_row["at"] if tier_row else None,
        "expiring_30_days": book.expiring(now, soon) + sum(lot.remaining for lot in book.due(now)),
        "next_expiry": (
            {"at": upcoming[0].expires_at, "points": upcoming[0].remaining} if upcoming else None
        ),
        "milestones": [
            row["milestone"]
            for row in tables["loyalty_milestones"].rows(
                {"contact_id": contact_id, "programme": name}, order_by=["at", "milestone"]
            )
        ],
    }


@loyalty.command()
@click.argument("contact_id")
@programme_option
@db_option
@rulesets_option
@json_option
def balance(
    contact_id: str,
    programme: str | None,
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """A contact's points: balance, lifetime points, tier, what expires soon."""
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        _need_contact(engine, contact_id)
        tables = engine.store.tables
        name = _programme_of(engine, tables, contact_id, programme)
        now = engine.clock.now()
        data = balance_of(
            tables,
            programmes(engine.documents).get(name),
            name,
            contact_id,
            utc_text(now),
            utc_text(now + timedelta(days=30)),
        )
    if as_json:
        print_json(data)
        return
    tier = f", tier {data['tier']}" if data["tier"] else ""
    since = f" since {data['tier_since'][:10]}" if data["tier_since"] else ""
    console.print(f"{contact_id} in {name}: {data['balance']:,} points{tier}{since}", markup=False)
    qualifying = data["qualifying_points"]
    console.print(
        f"  lifetime {data['lifetime_points']:,}, redeemed {data['redeemed']:,}, expired "
        f"{data['expired']:,}" + (f", qualifying {qualifying:,}" if qualifying is not None else ""),
        markup=False,
    )
    if data["next_expiry"]:
        nxt = data["next_expiry"]
        console.print(
            f"  next expiry: {nxt['points']:,} points on {nxt['at'][:10]} "
            f"({data['expiring_30_days']:,} within 30 days)",
            markup=False,
        )
    if data["milestones"]:
        console.print(f"  milestones: {', '.join(data['milestones'])}", markup=False)


@loyalty.command(name="ledger")
@click.argument("contact_id")
@programme_option
@db_option
@rulesets_option
@json_option
def ledger_command(
    contact_id: str,
    programme: str | None,
    db_path: Path,
    ruleset_paths: tuple[Path, ...],
    as_json: bool,
) -> None:
    """A contact's ledger: every earn, redemption, expiry and adjustment, with the balance
    after each."""
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        _need_contact(engine, contact_id)
        tables = engine.store.tables
        name = _programme_of(engine, tables, contact_id, programme)
        rows = ledger.entries(tables, contact_id, name)
        book = ledger.replay(rows)
        changes = tables["loyalty_tiers"].rows(
            {"contact_id": contact_id, "programme": name}, order_by=["seq"]
        )
    for row, after in zip(rows, book.running, strict=True):
        row["balance"] = after
    if as_json:
        print_json({"contact": contact_id, "programme": name, "entries": rows, "tiers": changes})
        return
    if not rows:
        console.print(f"{contact_id} has no entries in {name}", markup=False)
        return
    for row in rows:
        expires = f" expires {row['expires_at'][:10]}" if row["expires_at"] else ""
        why = f"  {row['reason']}" if row["reason"] else ""
        console.print(
            f"#{row['seq']} {row['at'][:19]}Z {row['kind']:<6} {row['points']:>+10,} "
            f"= {row['balance']:>10,}{expires}  ({row['source']}){why}",
            markup=False,
            soft_wrap=True,
        )
    for change in changes:
        console.print(
            f"tier {change['at'][:10]}: {change['previous']} -> {change['tier']} "
            f"({change['direction']}; {change['reason']})",
            markup=False,
            soft_wrap=True,
        )


@loyalty.command(name="report")
@click.option("--top", default=5, show_default=True, help="How many top balances to show.")
@db_option
@rulesets_option
@json_option
def report_command(top: int, db_path: Path, ruleset_paths: tuple[Path, ...], as_json: bool) -> None:
    """Points issued, redeemed, expired and outstanding; tiers and milestones, per programme."""
    with open_engine(db_path, rulesets=ruleset_paths) as engine:
        data = report(
            engine.store.tables, programmes(engine.documents), now=engine.clock.now(), top=top
        )
    if as_json:
        print_json(data)
    else:
        console.print(format_report(data), markup=False, soft_wrap=True)
