"""``clm sample-events``: a realistic, seeded history of events to try the engine on."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import cli


@cli.command("sample-events")
@click.option("--contacts", default=3000, show_default=True, type=click.IntRange(1))
@click.option("--months", default=6, show_default=True, type=click.IntRange(1, 60))
@click.option("--seed", default=7, show_default=True)
@click.option(
    "--bad-lines",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Also write this many malformed lines, to see how bad input is handled.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here instead of stdout.",
)
def sample_events(
    contacts: int, months: int, seed: int, bad_lines: int, output: Path | None
) -> None:
    """Write a realistic stream of lifecycle events as JSON Lines.

    Signups, email opens and clicks, page views, carts, purchases, product registrations,
    support tickets with CSAT and NPS answers after they close, NPS answers, birthdays and
    customer-since dates, unsubscribes and acquisition spend, for CONTACTS people over MONTHS
    months; about 1% of the events arrive late and a few twice, as they do from real CRMs.
    """
    from ..synthetic import bad_lines as make_bad_lines
    from ..synthetic import generate_events, write_jsonl

    out = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        count = write_jsonl(generate_events(contacts, months=months, seed=seed), out)
        for line in make_bad_lines(bad_lines, seed=seed) if bad_lines else []:
            out.write(line.rstrip("\n") + "\n")
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"wrote {count + bad_lines:,} lines to {output}", err=True)
