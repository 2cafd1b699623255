"""``clm copy``: move an embedded deployment (a SQLite file) to PostgreSQL, verified."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ClmError
from . import cli
from .common import console, errors, json_option, print_json, registry_of


@cli.command("copy")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The SQLite database file to copy.",
)
@click.option("--to", "target", required=True, help="The PostgreSQL database URL to fill.")
@json_option
@click.pass_context
def copy_command(ctx: click.Context, source: Path, target: str, as_json: bool) -> None:
    """Move an embedded deployment to PostgreSQL: copy every row of the core's tables and of
    the loaded plugins' tables (ledgers, logs) from a SQLite file into an empty PostgreSQL
    database, then verify the copy table by table (rows and a SHA-256 over every row). The
    source is only read."""
    from ..store import is_url
    from ..store.copy import copy_to_postgres

    if not is_url(target):
        raise ClmError(f"--to must be a postgresql:// URL, not {target!r}")
    report = copy_to_postgres(str(source), target, registry_of(ctx).tables)
    if as_json:
        print_json(report.as_dict())
    else:
        for table, rows in report.rows.items():
            console.print(f"  {table}: {rows:,} rows")
        for table in report.not_copied:
            errors.print(
                f"warning: table {table} not copied (no loaded plugin declares it)", markup=False
            )
    if not report.verified:
        differ = [t for t in report.source if report.source[t] != report.target.get(t)]
        raise ClmError(f"the copy differs from {source} in {', '.join(differ)}")
    if not as_json:
        console.print(f"copied {sum(report.rows.values()):,} rows from {source}: verified")
