"""Where a simulation's store lives, and how a real store is copied there without a write.

The scratch store sits in a temporary directory (deleted afterwards) or in ``keep``; with
``db`` the real store is copied into it through SQLite's backup API, read-only, and the copy
is what the simulation changes.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from .window import SimulationError


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
        raise SimulationError(f"cannot open {source}: {error}") from None
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        except sqlite3.DatabaseError as error:
            raise SimulationError(
                f"cannot copy {source} (not a clm-engine store?): {error}"
            ) from None
        finally:
            dst.close()
    finally:
        src.close()
