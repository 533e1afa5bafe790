"""The outbox relay: publishes outbox rows in order, marks them sent after the broker confirms.

Delivery is at least once: a relay that dies after the broker confirmed a batch but before
marking it sent publishes that batch again when it (or another relay) starts, so consumers
drop duplicates by event id. Only one relay publishes at a time (a PostgreSQL advisory lock),
which keeps the order of the outbox on the bus; a second relay waits as a hot standby. While
the broker is down events wait in the outbox and the backlog metric grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import psycopg
from pamqp.commands import Basic
from prometheus_client import Counter, Gauge

from softswitch.events.amqp import AmqpLink, OutgoingMessage
from softswitch.events.broker import CONNECTION_FAILURES, ensure_topology
from softswitch.reconnect import keep_connected
from softswitch.settings import AmqpSettings

log = logging.getLogger("softswitch.events.relay")

BACKLOG = Gauge("softswitch_events_outbox_backlog", "Events written but not yet published")
PUBLISHED = Counter("softswitch_events_published_total", "Events the broker confirmed")
RELAY_ERRORS = Counter("softswitch_events_relay_errors_total", "Relay connection failures")
BROKER_UP = Gauge("softswitch_events_broker_up", "1 while the relay is connected to RabbitMQ")
RELAY_ACTIVE = Gauge("softswitch_events_relay_active", "1 while this relay holds the lock")

# Any constant: the same for every relay process.
RELAY_LOCK_KEY = 0x50F7E7E5


class OutboxRelay:
    def __init__(
        self,
        database_url: str,
        amqp: AmqpSettings,
        *,
        batch_size: int = 2000,
        max_in_flight: int = 4,
        idle_poll_seconds: float = 1.0,
    ) -> None:
        self._database_url = database_url
        self._amqp = amqp
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight
        self._idle_poll = idle_poll_seconds
        self._backlog_checked = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        await keep_connected(
            self._relay, stop, what="relay", failures=CONNECTION_FAILURES,
            on_failure=self._disconnected,
        )  # fmt: skip

    @staticmethod
    def _disconnected(_: BaseException) -> None:
        BROKER_UP.set(0)
        RELAY_ACTIVE.set(0)
        RELAY_ERRORS.inc()

    async def _relay(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._database_url, autocommit=True, connect_timeout=3
        ) as conn:
            if not await self._take_lock(conn, stop):
                return
            RELAY_ACTIVE.set(1)
            await conn.execute("LISTEN event_outbox")
            url = self._amqp.url.get_secret_value()
            await ensure_topology(url, self._amqp.exchange)
            async with await AmqpLink.connect(url, confirms=True, name="outbox relay") as link:
                BROKER_UP.set(1)
                log.info("relay publishing to %s", self._amqp.exchange)
                await self._pipeline(conn, link, stop)

    async def _pipeline(
        self,
        conn: psycopg.AsyncConnection[Any],
        link: AmqpLink,
        stop: asyncio.Event,
    ) -> None:
        """Keep up to ``max_in_flight`` batches awaiting confirms; mark them sent in order.

        Waiting for each batch's confirms before sending the next caps the relay at one
        broker fsync per batch; batches in flight on one channel still leave in outbox order.
        """
        in_flight: deque[tuple[list[int], asyncio.Future[Any]]] = deque()
        last_sent = 0
        try:
            while not stop.is_set():
                rows = await self._next_rows(conn, after=last_sent)
                if rows:
                    last_sent = rows[-1][0]
                    in_flight.append(([row[0] for row in rows], self._publish(link, rows)))
                partial = len(rows) < self._batch_size
                while in_flight and (
                    partial or in_flight[0][1].done() or len(in_flight) > self._max_in_flight
                ):
                    ids, confirmed = in_flight.popleft()
                    await confirmed  # a broker failure raises here: nothing is marked
                    await conn.execute(
                        "UPDATE event_outbox SET published_at = clock_timestamp()"
                        " WHERE id = ANY(%s)",
                        (ids,),
                    )
                    PUBLISHED.inc(len(ids))
                await self._update_backlog(conn, force=not rows)
                if not rows:
                    await self._wait_for_events(conn)
        finally:
            for _, confirmed in in_flight:
                confirmed.cancel()
            # Unconfirmed batches stay unmarked and are published again later.
            await asyncio.gather(*(f for _, f in in_flight), return_exceptions=True)

    async def _take_lock(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> bool:
        while not stop.is_set():
            row = await (
                await conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,))
            ).fetchone()
            if row and row[0]:
                return True
            log.info("another relay is publishing; standing by")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
        return False

    async def _next_rows(
        self, conn: psycopg.AsyncConnection[Any], *, after: int
    ) -> list[tuple[Any, ...]]:
        return await (
            await conn.execute(
                "SELECT id, event_id, routing_key, payload::text,"
                " (extract(epoch FROM created_at) * 1000000)::bigint FROM event_outbox"
                " WHERE published_at IS NULL AND id > %s ORDER BY id LIMIT %s",
                (after, self._batch_size),
            )
        ).fetchall()

    def _publish(self, link: AmqpLink, rows: list[tuple[Any, ...]]) -> asyncio.Future[None]:
        """Send a batch now; the future completes when the broker confirmed all of it.

        Not mandatory: unroutable events go to the alternate exchange.
        """
        return link.publish(
            self._amqp.exchange,
            (
                OutgoingMessage(
                    routing_key,
                    payload.encode(),
                    Basic.Properties(
                        message_id=str(event_id),
                        message_type=routing_key,
                        content_type="application/json",
                        delivery_mode=2,  # persistent
                        # Integers: AMQP would carry a float header as 32 bits.
                        headers={"x-outbox-id": outbox_id, "x-created-at-us": created_us},
                    ),
                )
                for outbox_id, event_id, routing_key, payload, created_us in rows
            ),
        )

    async def _update_backlog(self, conn: psycopg.AsyncConnection[Any], *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._backlog_checked < 1.0:
            return
        self._backlog_checked = now
        row = await (
            await conn.execute("SELECT count(*) FROM event_outbox WHERE published_at IS NULL")
        ).fetchone()
        BACKLOG.set(row[0] if row else 0)

    async def _wait_for_events(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Until a NOTIFY says new events were committed, or the idle poll runs out."""
        async for _ in conn.notifies(timeout=self._idle_poll, stop_after=1):
            pass
        # Drain notifications that piled up meanwhile; one batch query serves them all.
        async for _ in conn.notifies(timeout=0):
            pass
