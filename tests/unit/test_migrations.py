from pathlib import Path

import pytest

from softswitch.db import (
    Migration,
    MigrationError,
    NewerSchemaError,
    discover_migrations,
    pending_migrations,
)

pytestmark = pytest.mark.unit

FIRST = Migration(1, "0001_accounts", "CREATE TABLE a ();")
SECOND = Migration(2, "0002_routes", "CREATE TABLE b ();")


def test_only_unapplied_migrations_are_pending() -> None:
    assert pending_migrations([FIRST, SECOND], {1: FIRST.checksum}) == [SECOND]
    assert pending_migrations([FIRST, SECOND], {}) == [FIRST, SECOND]


def test_an_applied_migration_that_was_edited_is_refused() -> None:
    with pytest.raises(MigrationError, match="changed after it was applied"):
        pending_migrations([FIRST], {1: "not-the-checksum"})


def test_a_database_newer_than_the_code_is_refused() -> None:
    with pytest.raises(NewerSchemaError, match="newer than this code"):
        pending_migrations([FIRST], {1: FIRST.checksum, 7: "x"})


def test_migration_files_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "create_things.sql").write_text("")
    with pytest.raises(MigrationError, match=r"NNNN_lowercase_words\.sql"):
        discover_migrations(tmp_path)


def test_shipped_migrations_are_in_order_and_unique() -> None:
    versions = [m.version for m in discover_migrations()]
    assert versions == sorted(set(versions))
    assert versions[0] == 1
