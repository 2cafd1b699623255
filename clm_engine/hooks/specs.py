"""Every hook a plugin can implement.

Registration hooks take a ``register`` callback (the llm style): the plugin calls it once per
thing it contributes, and the core owns validation and name collisions. Hooks are always called
with keyword arguments; a plugin may accept any subset of them.

Each hook is documented for users in ``docs/plugin-hooks.md``; a test fails when one is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import hookspec

if TYPE_CHECKING:
    import click
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

    from ..models import Contact, Event

    Reducer = Callable[[Contact, Event], None]


@hookspec
def register_reducers(register: Callable[..., None]) -> None:
    """Contribute reducers: functions that fold an event into a contact's state.

    Call ``register(event_type, reducer, name=None)`` once per reducer. ``event_type`` is an
    event type such as ``"purchase"``, or ``"*"`` for every event. ``reducer(contact, event)``
    mutates ``contact`` (a :class:`clm_engine.Contact`) in place and returns nothing.

    A reducer must depend only on the contact and the event, because the engine re-folds a
    contact's whole history in time order when an event arrives late. If it raises, the event is
    not stored, the contact is left as it was, and the failure is recorded with its reason.
    ``name`` defaults to ``"<plugin>.<function name>"``; two reducers with one name are a
    :class:`PluginError` at load.
    """


@hookspec
def register_migrations(register: Callable[[Migrations], None]) -> None:
    """Contribute the plugin's own set of database migrations.

    Call ``register(migrations)`` with a ``sqlite_utils.migrations.Migrations`` whose name is
    unique to the plugin (its package name is a good choice). Migrations run when a store is
    opened and by ``clm migrate``; each runs in the store's write transaction. Two sets with one
    name are a :class:`PluginError` at load.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``clm`` command-line tool.

    Decorate functions with ``@cli.command()`` or add a ``click.Group`` with
    ``cli.add_command(group)``; use the plugin's name as the group name (``clm email ...``).
    """


@hookspec
def forget_contact(db: sqlite_utils.Database, contact_id: str) -> dict[str, int] | None:
    """Erase one contact's personal data from the tables the plugin owns (GDPR erasure).

    Called by ``clm contacts forget`` and ``Engine.forget`` inside the same write transaction
    that erases the core's rows, so the erasure happens everywhere or nowhere. Return a mapping
    of table name to the number of rows removed (or ``None`` if the plugin holds nothing).
    """
