"""A real ``clm serve`` (uvicorn, worker processes) on 127.0.0.1 for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from clm_engine import Engine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, db: Path | str, workers: int, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [
            sys.executable,
            "-m",
            "clm_engine",
            "serve",
            "--db",
            str(db),
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            *extra,
        ]
        with log.open("ab") as out:
            # A session of its own: the test can kill uvicorn and its workers together.
            self.process = subprocess.Popen(
                command, stdout=out, stderr=out, start_new_session=True, env={**os.environ}
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"clm serve exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"clm serve did not get ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL uvicorn and every worker (its process group): no graceful anything."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def running(db: Path | str, workers: int, log: Path, *extra: str) -> Iterator[Server]:
    """``clm serve`` over ``db``: a SQLite file (created if missing) or a PostgreSQL URL."""
    if isinstance(db, Path) and not db.exists():
        Engine(db).close()  # created and migrated, so that keys can be added first
    server = Server(db, workers, log, *extra)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
