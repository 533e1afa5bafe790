"""The ARI apps' event writer against a real PostgreSQL, including one that goes down."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from softswitch import db
from softswitch.events.models import CallStarted
from softswitch.events.writer import OutboxWriter
from softswitch.settings import DatabaseSettings
from tests.integration.conftest import PrivatePostgres

pytestmark = pytest.mark.integration


def outbox_ids(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT event_id::text FROM event_outbox ORDER BY id").fetchall()
    return [event_id for (event_id,) in rows]


def started(n: int) -> CallStarted:
    return CallStarted(call_id=f"c{n}", caller="panel1", callee=str(n))


async def test_emitted_events_reach_the_outbox_in_order_and_are_flushed_on_stop(
    migrated_database: DatabaseSettings,
) -> None:
    writer = OutboxWriter(migrated_database, max_batch=100)
    stop = asyncio.Event()
    writing = asyncio.create_task(writer.run(stop))
    events = [started(n) for n in range(250)]
    for event in events[:200]:
        writer.emit(event)
    await asyncio.sleep(0.3)
    assert outbox_ids(migrated_database.url) == [str(e.event_id) for e in events[:200]]
    for event in events[200:]:
        writer.emit(event)
    stop.set()  # emitted just before stop: still written
    await asyncio.wait_for(writing, 5)
    assert outbox_ids(migrated_database.url) == [str(e.event_id) for e in events]


async def test_events_wait_in_memory_while_postgresql_is_down(
    private_postgres: PrivatePostgres,
) -> None:
    database = DatabaseSettings(url=private_postgres.url)
    db.upgrade(database)
    writer = OutboxWriter(database)
    stop = asyncio.Event()
    writing = asyncio.create_task(writer.run(stop))
    writer.emit(started(0))
    await asyncio.sleep(0.3)
    private_postgres.stop()
    events = [started(n) for n in range(1, 50)]
    for event in events:
        writer.emit(event)  # never blocks, never raises: the call goes on
    await asyncio.sleep(0.5)
    await asyncio.to_thread(private_postgres.start)
    deadline = time.monotonic() + 15
    while len(outbox_ids(database.url)) < 50:
        assert time.monotonic() < deadline, "the writer did not catch up"
        await asyncio.sleep(0.1)
    assert outbox_ids(database.url)[1:] == [str(e.event_id) for e in events]
    stop.set()
    await asyncio.wait_for(writing, 5)
