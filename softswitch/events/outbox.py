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
# which was the largest cost of the ARI apps' event writer under load. Binary parameters
# (%b): in text format psycopg escapes every quote of every JSON payload for the array
# literal with a regex, 2/3 of a write's cost (82 -> 30 us per event).
INSERT = (
    "INSERT INTO event_outbox (event_id, routing_key, payload)"
    " SELECT * FROM unnest(%b::uuid[], %b::text[], %b::jsonb[])"
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


def templated_event(name: str, event: Event) -> dict[str, Any]:
    """``event`` as parameters of a statement that completes and writes it itself.

    For a state change whose event carries values only the changing statement knows (a
    leased number, say): the statement inserts ``templated_outbox_row(name, fields)`` from the
    rows it changed, so the change and its event commit in one round trip to PostgreSQL.
    """
    return {
        f"{name}_id": event.event_id,
        f"{name}_key": event.routing_key,
        f"{name}_payload": event.model_dump_json(),
    }


def templated_outbox_row(name: str, fields: str) -> str:
    """The (event_id, routing_key, payload) of ``templated_event(name, ...)`` with
    ``fields`` (SQL for ``jsonb_build_object``'s arguments) set in its payload."""
    return (
        f"%({name}_id)s::uuid, %({name}_key)s::text,"
        f" %({name}_payload)s::jsonb || jsonb_build_object({fields})"
    )


def add_events(conn: psycopg.Connection[Any], events: Iterable[Event]) -> None:
    conn.execute(INSERT, outbox_columns(events))


async def add_events_async(conn: psycopg.AsyncConnection[Any], events: Iterable[Event]) -> None:
    await conn.execute(INSERT, outbox_columns(events))
