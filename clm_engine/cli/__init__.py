"""The ``clm`` command-line tool.

Every command takes ``--db PATH`` (default ``clm.db``, or ``$CLM_DB``); every command that
shows data takes ``--json``. A ``ClmError`` becomes one line on stderr and exit code 1, never
a traceback. Plugins add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import ClmError
from .common import (
    console,
    db_option,
    json_option,
    open_engine,
    print_json,
    print_tsv,
    registry_of,
    rulesets_option,
    tsv_option,
)

#: What plugins' commands may use (``docs/plugin-hooks.md``, ``register_commands``).
__all__ = [
    "cli",
    "console",
    "db_option",
    "json_option",
    "open_engine",
    "print_json",
    "print_tsv",
    "registry_of",
    "rulesets_option",
    "tsv_option",
]


class ClmGroup(click.Group):
    """The ``clm`` group: turns clm errors into one clean line, and serves plugins' commands.

    Plugins' commands come from the invocation's registry (:func:`registry_of`), not from the
    group: each run of ``clm`` (each ``CliRunner.invoke`` in a test) sees its own plugins."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugin_commands = registry_of(ctx).commands.list_commands(ctx)
        return sorted({*super().list_commands(ctx), *plugin_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        return found if found is not None else registry_of(ctx).commands.get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClmError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=ClmGroup)
@click.version_option(package_name="clm-engine", prog_name="clm")
def cli() -> None:
    """clm-engine: customer lifecycle automation.

    Events in (signups, orders, opens, tickets ...), contact state out; rulesets and plugins
    decide what happens next.
    """


from . import (  # noqa: E402, F401  (commands register on import)
    analytics,
    contacts,
    copy,
    experiments,
    info,
    ingest,
    prune,
    rules,
    running,
    sample,
    serve,
    simulate,
    status,
    validate,
)

# The command modules are imported for their side effect (their commands join ``cli``); what
# this package offers is the group and, for plugins' own commands, the helpers above.
