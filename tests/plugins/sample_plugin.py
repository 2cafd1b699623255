"""A plugin that implements every hook, the way a third-party author would write it."""

from __future__ import annotations

import click
from pydantic import BaseModel, ConfigDict

from clm_engine import Column, Table, hookimpl
from clm_engine.types import Veto

NOTES = Table(
    "sample_notes",
    columns=(
        Column("id", "integer", auto_increment=True),
        Column("contact_id", "text"),
        Column("note", "text"),
    ),
    primary_key=("id",),
)


def earn_points(contact, event):
    points = event.properties.get("points")
    if not isinstance(points, int):
        raise ValueError(f"points.earned needs integer 'points' (got {points!r})")
    contact.scores["loyalty"] = contact.scores.get("loyalty", 0) + points


@hookimpl
def register_reducers(register):
    register("points.earned", earn_points)


@hookimpl
def register_tables(register):
    register(NOTES)


@hookimpl
def register_commands(cli):
    @cli.command(name="sample-hello")
    @click.argument("name")
    def hello(name):
        """Say hello (from the sample plugin)."""
        click.echo(f"hello {name} from the sample plugin")


@hookimpl
def forget_contact(tables, contact_id):
    return {"sample_notes": tables["sample_notes"].delete({"contact_id": contact_id})}


class Shout(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word: str


def shout(ctx, params):
    ctx.emit("points.earned", {"points": len(params.word)})
    return {"shouted": params.word.upper()}


@hookimpl
def register_actions(register):
    register("sample.shout", shout, Shout, description="Earn a point per letter shouted.")


def divisible_by(fact_value, value):
    return isinstance(fact_value, int) and fact_value % value == 0


def prepare_divisor(value):
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"divisible_by needs a positive whole number (got {value!r})")
    return value


@hookimpl
def register_operators(register):
    register("divisible_by", divisible_by, prepare=prepare_divisor)


def name_length(ctx):
    return len(ctx.contact.attributes.get("first_name", ""))


@hookimpl
def register_facts(register):
    register("contact.name_length", name_length, description="Letters in the first name.")


@hookimpl
def dispatch_policy(action, params, contact, now):
    if action == "sample.shout" and "quiet" in contact.tags:
        return Veto("this contact asked for quiet")
    return None


@hookimpl
def map_segment_message(message, received_at):
    """Segment's ``Points Earned`` track calls become ``points.earned`` events."""
    if message.get("type") == "track" and message.get("event") == "Points Earned":
        return {
            "id": message.get("messageId"),
            "contact_id": message["userId"],
            "type": "points.earned",
            "occurred_at": message.get("timestamp") or received_at.isoformat(),
            "properties": {"points": message.get("properties", {}).get("points")},
        }
    if message.get("type") == "track" and message.get("event") == "Ignored":
        return []
    return None


@hookimpl
def check_unsubscribe_token(contact_id, token):
    if token.startswith("sample-"):
        return token == f"sample-{contact_id[::-1]}"
    return None
