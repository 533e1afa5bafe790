"""Migrations, the account tables and kept connections against a real PostgreSQL."""

import asyncio
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from softswitch import db
from softswitch.accounts import ha1
from softswitch.settings import DatabaseSettings, Settings

pytestmark = pytest.mark.integration


def test_upgrade_creates_the_schema_once_and_is_idempotent(
    scratch_database: DatabaseSettings,
) -> None:
    first = db.upgrade(scratch_database)
    assert first == [m.name for m in db.discover_migrations()]
    assert db.upgrade(scratch_database) == []
    with psycopg.connect(scratch_database.url) as conn:
        versions = dict(conn.execute("SELECT table_name, table_version FROM version").fetchall())
    # The versions Kamailio 6.1 checks at start-up.
    assert versions == {"version": 1, "subscriber": 7, "location": 9, "location_attrs": 1}


def test_concurrent_upgrades_apply_each_migration_once(
    scratch_database: DatabaseSettings,
) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            results.append(db.upgrade(scratch_database))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, len(db.discover_migrations())]


def test_an_edited_applied_migration_is_refused(
    scratch_database: DatabaseSettings, tmp_path: Path
) -> None:
    folder = tmp_path
    (folder / "0001_first.sql").write_text("CREATE TABLE first_table (id int);")
    db.upgrade(scratch_database, folder)
    (folder / "0001_first.sql").write_text("CREATE TABLE other_table (id int);")
    with pytest.raises(db.MigrationError, match="changed after it was applied"):
        db.upgrade(scratch_database, folder)


def test_a_failing_migration_leaves_nothing_half_applied(
    scratch_database: DatabaseSettings, tmp_path: Path
) -> None:
    folder = tmp_path
    (folder / "0001_broken.sql").write_text(
        "CREATE TABLE half (id int); SELECT no_such_function();"
    )
    with pytest.raises(psycopg.errors.UndefinedFunction):
        db.upgrade(scratch_database, folder)
    with psycopg.connect(scratch_database.url) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM schema_migration").fetchone() == (0,)


@pytest.mark.parametrize(
    ("username", "password", "ha1_value", "constraint"),
    [
        ("1001", "clear-text", ha1("1001", "d", "pw"), "subscriber_no_clear_password"),
        ("1001", "", "not-a-hash", "subscriber_ha1_is_md5_hex"),
        ("10 01", "", ha1("10 01", "d", "pw"), "subscriber_username_is_sip_user"),
    ],
)
def test_subscriber_constraints_refuse_nonsense(
    scratch_database: DatabaseSettings,
    username: str,
    password: str,
    ha1_value: str,
    constraint: str,
) -> None:
    db.upgrade(scratch_database)
    with (
        psycopg.connect(scratch_database.url) as conn,
        pytest.raises(psycopg.errors.CheckViolation) as refused,
    ):
        conn.execute(
            "INSERT INTO subscriber (username, domain, password, ha1) VALUES (%s, 'd', %s, %s)",
            (username, password, ha1_value),
        )
    assert refused.value.diag.constraint_name == constraint


def test_admin_tables_document_their_columns(scratch_database: DatabaseSettings) -> None:
    db.upgrade(scratch_database)
    with psycopg.connect(scratch_database.url) as conn:
        undocumented = conn.execute(
            "SELECT a.attname FROM pg_attribute a"
            " WHERE a.attrelid = 'subscriber'::regclass AND a.attnum > 0 AND a.attname <> 'id'"
            " AND col_description(a.attrelid, a.attnum) IS NULL"
        ).fetchall()
    assert undocumented == []


def test_drop_database_ends_open_sessions_and_tolerates_a_missing_database(
    host_settings: Settings,
) -> None:
    with db.temporary_database(host_settings.database, prefix="softswitch_drop") as database:
        with psycopg.connect(database.url) as held:  # like Kamailio's kept connection
            db.drop_database(database)
            with pytest.raises(psycopg.OperationalError):
                held.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(database.url).close()
    db.drop_database(database)  # already gone: nothing to do


async def backend_pid(conn: psycopg.AsyncConnection[Any]) -> int:
    cursor = await conn.execute("SELECT pg_backend_pid()")
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_kept_connections_serve_concurrent_queries_each_on_its_own(
    scratch_database: DatabaseSettings,
) -> None:
    """Three queries that can only finish together (a barrier inside) need three
    connections at once; one connection would leave them waiting forever."""
    together = asyncio.Barrier(3)

    async def meet(conn: psycopg.AsyncConnection[Any]) -> int:
        pid = await backend_pid(conn)
        await together.wait()
        return pid

    async with db.KeptConnection(scratch_database.url, connections=3) as kept:
        async with asyncio.timeout(10):
            pids = await asyncio.gather(*(kept.run(meet) for _ in range(3)))
    assert len(set(pids)) == 3


async def test_kept_connections_queue_beyond_their_count_and_reuse_the_warm_one(
    scratch_database: DatabaseSettings,
) -> None:
    running = 0
    most = 0

    async def counted(conn: psycopg.AsyncConnection[Any]) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await conn.execute("SELECT pg_sleep(0.02)")
        running -= 1
        return await backend_pid(conn)

    async with db.KeptConnection(scratch_database.url, connections=2) as kept:
        pids = await asyncio.gather(*(kept.run(counted) for _ in range(6)))
        assert most == 2
        assert len(set(pids)) == 2
        # One by one, the most recently used connection does all the work.
        one_by_one = {await kept.run(backend_pid) for _ in range(5)}
    assert len(one_by_one) == 1


async def test_a_kept_connection_that_died_is_replaced_within_the_call(
    scratch_database: DatabaseSettings,
) -> None:
    async with db.KeptConnection(scratch_database.url, connections=2) as kept:
        first = await kept.run(backend_pid)
        with psycopg.connect(scratch_database.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        second = await kept.run(backend_pid)
    assert second != first


async def test_closing_waits_for_running_queries_and_closes_every_connection(
    scratch_database: DatabaseSettings,
) -> None:
    kept = db.KeptConnection(scratch_database.url, connections=2)
    opened: list[psycopg.AsyncConnection[Any]] = []

    async def slow(conn: psycopg.AsyncConnection[Any]) -> str:
        opened.append(conn)
        await conn.execute("SELECT pg_sleep(0.2)")
        return "done"

    running = [asyncio.create_task(kept.run(slow)) for _ in range(2)]
    await asyncio.sleep(0.05)
    await kept.aclose()
    assert [task.result() for task in running] == ["done", "done"]
    assert len(opened) == 2 and all(conn.closed for conn in opened)


def test_kept_connections_need_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least one connection"):
        db.KeptConnection("postgresql://127.0.0.1/x", connections=0)
