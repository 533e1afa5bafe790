"""Fixtures shared by integration and e2e tests: the real local services, never fakes."""

from __future__ import annotations

import socket
from collections.abc import Iterator

# Imported at collection, not lazily by hypothesis' own plugin at session end: there pytest
# rewrites it from a deep stack and CPython 3.11's ast.parse fails with "AST constructor
# recursion depth mismatch", failing a run whose tests all passed.
import hypothesis  # noqa: F401
import pytest

from softswitch.db import temporary_database
from softswitch.settings import DatabaseSettings, Settings, load_settings


@pytest.fixture(scope="session")
def host_settings() -> Settings:
    """PostgreSQL and RabbitMQ up (installed and started where missing), database migrated."""
    from softswitch.stack import stack

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
