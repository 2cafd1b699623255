"""Where a simulation's store lives, and how a real store is copied there without a write.

The scratch store sits in a temporary directory (deleted afterwards) or in ``keep``; with
``db`` the real store is copied into it through SQLite's backup API, read-only, and the copy
is what the simulation changes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StoreError
from ..store.sqlite_copy import copy_store_file
from .window import SimulationError

if TYPE_CHECKING:
    from ..registry import Registry


class Scratch:
    """Where a simulation's store lives: a temporary directory (deleted after), or ``keep``."""

    def __init__(self, keep: str | os.PathLike[str] | None, name: str) -> None:
        self.keep = Path(keep) if keep is not None else None
        self.name = name
        self.directory: Path | None = None

    def __enter__(self) -> Scratch:
        if self.keep is None:
            self.directory = Path(tempfile.mkdtemp(prefix="clm-simulate-"))
        else:
            self.keep.mkdir(parents=True, exist_ok=True)
            self.directory = self.keep
            if self.path.exists():
                raise SimulationError(
                    f"{self.path} exists already: remove it or pick another --keep directory"
                )
        return self

    @property
    def path(self) -> Path:
        assert self.directory is not None
        return self.directory / self.name

    def __exit__(self, *exc: object) -> None:
        if self.keep is None and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a store that never writes to it (``clm_engine.store``'s
    ``copy_store_file``: SQLite's backup API, read only)."""
    try:
        copy_store_file(source, target)
    except StoreError as error:
        raise SimulationError(str(error)) from None


def copy_postgres_store(url: str, target: Path, registry: Registry) -> None:
    """A copy of a PostgreSQL store in the scratch file: its core's tables and the tables the
    loaded plugins declare, read in one snapshot, never written (``PostgresStore.backup_to``)."""
    from ..store import open_store

    try:
        store = open_store(url)
    except StoreError as error:
        raise SimulationError(str(error)) from None
    try:
        store.migrate(registry.tables)  # declares the plugins' tables (a migrated store: no change)
        store.backup_to(target)
    except StoreError as error:
        raise SimulationError(str(error)) from None
    finally:
        store.close()
