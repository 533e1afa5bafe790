"""Integration fixtures: a migrated scratch database, and a private PostgreSQL to break."""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from softswitch import db
from softswitch.settings import DatabaseSettings


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def migrated_database(scratch_database: DatabaseSettings) -> DatabaseSettings:
    db.upgrade(scratch_database)
    return scratch_database


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, on its own port, that a test may stop."""

    bindir: Path
    datadir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D",
             str(self.datadir), "-w", "-t", "30", *args],
            check=True, capture_output=True, cwd="/",
        )  # fmt: skip

    def start(self) -> None:
        self._pg_ctl(
            "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir}",
            "-l", str(self.datadir / "server.log"), "start",
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.url, connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError("private PostgreSQL did not start")

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        pytest.fail("PostgreSQL server binaries not found (softswitch stack up installs them)")
    bindir = Path(candidates[-1]).parent
    # Outside pytest's root-only temp folders: the server runs as user postgres.
    home = Path(tempfile.mkdtemp(prefix="softswitch-pg-"))
    shutil.chown(home, "postgres")
    datadir = home / "data"
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-A", "trust", "-U",
         "postgres", "-D", str(datadir)],
        check=True, capture_output=True, cwd="/",
    )  # fmt: skip
    server = PrivatePostgres(bindir, datadir, free_tcp_port())
    server.start()
    try:
        yield server
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", str(datadir),
             "-m", "immediate", "stop"],
            capture_output=True, cwd="/", check=False,
        )  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
