"""Integration fixtures: a migrated scratch database, and a private PostgreSQL to break."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from softswitch import db
from softswitch.settings import DatabaseSettings
from softswitch.stack.host import port_open
from tests.conftest import free_tcp_port


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


@dataclass
class PrivateRabbitMQ:
    """A RabbitMQ node of the test's own (own node name, ports, data), that a test may stop;
    the machine's shared broker is left alone."""

    home: Path
    node: str
    port: int
    dist_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> None:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.home / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
            "RABBITMQ_PID_FILE": str(self.home / "pid"),
        }
        self.process = subprocess.Popen(
            ["rabbitmq-server"], env=env, cwd=self.home, start_new_session=True,
            stdout=(self.home / "server.log").open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.home / "server.log").read_text()[-3000:])
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the node for real (SIGTERM to the Erlang VM) and wait until it is gone."""
        if self.process is None:
            return
        pid = int((self.home / "pid").read_text()) if (self.home / "pid").exists() else None
        os.killpg(self.process.pid, signal.SIGTERM)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self.process.wait(30)
        deadline = time.monotonic() + 30
        while port_open("127.0.0.1", self.port) or (pid and Path(f"/proc/{pid}").exists()):
            assert time.monotonic() < deadline, "private RabbitMQ did not stop"
            time.sleep(0.1)
        self.process = None


@pytest.fixture
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    home = Path(tempfile.mkdtemp(prefix="softswitch-rmq-"))
    (home / "plugins").write_text("[].\n")
    (home / "rabbitmq.conf").write_text("")
    for path in (home, home / "plugins", home / "rabbitmq.conf"):
        shutil.chown(path, "rabbitmq")
    broker = PrivateRabbitMQ(
        home, f"softswitch-test-{os.getpid()}-{home.name[-6:]}@localhost",
        free_tcp_port(), free_tcp_port(),
    )  # fmt: skip
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


def softswitch_cli(database: DatabaseSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an admin runs it, against ``database``."""
    return subprocess.run(
        [sys.executable, "-m", "softswitch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SOFTSWITCH_DATABASE_URL": database.url},
        check=False,
    )
