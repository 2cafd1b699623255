"""What the commands share: the ``--db`` and ``--json`` options and how output looks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..engine import Engine
from ..errors import ClmError

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

db_option = click.option(
    "--db",
    "db_path",
    default="clm.db",
    show_default=True,
    envvar="CLM_DB",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The SQLite database file (or $CLM_DB).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")


def open_engine(db_path: Path, *, must_exist: bool = True) -> Engine:
    """An engine on ``db_path``; a read command on a missing file is an error, not a new file."""
    if must_exist and not db_path.exists():
        raise ClmError(
            f"no database at {db_path}: ingest events first (clm ingest FILE --db {db_path}) "
            "or pass --db"
        )
    return Engine(db_path)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
