"""Events from services with no transaction of their own (the ARI apps), into the outbox.

A call app must never wait for PostgreSQL between a 200 OK and the bridge, so ``emit`` only
queues; a background task writes queued events in batches (one INSERT round trip for many
events). When PostgreSQL is down the batch is kept and retried with backoff: events wait in
memory, in order, up to ``max_buffered``; past that the oldest are dropped and counted
(a loss, so it is an error metric an operator alerts on). On stop the queue is flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge

from softswitch.events.models import Event
from softswitch.events.outbox import add_events_async
from softswitch.reconnect import backoff_delay
from softswitch.settings import DatabaseSettings

log = logging.getLogger("softswitch.events.writer")

WRITER_BUFFERED = Gauge("softswitch_event_writer_buffered", "Events waiting to enter the outbox")
WRITER_WRITTEN = Counter("softswitch_event_writer_written_total", "Events written to the outbox")
WRITER_DROPPED = Counter(
    "softswitch_event_writer_dropped_total", "Events dropped: buffer full while PostgreSQL was down"
)
WRITER_FAILURES = Counter("softswitch_event_writer_failures_total", "Failed outbox writes")


class OutboxWriter:
    def __init__(
        self, database: DatabaseSettings, *, max_batch: int = 1000, max_buffered: int = 200_000
    ) -> None:
        self._database = database
        self._max_batch = max_batch
        self._buffer: deque[Event] = deque(maxlen=max_buffered)
        self._wakeup = asyncio.Event()

    def emit(self, event: Event) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            WRITER_DROPPED.inc()
            log.error("event buffer full, dropping the oldest event (PostgreSQL down too long?)")
        self._buffer.append(event)
        WRITER_BUFFERED.set(len(self._buffer))
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Write until ``stop``, then flush what is queued (bounded by the retry loop)."""
        conn: psycopg.AsyncConnection[Any] | None = None
        attempt = 0
        try:
            while self._buffer or not stop.is_set():
                if not self._buffer:
                    self._wakeup.clear()
                    waiter = asyncio.create_task(self._wakeup.wait())
                    stopper = asyncio.create_task(stop.wait())
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    stopper.cancel()
                    continue
                batch = [self._buffer[i] for i in range(min(self._max_batch, len(self._buffer)))]
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(
                            self._database.url, autocommit=True
                        )
                    async with conn.transaction():
                        await add_events_async(conn, batch)
                except psycopg.OperationalError as exc:
                    WRITER_FAILURES.inc()
                    delay = backoff_delay(attempt, minimum=0.2, maximum=5.0)
                    attempt += 1
                    log.warning("outbox write failed (%s); retry in %.1fs", exc, delay)
                    if conn is not None:
                        await conn.close()
                        conn = None
                    if stop.is_set() and attempt > 3:
                        log.error("giving up on %d events at shutdown", len(self._buffer))
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    continue
                attempt = 0
                for _ in batch:
                    self._buffer.popleft()
                WRITER_WRITTEN.inc(len(batch))
                WRITER_BUFFERED.set(len(self._buffer))
        finally:
            if conn is not None:
                await conn.close()
