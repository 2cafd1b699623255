"""``clm status`` and ``clm rulesets history``: what a running engine says, what it ran on."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from . import cli
from .common import console, db_option, json_option, open_engine, print_json


@cli.command()
@db_option
@json_option
def status(db_path: Path, as_json: bool) -> None:
    """What running engines (``clm run``) said about themselves: which rulesets they run, and
    whether the rulesets folder is valid (an invalid folder runs on the last valid set)."""
    with open_engine(db_path) as engine:
        said = engine.store.read().status()
    if as_json:
        print_json({key: {"value": value, "at": at} for key, (value, at) in said.items()})
        return
    rulesets = said.get("rulesets")
    if rulesets is None:
        console.print("no engine has run on this database yet (clm run)")
        return
    value, at = rulesets
    running = ", ".join(f"{name} v{version}" for name, version in value["running"]) or "none"
    console.print(f"rulesets running: {running} [dim](said {at[:19]}Z)[/]", soft_wrap=True)
    if value["valid"]:
        console.print(f"rulesets folder: valid ({', '.join(value['paths'])})", soft_wrap=True)
    else:
        console.print(
            "[bold red]rulesets folder: INVALID[/]: running on the last valid set", soft_wrap=True
        )
        console.print(value["problems"], markup=False, soft_wrap=True)


@cli.group()
def rulesets() -> None:
    """The sets of rulesets this database loaded."""


@rulesets.command()
@db_option
@json_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1))
def history(db_path: Path, as_json: bool, limit: int) -> None:
    """Every valid set of rulesets loaded, the latest first, with when it was loaded."""
    with open_engine(db_path) as engine:
        sets = engine.store.read().ruleset_sets(limit=limit)
    if as_json:
        print_json([{**entry, "files": [f["path"] for f in entry["files"]]} for entry in sets])
        return
    if not sets:
        console.print("no rulesets were loaded into this database yet")
        return
    table = Table("set", "rulesets", "files", "first loaded", "last loaded", "hash")
    for entry in sets:
        table.add_row(
            str(entry["id"]),
            ", ".join(f"{name} v{version}" for name, version in entry["summary"]),
            str(len(entry["files"])),
            entry["first_loaded_at"][:19] + "Z",
            entry["last_loaded_at"][:19] + "Z",
            entry["content_hash"][:12],
        )
    console.print(table)
