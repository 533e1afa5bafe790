"""What every admin API request can reach: the app's context and its own database connection.

Each request opens its PostgreSQL connection lazily (only when authentication or the handler
needs it) and closes it when it ends: the admin API serves people and scripts, not calls, and
a connection per request (about a millisecond on loopback) keeps no state between requests
that a restarted PostgreSQL could break. Connections are in autocommit mode; the stores'
writes run in their own transactions, so a failed request leaves nothing half written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import psycopg
from fastapi import Depends, Request

from softswitch.settings import Settings

if TYPE_CHECKING:
    from softswitch.admin.auth import Authenticator

CONNECT_TIMEOUT_SECONDS = 3


@dataclass(frozen=True)
class AdminContext:
    """Built once by ``app.build``; kept on ``app.state.admin``."""

    settings: Settings
    authenticator: Authenticator


def admin_context(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.admin
    return context


class RequestDatabase:
    """One request's PostgreSQL connection, opened on first use."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None

    def connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            self._conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def request_database(request: Request) -> Iterator[RequestDatabase]:
    database = RequestDatabase(admin_context(request).settings.database.url)
    try:
        yield database
    finally:
        database.close()


def connection(
    database: Annotated[RequestDatabase, Depends(request_database)],
) -> psycopg.Connection[Any]:
    return database.connection()


Db = Annotated[psycopg.Connection[Any], Depends(connection)]
Context = Annotated[AdminContext, Depends(admin_context)]


@asynccontextmanager
async def async_connection(settings: Settings) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An async connection for the stores' async functions (the 112 pool's live operations)."""
    async with await psycopg.AsyncConnection.connect(
        settings.database.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
    ) as conn:
        yield conn
