"""Migrations and the account tables against a real PostgreSQL."""

import threading
from pathlib import Path

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
