"""``clm sms``: what a text costs (encoding and segments) and whether a number is usable."""

from __future__ import annotations

import click

from clm_engine.cli import console, json_option, print_json

from .encoding import PART, SINGLE, non_gsm_characters, segments
from .numbers import NumberError, e164


@click.group()
def sms() -> None:
    """SMS: segment counts, number checks."""


@sms.command("segments")
@click.argument("text")
@json_option
def segments_command(text: str, as_json: bool) -> None:
    """The encoding of TEXT and the parts a carrier would send it in."""
    found = segments(text)
    odd = non_gsm_characters(text)
    if as_json:
        print_json(
            {
                "encoding": found.encoding,
                "units": found.units,
                "segments": found.count,
                "parts": list(found.parts),
                "non_gsm_characters": odd,
            }
        )
        return
    limit = SINGLE[found.encoding] if found.count == 1 else PART[found.encoding]
    console.print(
        f"{found.encoding}: {found.units} units, {found.count} segment(s) of at most {limit}"
    )
    if odd:
        console.print(f"UCS-2 because of: {' '.join(repr(c) for c in odd[:20])}")


@sms.command("number")
@click.argument("number")
@click.option("--region", help="Read a number without + in this country (GB, FR ...).")
def number_command(number: str, region: str | None) -> None:
    """NUMBER in E.164, or why it cannot be used."""
    try:
        click.echo(e164(number, region))
    except NumberError as error:
        raise click.ClickException(str(error)) from None
