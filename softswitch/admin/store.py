"""The admin API's own SQL: its tokens, and deleting one record by key.

Reads, upserts and imports go through the owning stores (routing, directory, 112 pool, ACD),
which the CLI uses too. Deleting one record is a single statement here: the tables' foreign
keys cascade to what belongs to the record (a flat's devices, an agent's memberships) and
refuse what others still need (a city that has pool numbers), which the API answers with 409.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row


@dataclass(frozen=True)
class TokenRecord:
    """An admin API token as listed (its digest is never read back)."""

    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class QueueInUse(Exception):
    """A queue other queues overflow into cannot be deleted (they would lose their callers)."""

    def __init__(self, queue_id: str, overflowing: list[str]) -> None:
        super().__init__(
            f"queue {queue_id!r} is the overflow of {', '.join(map(repr, overflowing))}"
        )
        self.overflowing = overflowing


def add_token(conn: psycopg.Connection[Any], name: str, role: str, digest: bytes) -> None:
    """Raises psycopg.errors.UniqueViolation when ``name`` exists (revoked names too)."""
    conn.execute(
        "INSERT INTO admin_token (name, role, token_sha256) VALUES (%s, %s, %s)",
        (name, role, digest),
    )


def list_tokens(conn: psycopg.Connection[Any]) -> list[TokenRecord]:
    with conn.cursor(row_factory=class_row(TokenRecord)) as cursor:
        return cursor.execute(
            "SELECT name, role, created_at, last_used_at, revoked_at FROM admin_token"
            " ORDER BY revoked_at IS NOT NULL, name"
        ).fetchall()


def revoke_token(conn: psycopg.Connection[Any], name: str) -> bool:
    """False when there is no such valid token."""
    return (
        conn.execute(
            "UPDATE admin_token SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
            (name,),
        ).rowcount
        == 1
    )


def authenticate(conn: psycopg.Connection[Any], digest: bytes) -> tuple[str, str] | None:
    """(name, role) of the valid token with this digest, marking it used; None otherwise."""
    row = conn.execute(
        "UPDATE admin_token SET last_used_at = now()"
        " WHERE token_sha256 = %s AND revoked_at IS NULL RETURNING name, role",
        (digest,),
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def _deleted(conn: psycopg.Connection[Any], statement: str, *key: str) -> bool:
    return conn.execute(statement, key).rowcount > 0


def delete_route(conn: psycopg.Connection[Any], name: str) -> bool:
    return _deleted(conn, "DELETE FROM route WHERE name = %s", name)


def subscriber_exists(conn: psycopg.Connection[Any], username: str, domain: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM subscriber WHERE username = %s AND domain = %s", (username, domain)
        ).fetchone()
        is not None
    )


def delete_subscriber(conn: psycopg.Connection[Any], username: str, domain: str) -> bool:
    return _deleted(
        conn, "DELETE FROM subscriber WHERE username = %s AND domain = %s", username, domain
    )


def delete_panel(conn: psycopg.Connection[Any], panel_id: str) -> bool:
    return _deleted(conn, "DELETE FROM intercom_panel WHERE panel_id = %s", panel_id)


def delete_flat(conn: psycopg.Connection[Any], building: str, number: str) -> bool:
    """The flat and its devices (ON DELETE CASCADE)."""
    return _deleted(conn, "DELETE FROM flat WHERE building = %s AND number = %s", building, number)


def delete_queue(conn: psycopg.Connection[Any], queue_id: str) -> bool:
    """The queue, its memberships and callback requests; QueueInUse when another queue
    overflows into it (a reference no foreign key holds: overflow is text)."""
    with conn.transaction():
        # The import's lock: no import can add an overflow into the queue meanwhile.
        conn.execute("LOCK TABLE acd_queue IN SHARE ROW EXCLUSIVE MODE")
        overflowing = [
            str(row[0])
            for row in conn.execute(
                'SELECT queue_id FROM acd_queue WHERE overflow = %s ORDER BY queue_id COLLATE "C"',
                (f"queue:{queue_id}",),
            ).fetchall()
        ]
        if overflowing:
            raise QueueInUse(queue_id, overflowing)
        return _deleted(conn, "DELETE FROM acd_queue WHERE queue_id = %s", queue_id)


def delete_agent(conn: psycopg.Connection[Any], agent_id: str) -> bool:
    """The agent and its memberships (ON DELETE CASCADE)."""
    return _deleted(conn, "DELETE FROM acd_agent WHERE agent_id = %s", agent_id)


def delete_city(conn: psycopg.Connection[Any], city_id: str) -> bool:
    """Raises psycopg.errors.ForeignKeyViolation while the city has pool numbers; its panels
    lose their city (ON DELETE SET NULL: their 112 calls use the global fallback)."""
    return _deleted(conn, "DELETE FROM sos_city WHERE city_id = %s", city_id)


def delete_number(conn: psycopg.Connection[Any], number: str) -> bool:
    """The pool number, whatever its lease (as `sos import --replace` removes numbers)."""
    return _deleted(conn, "DELETE FROM sos_number WHERE number = %s", number)


async def pool_number_exists(conn: psycopg.AsyncConnection[Any], number: str) -> bool:
    cursor = await conn.execute("SELECT 1 FROM sos_number WHERE number = %s", (number,))
    return await cursor.fetchone() is not None
