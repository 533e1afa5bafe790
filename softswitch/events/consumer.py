"""The CDR consumer: folds call events into one ``cdr`` row per call, exactly once.

Messages are taken in batches (up to the prefetch, or what arrived within a few ms) and
folded in one transaction; the batch is acknowledged after the commit. An event id already
in ``cdr_event_seen`` is a duplicate (at-least-once delivery) and is dropped. A message that
is not a valid event goes to the dead-letter exchange with the reason in header
``x-softswitch-error`` and is acknowledged, so it neither crashes the consumer nor blocks
the queue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from pamqp.commands import Basic
from prometheus_client import Counter
from psycopg.rows import dict_row

from softswitch.events.amqp import AmqpLink, Delivery, OutgoingMessage
from softswitch.events.broker import CONNECTION_FAILURES, ensure_topology
from softswitch.events.cdr import COLUMNS, CallRecord, fold
from softswitch.events.models import Event, MalformedEvent, parse_event
from softswitch.reconnect import keep_connected
from softswitch.settings import AmqpSettings

log = logging.getLogger("softswitch.events.cdr")

FOLDED = Counter("softswitch_cdr_events_total", "Events folded into CDRs")
DUPLICATES = Counter("softswitch_cdr_duplicates_total", "Redelivered events dropped")
DEAD_LETTERED = Counter("softswitch_events_dead_lettered_total", "Messages that were no event")

_UPSERT = (
    f"INSERT INTO cdr ({', '.join(COLUMNS)}) VALUES ({', '.join(f'%({c})s' for c in COLUMNS)})"
    f" ON CONFLICT (call_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "call_id")
    + ", updated_at = now()"
)


def fold_batch(conn: psycopg.Connection[Any], events: list[Event]) -> tuple[int, int]:
    """Fold events into CDRs in the caller's transaction; (folded, duplicates)."""
    # A redelivered copy can sit in the same batch as the original: keep one per id.
    unique = list({event.event_id: event for event in events}.values())
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "INSERT INTO cdr_event_seen (event_id) SELECT unnest(%s::uuid[])"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            ([event.event_id for event in unique],),
        )
        fresh = {row["event_id"] for row in cursor.fetchall()}
        new_events = [e for e in unique if e.event_id in fresh and e.call_id is not None]
        call_ids = sorted({e.call_id for e in new_events if e.call_id})
        cursor.execute(
            f"SELECT {', '.join(COLUMNS)} FROM cdr WHERE call_id = ANY(%s) ORDER BY call_id"
            " FOR UPDATE",
            (call_ids,),
        )
        records: dict[str, CallRecord | None] = {
            row["call_id"]: CallRecord.from_row(row) for row in cursor.fetchall()
        }
        for event in new_events:
            assert event.call_id is not None
            records[event.call_id] = fold(records.get(event.call_id), event)
        rows = [record.as_row() for record in records.values() if record is not None]
        if rows:
            cursor.executemany(_UPSERT, rows)
    return len(fresh), len(events) - len(fresh)


def _fold_committed(conn: psycopg.Connection[Any], events: list[Event]) -> tuple[int, int]:
    with conn.transaction():
        return fold_batch(conn, events)


class CdrConsumer:
    def __init__(self, database_url: str, amqp: AmqpSettings, *, prefetch: int = 500) -> None:
        self._database_url = database_url
        self._amqp = amqp
        self._prefetch = prefetch

    async def run(self, stop: asyncio.Event) -> None:
        await keep_connected(self._consume, stop, what="CDR consumer", failures=CONNECTION_FAILURES)

    async def _consume(self, stop: asyncio.Event) -> None:
        database: psycopg.Connection[Any] = await asyncio.to_thread(
            lambda: psycopg.connect(self._database_url, connect_timeout=3)
        )
        try:
            url = self._amqp.url.get_secret_value()
            topology = await ensure_topology(url, self._amqp.exchange)
            cdr_queue, dead_exchange = topology.cdr.name, topology.dead.name
            # Confirms make dead-lettering safe: the original is acked only once the broker
            # holds the copy.
            async with await AmqpLink.connect(url, confirms=True, name="CDR consumer") as link:
                await link.consume(cdr_queue, prefetch=self._prefetch)
                log.info("CDR consumer on queue %s", cdr_queue)
                while not stop.is_set():
                    # Let a burst gather into one transaction.
                    batch = await link.deliveries(limit=self._prefetch, timeout=0.5, linger=0.005)
                    if batch:
                        await self._handle(batch, dead_exchange, link, database)
        finally:
            database.close()

    async def _handle(
        self,
        batch: list[Delivery],
        dead_exchange: str,
        link: AmqpLink,
        database: psycopg.Connection[Any],
    ) -> None:
        events: list[Event] = []
        for message in batch:
            try:
                events.append(parse_event(message.body))
            except MalformedEvent as exc:
                await self._dead_letter(message, str(exc), dead_exchange, link)
        if events:
            folded, duplicates = await asyncio.to_thread(_fold_committed, database, events)
            FOLDED.inc(folded)
            DUPLICATES.inc(duplicates)
        link.ack(batch[-1].delivery_tag, multiple=True)

    @staticmethod
    async def _dead_letter(
        message: Delivery, reason: str, dead_exchange: str, link: AmqpLink
    ) -> None:
        DEAD_LETTERED.inc()
        properties = message.properties
        log.warning("dead-lettering message %s: %s", properties.message_id, reason)
        await link.publish(
            dead_exchange,
            [
                OutgoingMessage(
                    message.routing_key,
                    message.body,
                    Basic.Properties(
                        message_id=properties.message_id,
                        message_type=properties.message_type,
                        content_type=properties.content_type,
                        delivery_mode=2,  # persistent
                        headers={
                            **(properties.headers or {}),
                            "x-softswitch-error": reason[:1000],
                            "x-original-routing-key": message.routing_key,
                        },
                    ),
                )
            ],
        )
