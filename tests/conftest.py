"""Fixtures shared by integration and e2e tests: the real local services, never fakes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from softswitch.settings import DatabaseSettings, Settings, load_settings


@pytest.fixture(scope="session")
def host_settings() -> Settings:
    """PostgreSQL and RabbitMQ up (installed and started where missing), database migrated."""
    from softswitch.stack import stack

    return stack.up_host(load_settings())


@pytest.fixture
def scratch_database(host_settings: Settings) -> Iterator[DatabaseSettings]:
    """An empty database of its own for one test, dropped afterwards."""
    name = f"softswitch_it_{secrets.token_hex(4)}"
    admin_url = host_settings.database.url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(admin_url)
    yield DatabaseSettings(url=urlunsplit(parts._replace(path=f"/{name}")))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
