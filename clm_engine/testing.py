"""Helpers for testing a clm-engine plugin: the scaffolding every plugin's tests would repeat.

Public and stable, for third-party authors as much as for the plugins under ``plugins/``;
``docs/plugin-testing.md`` shows a complete test file. Nothing here imports pytest: build your
fixtures on these helpers. The ``check_*`` functions raise ``AssertionError`` with a message
that says what is wrong, so they work as assertions in any test runner.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .engine import Engine
from .errors import ReducerError
from .plugins import get_migrations, pm

if TYPE_CHECKING:
    from sqlite_utils.migrations import Migrations

P = TypeVar("P")

__all__ = ["check_migrations", "check_rejected", "discover", "make_event", "registered"]

_DISCOVER = """
import json
from clm_engine.plugins import get_plugin_info, load_plugins
load_plugins()
print(json.dumps({
    i.name: {"source": i.source, "version": i.version, "hooks": list(i.hooks)}
    for i in get_plugin_info()
}))
"""


@contextmanager
def registered(plugin: P, name: str) -> Iterator[P]:
    """Register ``plugin`` (a module or an object) under ``name`` for the ``with`` block.

    Why: the engine loads plugins once per process, and a test process is shared with other
    tests that must not see your plugin, so a test registers it in code for as long as it needs
    it. A plugin already registered under ``name`` (by ``load_plugins()`` or an outer block) is
    left alone, and only a registration made here is undone on exit.
    """
    added = pm.get_plugin(name) is None
    if added:
        pm.register(plugin, name=name)
    try:
        yield plugin
    finally:
        if added:
            pm.unregister(name=name)


def discover(allow: str) -> dict[str, dict[str, Any]]:
    """What a fresh process loads with ``CLM_LOAD_PLUGINS=allow``, by plugin name.

    Each value is ``{"source": ..., "version": ..., "hooks": [...]}``: the distribution and
    version an entry-point plugin came from (``"built-in"`` and ``None`` for the core's own)
    and the hooks it implements, as ``clm plugins`` shows them.

    Why: it is the only way to test that your entry point is declared and installed right.
    Plugin loading happens once per process, so it cannot be redone in the test's process.
    The child's stderr (where a plugin that failed to import is reported) is passed on to this
    process's stderr, where the test runner shows it when the test fails.
    """
    done = subprocess.run(
        [sys.executable, "-c", _DISCOVER],
        env={**os.environ, "CLM_LOAD_PLUGINS": allow},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loading plugins failed (exit {done.returncode}):\n{done.stderr}")
    sys.stderr.write(done.stderr)
    # The last line: a plugin may print while it is imported.
    return json.loads(done.stdout.splitlines()[-1])


def make_event(
    type_: str,
    properties: Mapping[str, Any] | None = None,
    *,
    contact_id: str = "c1",
    at: str = "2026-03-01T10:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    """An event in the JSON shape ``Engine.ingest`` takes, for contact ``c1`` unless told.

    Why: most events in a test differ only in their type and properties. ``extra`` adds
    top-level fields, such as ``id`` to find the event's failure again.
    """
    return {
        "contact_id": contact_id,
        "type": type_,
        "occurred_at": at,
        "properties": dict(properties or {}),
        **extra,
    }


def check_migrations(
    migrations: Migrations, tables: Collection[str], directory: str | os.PathLike[str]
) -> None:
    """Check that a migration set creates ``tables``, inside the caller's transaction, once.

    Why: the engine applies every plugin's migrations in one write transaction with its own,
    so a migration that commits (as sqlite3's ``executescript()`` silently does) breaks the
    rollback of everything else. That mistake is invisible until something fails, so check:

    - in an in-memory database, inside a transaction, ``apply()`` creates the tables and a
      rollback leaves none of them; applying twice is a no-op that records each migration once;
    - through the engine (the plugin must be registered, see ``registered``): the set comes
      from the ``register_migrations`` hook, an engine opening a new store file in
      ``directory`` creates the tables and has nothing left to apply, and a second engine
      opening the same file applies nothing again.
    """
    from sqlite_utils import Database

    wanted = set(tables)
    names = [m.name for m in migrations.pending(Database(memory=True))]

    def check_tables(db: Database, where: str) -> None:
        missing = wanted - set(db.table_names())
        _expect(not missing, f"{where}: migration set {migrations.name!r} left out {missing}")

    committed = (
        f"a migration of {migrations.name!r} committed the caller's transaction (sqlite3's "
        "executescript() does): run one statement at a time with db.execute()"
    )
    db = Database(memory=True)
    db.conn.execute("BEGIN")
    try:
        migrations.apply(db)
    except sqlite3.OperationalError as error:
        if db.conn.in_transaction:  # a migration's own mistake
            raise
        # sqlite-utils' savepoint went with the commit: "no such savepoint".
        raise AssertionError(f"{committed} ({error})") from error
    check_tables(db, "applied inside a transaction")
    db.conn.execute("ROLLBACK")
    kept = wanted & set(db.table_names())
    _expect(not kept, f"{kept} survived a rollback: {committed}")
    migrations.apply(db)
    migrations.apply(db)
    check_tables(db, "applied twice")
    applied = [m.name for m in migrations.applied(db)]
    _expect(applied == names, f"applied twice, {migrations.name!r} recorded {applied}")

    _expect(
        any(found is migrations for found in get_migrations()),
        f"migration set {migrations.name!r} does not come from any plugin's "
        "register_migrations hook: is the plugin registered?",
    )
    path = Path(directory) / "check_migrations.db"
    with Engine(path) as engine:
        pending = engine.store.migrate(get_migrations())
        _expect(pending == [], f"an engine left migrations to apply: {pending}")
    with Engine(path):  # would fail if a migration ran again (its CREATE TABLE, say)
        pass
    db = Database(path)
    try:
        check_tables(db, "opened by the engine")
        applied = [m.name for m in migrations.applied(db)]
        _expect(applied == names, f"opened twice, {migrations.name!r} recorded {applied}")
    finally:
        db.close()


def check_rejected(
    engine: Engine, event: Mapping[str, Any], *, match: str, reducer: str
) -> dict[str, Any]:
    """Ingest ``event``, which reducer ``reducer`` must refuse, and check the refusal is clean.

    Why: a reducer refuses an event it cannot apply by raising (``ValueError`` with a reason),
    and each plugin's tests should show the whole outcome, not only the raise: ``ingest``
    raises ``ReducerError`` whose message matches the regular expression ``match``, the
    contact is left exactly as it was, and one failure, naming the event and ``reducer``, is
    recorded for ``clm`` to show and retry. ``event`` must carry an ``id``, so that its
    failure can be found. Returns that failure (a row of ``engine.store.failures()``).
    """
    event_id = event.get("id")
    if not event_id:
        raise ValueError("give the event an 'id', so that its failure can be found")
    contact_id = event["contact_id"]
    before = engine.contact(contact_id)
    known = {f["event_id"] for f in engine.store.failures()}
    try:
        engine.ingest(event)
    except ReducerError as error:
        _expect(re.search(match, str(error)) is not None, f"{match!r} not found in: {error}")
    else:
        raise AssertionError(f"event {event_id!r} was applied; a reducer should have refused it")
    _expect(engine.contact(contact_id) == before, f"contact {contact_id!r} changed")
    new = [f for f in engine.store.failures() if f["event_id"] not in known]
    _expect(
        [f["event_id"] for f in new] == [event_id],
        f"expected one new failure, for event {event_id!r}; found {new}",
    )
    _expect(
        new[0]["reducer"] == reducer,
        f"the failure names reducer {new[0]['reducer']!r}, not {reducer!r}",
    )
    return new[0]


def _expect(condition: bool, message: str) -> None:
    # Not ``assert``: it is stripped under ``python -O`` and only rewritten in test modules.
    if not condition:
        raise AssertionError(message)
