"""A throwaway PostgreSQL cluster for the tests: the real server, started and stopped by them.

The Debian ``postgresql`` package's server binaries (``/usr/lib/postgresql/<N>/bin``) run a
cluster in a temporary folder, listening on 127.0.0.1 at a free port and on a socket in that
folder, trusting local connections, with fsync off (a crash loses a test database, nothing
else). ``initdb`` and ``pg_ctl`` refuse to run as root, as CI and the developers' machines do:
then the cluster runs as the ``postgres`` system user the package creates, through
``runuser``, and owns its folder. ``make test`` installs the package when it is missing.

Each test gets a database of its own, cloned from a template that already holds the core's
schema (``CREATE DATABASE ... TEMPLATE`` copies files: a few milliseconds, against a hundred
for running the migrations), and dropped when the test ends.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Where Debian's package puts the server binaries, newest version first.
BIN_PATTERN = "/usr/lib/postgresql/*/bin"
TEMPLATE = "clm_template"


def server_bin() -> Path | None:
    """The folder of the newest installed server's binaries, or None if there is none."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    found = [p for p in glob.glob(BIN_PATTERN) if os.path.exists(os.path.join(p, "initdb"))]
    return Path(max(found, key=version)) if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """One PostgreSQL cluster in a temporary folder; ``start()``, ``database()``, ``stop()``."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="clm-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        # As root, run the server as the package's unprivileged user, which must own the folder.
        self.user = "postgres" if os.geteuid() == 0 else None
        self._names = itertools.count(1)
        self.started_in = 0.0  # seconds: initdb, start, the template
        self._admin: Any = None

    def _run(self, *args: str) -> None:
        command = [str(a) for a in args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )

    def start(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            self.bin / "initdb",
            "-D", self.data,
            "-U", "postgres",
            "-A", "trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",
        )  # fmt: skip
        options = (
            f"-F -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(
            self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run ``sql`` on the ``postgres`` database (one connection, kept for the session)."""
        import psycopg

        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(self.url(), autocommit=True)
        self._admin.execute(sql)

    def make_template(self) -> None:
        """The template every test database is cloned from: the core's schema, migrated."""
        from clm_engine.store.postgres import PostgresStore

        self.admin(f"CREATE DATABASE {TEMPLATE}")
        store = PostgresStore(self.url(TEMPLATE))
        try:
            store.migrate()
        finally:
            store.close()

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new database with the core's schema, dropped afterwards: its URL."""
        name = f"clm_test_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        try:
            yield self.url(name)
        finally:
            self.admin(f"DROP DATABASE {name} WITH (FORCE)")


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    bin_dir = server_bin()
    if bin_dir is None:
        raise RuntimeError(
            f"no PostgreSQL server binaries ({BIN_PATTERN}/initdb): `make test` installs "
            "Debian's postgresql package, or run `apt-get install -y postgresql`"
        )
    cluster = Cluster(bin_dir)
    started = time.monotonic()
    try:
        cluster.start()
        cluster.make_template()
        cluster.started_in = time.monotonic() - started
        yield cluster
    finally:
        cluster.stop()
