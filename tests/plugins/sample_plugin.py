"""A plugin that implements every hook, the way a third-party author would write it."""

from __future__ import annotations

import click
from sqlite_utils.migrations import Migrations

from clm_engine import hookimpl

migrations = Migrations("sample_plugin")


@migrations()
def m001_notes(db):
    db.execute("CREATE TABLE sample_notes (id INTEGER PRIMARY KEY, contact_id TEXT, note TEXT)")


def earn_points(contact, event):
    points = event.properties.get("points")
    if not isinstance(points, int):
        raise ValueError(f"points.earned needs integer 'points' (got {points!r})")
    contact.scores["loyalty"] = contact.scores.get("loyalty", 0) + points


@hookimpl
def register_reducers(register):
    register("points.earned", earn_points)


@hookimpl
def register_migrations(register):
    register(migrations)


@hookimpl
def register_commands(cli):
    @cli.command(name="sample-hello")
    @click.argument("name")
    def hello(name):
        """Say hello (from the sample plugin)."""
        click.echo(f"hello {name} from the sample plugin")


@hookimpl
def forget_contact(db, contact_id):
    cursor = db.execute("DELETE FROM sample_notes WHERE contact_id = ?", [contact_id])
    return {"sample_notes": cursor.rowcount}
