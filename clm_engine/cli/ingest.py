"""``clm ingest FILE``: load a file of events, one JSON object per line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ..dispatch import DispatchReport
from ..engine import IngestResult
from . import cli
from .common import (
    console,
    db_option,
    errors,
    json_option,
    open_engine,
    print_dispatch,
    print_json,
    rulesets_option,
)


def _batches(stream: IO[bytes], size: int) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """(line number, line) pairs in batches, skipping blank lines; and bytes read so far."""
    batch: list[tuple[int, bytes]] = []
    read = 0
    for number, line in enumerate(stream, start=1):
        read += len(line)
        if line.strip():
            batch.append((number, line))
        if len(batch) >= size:
            yield batch, read
            batch = []
    if batch:
        yield batch, read


@cli.command()
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path)
)
@db_option
@click.option(
    "--batch-size",
    default=10_000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Events per transaction.",
)
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where bad lines go (default: FILE.rejects.jsonl); the store lists the file, so "
    "that clm contacts forget scrubs it.",
)
@rulesets_option
@click.option(
    "--dispatch",
    "dispatch_as_you_go",
    is_flag=True,
    help="After each batch, run what is due: actions, dates come up (as a live engine would).",
)
@json_option
def ingest(
    file: Path,
    db_path: Path,
    batch_size: int,
    rejects_path: Path | None,
    ruleset_paths: tuple[Path, ...],
    dispatch_as_you_go: bool,
    as_json: bool,
) -> None:
    """Ingest events from FILE (JSON Lines; - for stdin) into the database.

    Each line is one event: {"id", "contact_id", "type", "occurred_at", "properties"}. An event
    already stored is counted as a duplicate and changes nothing, so a file can be ingested
    again safely. Bad lines are reported with their line numbers and written, with the reason,
    to the rejects file; good lines still land. Exits 1 if any line was rejected or failed.
    """
    engine = open_engine(db_path, must_exist=False, rulesets=ruleset_paths)
    from_stdin = str(file) == "-"
    stream = sys.stdin.buffer if from_stdin else file.open("rb")
    total_bytes = None if from_stdin else file.stat().st_size
    rejects_path = rejects_path or Path("rejects.jsonl" if from_stdin else f"{file}.rejects.jsonl")
    result = IngestResult()
    dispatched = DispatchReport()
    rejects: list[dict[str, Any]] = []
    show_progress = not as_json and console.is_terminal and (total_bytes or 0) > 1_000_000
    progress = Progress(
        TextColumn("ingesting"),
        BarColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=errors,
        disable=not show_progress,
        transient=True,
    )
    with progress, engine:
        task = progress.add_task("ingest", total=total_bytes)
        for batch, read in _batches(stream, batch_size):
            outcome = engine.ingest_many(line for _, line in batch)
            for rejection in outcome.rejected:
                number, line = batch[rejection.position]
                rejects.append(
                    {
                        "line": number,
                        "error": rejection.error,
                        "input": line.decode("utf-8", "replace").rstrip("\r\n"),
                    }
                )
            outcome.rejected = []
            result.add(outcome)
            if dispatch_as_you_go:
                dispatched.add(engine.tick().dispatched)
            progress.update(task, completed=read)
        if rejects:
            # Listed in the store before it is written: the file holds events' text (names,
            # addresses), and an erasure scrubs every rejects file the store knows of.
            engine.record_rejects_file(rejects_path)
            with rejects_path.open("w", encoding="utf-8") as out:
                for reject in rejects:
                    out.write(json.dumps(reject, ensure_ascii=False) + "\n")
    if not from_stdin:
        stream.close()
    summary = {
        "file": str(file),
        "db": str(db_path),
        "ingested": result.ingested,
        "duplicates": result.duplicates,
        "rejected": len(rejects),
        "failed": len(result.failed),
        "actions_enqueued": result.enqueued,
        "actions_ran_inline": result.ran_inline,
        "decisions_retracted": result.retracted,
        "rejects_file": str(rejects_path) if rejects else None,
        "rejections": rejects[:100],
        "failures": result.as_dict()["failed"][:100],
    }
    if dispatch_as_you_go:
        summary["dispatched"] = dispatched.as_dict()
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary, rejects, result)
        if dispatch_as_you_go:
            print_dispatch(dispatched)
    if rejects or result.failed:
        sys.exit(1)


def _print_summary(
    summary: dict[str, Any], rejects: list[dict[str, Any]], result: IngestResult
) -> None:
    actions, inline = summary["actions_enqueued"], summary["actions_ran_inline"]
    enqueued = f", {actions:,} actions decided ({inline:,} ran inline)" if actions else ""
    console.print(
        f"[bold]{summary['ingested']:,}[/] ingested, {summary['duplicates']:,} duplicates, "
        f"{summary['rejected']:,} rejected, {summary['failed']:,} failed{enqueued} "
        f"[dim]({summary['file']} -> {summary['db']})[/]",
        soft_wrap=True,
    )
    for reject in rejects[:10]:
        errors.print(f"  line {reject['line']}: {reject['error']}", markup=False)
    if len(rejects) > 10:
        errors.print(f"  ... and {len(rejects) - 10:,} more")
    if rejects:
        errors.print(f"  rejected lines written to {summary['rejects_file']}", markup=False)
    for failure in result.failed[:10]:
        errors.print(
            f"  event {failure.event.id}: reducer {failure.reducer} failed: {failure.error}",
            markup=False,
        )
    if result.failed:
        errors.print("  failed events are recorded (clm failures) and can be ingested again")
