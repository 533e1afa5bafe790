"""The host side of the stack: Debian packages, PostgreSQL, RabbitMQ and the database.

PostgreSQL and RabbitMQ are used where they already answer on loopback; otherwise they are
installed from Debian 12 packages and started bound to 127.0.0.1. What this module starts is
recorded so ``stack down`` stops only that.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

log = logging.getLogger("softswitch.stack")

_apt_updated = False


class StackError(RuntimeError):
    pass


def run(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """Run a command, failing with its output (not a bare exit code) when it fails."""
    log.info("$ %s", " ".join(command))
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(
    check: Callable[[], bool], *, what: str, timeout: float, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise StackError(f"{what} not ready after {timeout:.0f}s")


def missing_packages(packages: list[str]) -> list[str]:
    missing = []
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        )
        if "install ok installed" not in result.stdout:
            missing.append(package)
    return missing


def ensure_packages(packages: list[str]) -> list[str]:
    """Install the Debian packages not installed yet; returns those installed now."""
    global _apt_updated
    missing = missing_packages(packages)
    if missing:
        if not _apt_updated:
            run(["apt-get", "update", "-q"])
            _apt_updated = True
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )
    return missing


RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


def ensure_kernel_limit(path: Path, minimum: int) -> int:
    """Raise a numeric kernel setting (a /proc/sys file) to at least ``minimum``; never lower it.

    Returns the value in force. Where it cannot be written (a container with a read-only
    /proc/sys) the stack still comes up, with a warning naming the setting to raise.
    """
    current = int(path.read_text().split()[0])
    if current >= minimum:
        return current
    try:
        path.write_text(f"{minimum}\n")
    except OSError as exc:
        log.warning(
            "%s is %d, below %d, and cannot be raised here: %s", path, current, minimum, exc
        )
        return current
    log.info("%s raised from %d to %d", path, current, minimum)
    return minimum


def _postgres_clusters() -> list[tuple[str, str]]:
    output = run(["pg_lsclusters", "--no-header"])
    return [(line.split()[0], line.split()[1]) for line in output.splitlines() if line.strip()]


def ensure_postgresql(host: str, port: int) -> bool:
    """PostgreSQL answering on host:port; True when this call had to start it."""
    if port_open(host, port):
        return False
    ensure_packages(["postgresql"])
    if port_open(host, port):  # the package's own service start brought it up
        return True
    for version, cluster in _postgres_clusters():
        run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "start"])
    wait_for(lambda: port_open(host, port), what=f"PostgreSQL on {host}:{port}", timeout=30)
    return True


RABBITMQ_ENV = {
    "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
    "ERL_EPMD_ADDRESS": "127.0.0.1",
}


def ensure_rabbitmq(host: str, port: int) -> bool:
    """RabbitMQ answering on host:port; True when this call had to start it."""
    if port_open(host, port):
        return False
    env_conf = Path("/etc/rabbitmq/rabbitmq-env.conf")
    if not env_conf.exists():
        # Written before the package is installed, so even a service start by the package
        # binds loopback only.
        env_conf.parent.mkdir(parents=True, exist_ok=True)
        env_conf.write_text("NODE_IP_ADDRESS=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\n")
    ensure_packages(["rabbitmq-server"])
    if not port_open(host, port):
        run(["rabbitmq-server", "-detached"], env=RABBITMQ_ENV)
    wait_for(lambda: port_open(host, port), what=f"RabbitMQ on {host}:{port}", timeout=60)
    return True


def stop_postgresql() -> None:
    for version, cluster in _postgres_clusters():
        run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "stop"])


def stop_rabbitmq() -> None:
    run(["rabbitmqctl", "stop"], env=RABBITMQ_ENV)


def ensure_database(database_url: str) -> bool:
    """Role and database of ``database_url`` exist; True when they had to be created.

    The role gets CREATEDB so the test suite can make throw-away databases.
    """
    try:
        with psycopg.connect(database_url, connect_timeout=5):
            return False
    except psycopg.OperationalError as exc:
        reason = str(exc)
    parts = urlsplit(database_url)
    role, password = unquote(parts.username or ""), unquote(parts.password or "")
    database = parts.path.lstrip("/")
    if not role or not database:
        raise StackError(f"cannot create the database: {reason}")
    log.info("creating role %s and database %s (%s)", role, database, reason.strip())
    statements = [
        sql.SQL(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN "
            "CREATE ROLE {role} LOGIN CREATEDB; END IF; END$$"
        ).format(name=sql.Literal(role), role=sql.Identifier(role)),
        sql.SQL("ALTER ROLE {role} WITH LOGIN CREATEDB PASSWORD {password}").format(
            role=sql.Identifier(role), password=sql.Literal(password or None)
        ),
    ]
    _as_postgres([s.as_string(None) for s in statements])
    exists = _as_postgres(
        [f"SELECT 1 FROM pg_database WHERE datname = {sql.Literal(database).as_string(None)}"]
    )
    if "1" not in exists.split():
        _as_postgres(
            [
                sql.SQL("CREATE DATABASE {db} OWNER {role}")
                .format(db=sql.Identifier(database), role=sql.Identifier(role))
                .as_string(None)
            ]
        )
    return True


def _as_postgres(statements: list[str]) -> str:
    """Run SQL as the local superuser over the Unix socket (peer auth as user postgres)."""
    runuser = shutil.which("runuser") or "runuser"
    command = [runuser, "-u", "postgres", "--", "psql", "-X", "-q", "-t", "-v", "ON_ERROR_STOP=1"]
    for statement in statements:
        command += ["-c", statement]
    return run(command)
