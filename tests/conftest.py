"""Fixtures shared by integration and e2e tests: the real local services, never fakes."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

# Imported at collection, not lazily by hypothesis' own plugin at session end: there pytest
# rewrites it from a deep stack and CPython 3.11's ast.parse fails with "AST constructor
# recursion depth mismatch", failing a run whose tests all passed.
import hypothesis  # noqa: F401
import pytest

from softswitch.db import NewerSchemaError, drop_database, temporary_database
from softswitch.settings import DatabaseSettings, Settings, load_settings

TEST_DATABASE_SUFFIX = "_test"


def pytest_configure(config: pytest.Config) -> None:
    """Every test, and every process a test starts (Kamailio included, through the stack's
    rendered config), uses the suite's own database: the stack's name + ``_test``. The
    stack's database keeps its demo data, and a run never meets a schema that work not
    landed yet left in it."""
    from softswitch.stack.stack import generate_credentials

    generate_credentials(load_settings().stack.state_dir)
    parts = urlsplit(load_settings().database.url)
    if not parts.path.endswith(TEST_DATABASE_SUFFIX):
        test_database = parts._replace(path=parts.path + TEST_DATABASE_SUFFIX)
        os.environ["SOFTSWITCH_DATABASE_URL"] = urlunsplit(test_database)


@pytest.fixture(scope="session")
def host_settings() -> Settings:
    """PostgreSQL and RabbitMQ up (installed and started where missing), the suite's database
    migrated; made afresh when it holds migrations this code does not know."""
    from softswitch.stack import stack

    try:
        return stack.up_host(load_settings())
    except NewerSchemaError as exc:
        warnings.warn(f"{exc}: dropping the suite's database and starting afresh", stacklevel=1)
        drop_database(load_settings().database)
        return stack.up_host(load_settings())


@pytest.fixture
def scratch_database(host_settings: Settings) -> Iterator[DatabaseSettings]:
    """An empty database of its own for one test, dropped afterwards."""
    with temporary_database(host_settings.database, prefix="softswitch_it", migrate=False) as db:
        yield db


def free_tcp_port() -> int:
    """A TCP port nothing listens on now, on loopback (for a service a test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
