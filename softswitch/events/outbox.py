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

# One statement for a whole batch: executemany pays a protocol round of its own per row,
# which was the largest cost of the ARI apps' event writer under load.
INSERT = (
    "INSERT INTO event_outbox (event_id, routing_key, payload)"
    " SELECT * FROM unnest(%s::uuid[], %s::text[], %s::jsonb[])"
)


def outbox_columns(events: Iterable[Event]) -> tuple[list[Any], list[str], list[str]]:
    """The batch as three column arrays, in order (ids keep the events' order)."""
    ids: list[Any] = []
    keys: list[str] = []
    payloads: list[str] = []
    for event in events:
        ids.append(event.event_id)
        keys.append(event.routing_key)
        payloads.append(event.model_dump_json())
    return ids, keys, payloads


def add_events(conn: psycopg.Connection[Any], events: Iterable[Event]) -> None:
    conn.execute(INSERT, outbox_columns(events))


async def add_events_async(conn: psycopg.AsyncConnection[Any], events: Iterable[Event]) -> None:
    await conn.execute(INSERT, outbox_columns(events))
