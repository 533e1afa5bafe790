"""The database schema and its migration runner.

Migrations are plain SQL files in ``sql/migrations`` named ``NNNN_what.sql`` so admins can read
exactly what the schema is. Each runs once, in its own transaction, under an advisory lock so
two ``softswitch db upgrade`` at once cannot interleave; an applied file whose text changed is
refused (an applied migration is history: write a new one).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from softswitch.settings import DatabaseSettings

log = logging.getLogger("softswitch.db")
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "sql" / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every softswitch process.
_MIGRATION_LOCK_KEY = 0x50F75A17


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


class NewerSchemaError(MigrationError):
    """The database holds a migration this code does not know (written by newer code)."""


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_lowercase_words.sql")
        migrations.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return migrations


def pending_migrations(available: list[Migration], applied: dict[int, str]) -> list[Migration]:
    """Migrations still to run, after checking that applied ones were not edited."""
    by_version = {m.version: m for m in available}
    for version, checksum in applied.items():
        known = by_version.get(version)
        if known is None:
            raise NewerSchemaError(
                f"the database has migration {version:04d} that this release does not know:"
                " it is newer than this code"
            )
        if known.checksum != checksum:
            raise MigrationError(
                f"migration {known.name} changed after it was applied; write a new migration"
            )
    return [m for m in available if m.version not in applied]


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migration IS
    'Migrations applied by softswitch db upgrade; never edit by hand';
"""


def upgrade(settings: DatabaseSettings, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Bring the schema up to date; returns the names of the migrations applied now."""
    available = discover_migrations(directory)
    applied_now: list[str] = []
    with psycopg.connect(settings.url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        try:
            conn.execute(_CREATE_LEDGER)
            rows = conn.execute("SELECT version, checksum FROM schema_migration").fetchall()
            for migration in pending_migrations(available, dict(rows)):
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO schema_migration (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
    return applied_now


def applied_migrations(settings: DatabaseSettings) -> list[tuple[int, str, str]]:
    with psycopg.connect(settings.url) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migration') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        rows = conn.execute(
            "SELECT version, name, applied_at::text FROM schema_migration ORDER BY version"
        ).fetchall()
    return [(int(v), str(n), str(t)) for v, n, t in rows]


@contextmanager
def temporary_database(
    admin: DatabaseSettings, *, prefix: str, migrate: bool = True
) -> Iterator[DatabaseSettings]:
    """A database of its own beside ``admin``'s (for tests and benchmarks), dropped after."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database = DatabaseSettings(url=urlunsplit(urlsplit(admin.url)._replace(path=f"/{name}")))
    try:
        if migrate:
            upgrade(database)
        yield database
    finally:
        drop_database(database)


def drop_database(database: DatabaseSettings) -> None:
    """Drop ``database`` if it exists, its open sessions ended, connecting as its own user to
    the maintenance database ``postgres``."""
    parts = urlsplit(database.url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class KeptConnection:
    """PostgreSQL connections a service keeps open for short queries, one query on each at a
    time: ``connections`` of them, opened as concurrent queries need them.

    One is enough where each query is an indexed sub-millisecond one and calls come one by
    one (a door call's flat lookup); a burst of simultaneous calls (the 112 pool on a city-wide
    emergency) wants a few, or every query waits for the ones before it. The most recently
    used connection is taken first, so that at a low call rate one warm connection (and its
    server process) does all the work. A kept connection that died (PostgreSQL restarted, an
    idle connection cut by a firewall) is replaced once within the same call; when a fresh
    connection fails too, the call raises.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        connections: int = 1,
        connect_timeout_seconds: int = 3,
        what: str = "database",
    ) -> None:
        if connections < 1:
            raise ValueError(f"{what}: at least one connection, not {connections}")
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout_seconds
        self._what = what
        self._conns: list[psycopg.AsyncConnection[Any] | None] = [None] * connections
        self._idle: asyncio.LifoQueue[int] = asyncio.LifoQueue()
        for slot in reversed(range(connections)):
            self._idle.put_nowait(slot)

    async def __aenter__(self) -> KeptConnection:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection once the queries running on them are done."""
        slots = [await self._idle.get() for _ in self._conns]
        for slot in slots:
            conn, self._conns[slot] = self._conns[slot], None
            if conn is not None:
                await conn.close()
            self._idle.put_nowait(slot)

    async def run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        slot = await self._idle.get()
        try:
            kept = self._conns[slot]
            reused = kept is not None and not kept.closed
            conn = await self._connection(slot)
            try:
                return await work(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # Only a kept connection that died is worth one more try: a new one failing
                # means PostgreSQL is down, and an error on a live one would come back.
                if not (reused and conn.closed):
                    raise
                log.warning("%s connection lost (%s); reconnecting", self._what, exc)
            return await work(await self._connection(slot))
        finally:
            self._idle.put_nowait(slot)

    async def _connection(self, slot: int) -> psycopg.AsyncConnection[Any]:
        conn = self._conns[slot]
        if conn is None or conn.closed:
            conn = self._conns[slot] = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
            )
        return conn
