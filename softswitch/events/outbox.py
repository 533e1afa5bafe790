"""Writing events: into the outbox, inside the caller's own transaction.

An event is committed together with the state change it describes, or not at all; the relay
publishes it afterwards. Publishing straight to the broker from a service would lose events
whenever the broker is down or the service dies between its commit and its publish.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from softswitch.events.models import Event

INSERT = "INSERT INTO event_outbox (event_id, routing_key, payload) VALUES (%s, %s, %s)"


def outbox_rows(events: Iterable[Event]) -> list[tuple[Any, str, str]]:
    return [(event.event_id, event.routing_key, event.model_dump_json()) for event in events]


def add_events(conn: psycopg.Connection[Any], events: Iterable[Event]) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(INSERT, outbox_rows(events))


async def add_events_async(conn: psycopg.AsyncConnection[Any], events: Iterable[Event]) -> None:
    async with conn.cursor() as cursor:
        await cursor.executemany(INSERT, outbox_rows(events))
