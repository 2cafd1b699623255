"""A copy of a SQLite store file that never writes to it (a simulation's scratch store).

Opening the store (``SQLiteStore``) would switch it to WAL mode and set pragmas: writes. A
simulation must leave the real store untouched, so the copy opens the file read only and uses
SQLite's backup API.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import StoreError


def copy_store_file(source: Path, target: Path) -> None:
    """A consistent copy of a store, through SQLite's backup API, that never writes to it.

    A store in WAL mode keeps recent commits in its ``-wal`` file, so copying the file alone
    could miss them. With no ``-wal`` file nothing has the store open (the last connection to
    close removes it), and the copy reads it as immutable: no lock, and no ``-wal`` or ``-shm``
    file created beside the real store. If a writer opened it meanwhile (a ``-wal`` appeared),
    or one had it open all along, the copy is made (again) read-only, under SQLite's locks.
    """
    wal = source.with_name(source.name + "-wal")
    if not wal.exists():
        _backup(source, target, "immutable=1")
        if not wal.exists():
            return
    _backup(source, target, "mode=ro")


def _backup(source: Path, target: Path, mode: str) -> None:
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?{mode}", uri=True)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open {source}: {error}") from None
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot copy {source} (not a clm-engine store?): {error}") from None
        finally:
            dst.close()
    finally:
        src.close()
