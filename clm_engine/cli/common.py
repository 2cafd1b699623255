"""What the commands share: the ``--db`` and ``--json`` options and how output looks."""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..conditions.values import parse_duration
from ..engine import Engine
from ..errors import ClmError
from ..registry import Registry
from ..store import is_url

#: How wide output is when it goes to a pipe or a file: wide enough that no table cell is cut
#: (``2026-05-1...``), so ``clm contacts list | grep`` sees whole values. Tables only take the
#: width their contents need; a terminal keeps its own width.
PIPE_WIDTH = 10_000


def _stdout_console() -> Console:
    """Rich output for people: the terminal's width, or (piped) wide enough for every value.

    ``COLUMNS`` set in the environment wins, as it does for rich."""
    probe = Console(highlight=False)
    if probe.is_terminal or os.environ.get("COLUMNS"):
        return probe
    return Console(highlight=False, width=PIPE_WIDTH)


console = _stdout_console()
errors = Console(stderr=True, highlight=False, soft_wrap=True)


class Database(click.ParamType):  # type: ignore[type-arg]  # generic in recent click only (we allow 8.1)
    """``--db``: a SQLite file (a ``Path``) or a PostgreSQL URL (``postgresql://...``, kept
    as text: a path would fold its ``//``)."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Path) or not is_url(str(value)):
            path = click.Path(dir_okay=False, path_type=Path)
            return path.convert(value, param, ctx)
        return str(value)


db_option = click.option(
    "--db",
    "db_path",
    default="clm.db",
    show_default=True,
    envvar="CLM_DB",
    type=Database(),
    help="The SQLite database file or a postgresql:// URL (or $CLM_DB).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
tsv_option = click.option(
    "--tsv",
    "as_tsv",
    is_flag=True,
    help="Print tab-separated values: a header line, then one line per row (for cut, sort, awk).",
)


def print_tsv(headers: list[str], rows: list[list[Any]]) -> None:
    """Rows as tab-separated values, whole and unstyled: a tab, newline or backslash in a
    value is written ``\\t``, ``\\n``, ``\\\\`` so each row stays one line of the same
    number of fields; None is empty."""
    for values in [headers, *rows]:
        sys.stdout.write("\t".join(_tsv_field(value) for value in values) + "\n")


def _tsv_field(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


rulesets_option = click.option(
    "--rulesets",
    "ruleset_paths",
    multiple=True,
    envvar="CLM_RULESETS",
    type=click.Path(exists=True, path_type=Path),
    help="Ruleset files or directories to run (repeatable; or $CLM_RULESETS).",
)


def registry_of(ctx: click.Context | None = None) -> Registry:
    """The plugins of this run of ``clm``: the root context's ``obj`` when it is a
    :class:`Registry` (a host or a test invoking ``cli`` with ``obj=Registry([...])``), else
    the built-ins and the installed plugins, read once per run (and outside a run, as a
    library caller of these helpers is, a new one)."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return Registry()
    root = ctx.find_root()
    if not isinstance(root.obj, Registry):
        root.obj = Registry()
    return root.obj


def open_engine(
    db_path: Path | str, *, must_exist: bool = True, rulesets: tuple[Path, ...] = ()
) -> Engine:
    """An engine on ``db_path`` (a SQLite file or a PostgreSQL URL); a read command on a
    missing file is an error, not a new file. A PostgreSQL database must exist already."""
    if must_exist and not is_url(str(db_path)) and not Path(db_path).exists():
        raise ClmError(
            f"no database at {db_path}: ingest events first (clm ingest FILE --db {db_path}) "
            "or pass --db"
        )
    engine = Engine(db_path, late_action_limit=late_action_limit(), registry=registry_of())
    if rulesets:
        try:
            for warning in engine.load_rulesets(list(rulesets)):
                errors.print(f"warning: {warning}", markup=False)
        except BaseException:
            engine.close()
            raise
    return engine


def late_action_limit() -> timedelta:
    """``$CLM_LATE_ACTION_LIMIT`` (an ISO 8601 duration such as ``P3D`` or ``PT12H``): how old
    an occurrence may be for the external action of a late decision to still run (3 days)."""
    text = os.environ.get("CLM_LATE_ACTION_LIMIT", "").strip()
    if not text:
        return timedelta(days=3)
    try:
        return parse_duration(text)
    except ValueError:
        raise ClmError(
            f"CLM_LATE_ACTION_LIMIT={text!r} is not an ISO 8601 duration (like 'P3D' or 'PT12H')"
        ) from None


def money(value: Any) -> str:
    """An amount for a table: ``1,234.50``, or ``n/a`` for what is not a finite number.

    Events cannot carry NaN or infinity any more (``docs/events.md``, "Limits"), but a
    database written before that may hold a ``null`` total: one such contact must not stop a
    whole listing.
    """
    if type(value) in (int, float) and math.isfinite(value):
        return f"{value:,.2f}"
    return "n/a"


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def print_dispatch(report: Any) -> None:
    """A dispatch report for people: totals, then per rule, then the notes that matter."""
    outcomes = ", ".join(f"{count:,} {name}" for name, count in sorted(report.outcomes.items()))
    console.print(f"dispatched {report.total:,} actions: {outcomes or 'nothing was due'}")
    for rule, counts in report.as_dict()["by_rule"].items():
        detail = ", ".join(f"{count:,} {name}" for name, count in counts.items())
        console.print(f"  {rule}: {detail}", markup=False, soft_wrap=True)
    for note in report.notes[:10]:
        errors.print(f"  {note}", markup=False)
