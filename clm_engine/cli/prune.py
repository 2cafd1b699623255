"""``clm prune``: remove old traces and action history, keeping what makes each decision
happen once."""

from __future__ import annotations

from pathlib import Path

import click

from ..conditions.values import parse_duration
from ..errors import ClmError
from ..models import utc_text
from . import cli
from .common import console, db_option, json_option, open_engine, print_json


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    envvar="CLM_TRACE_RETENTION",
    required=True,
    help="Remove the traces of decisions older than this ISO 8601 duration, like P90D "
    "(or $CLM_TRACE_RETENTION).",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; remove nothing.")
@click.option(
    "--batch-size",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Traces deleted per write transaction (ingestion waits at most one batch).",
)
@db_option
@json_option
def prune(older_than: str, dry_run: bool, batch_size: int, db_path: Path, as_json: bool) -> None:
    """Remove the traces of decisions older than --older-than, in batches.

    A trace is what `clm explain` shows for one decision (the values its conditions saw);
    traces are the one history that grows with every decision and that nothing else needs.
    The action history (what the dispatcher did with each action: deferred, retried, sent)
    goes by the same cutoff. What makes each decision happen once stays: outbox rows (their
    keys), the fires limits count, events. `clm explain` says a pruned decision's trace was pruned.
    """
    try:
        age = parse_duration(older_than)
    except ValueError as error:
        raise ClmError(f"--older-than: {error}") from None
    with open_engine(db_path) as engine:
        now = engine.clock.now()
        before = utc_text(now - age)
        removed = engine.store.prune_traces(
            before, at=utc_text(now), batch_size=batch_size, dry_run=dry_run
        )
        steps = engine.store.prune_action_history(before, batch_size=batch_size, dry_run=dry_run)
    if as_json:
        print_json(
            {"before": before, "traces": removed, "action_history": steps, "dry_run": dry_run}
        )
        return
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{verb} {removed:,} traces of decisions and {steps:,} action-history steps before "
        f"{before[:19]}Z"
    )
