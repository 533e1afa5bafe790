"""Event bus benchmark: outbox -> relay -> RabbitMQ -> consumer, with publisher confirms.

0. Drain: the outbox is filled first (no relay running), then the relay starts and drains
   it while the consumer receives.
1. Sustained throughput: a writer commits events into the outbox as fast as it can for
   ``--seconds`` while the relay (its own process, `softswitch events relay`) publishes and a
   consumer receives; reports events/s written, delivered, and the backlog left.
2. Lag at a fixed rate (``--rate``, default 1,000 events/s): time from the event's commit
   to its consumption, p50/p99.
3. Baseline in the same run: the same events published straight to the broker with
   confirms, batch by batch (what a service could do without an outbox, losing events
   whenever the broker is down).

    .venv/bin/python bench/events.py [--seconds 10] [--rate 1000]

Uses the stack's PostgreSQL and RabbitMQ (softswitch stack up) with a scratch database and
an exchange of its own; loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import aio_pika
import psycopg

from softswitch.db import temporary_database
from softswitch.events.broker import declare_consumer_queue, declare_topology
from softswitch.events.models import CallRinging
from softswitch.events.outbox import add_events
from softswitch.settings import AmqpSettings, DatabaseSettings, load_settings

TABLE_HEADER = (
    "| test | written/s | confirmed/s | delivered/s | backlog | lag p50 ms | lag p99 ms |\n"
    "|---|---|---|---|---|---|---|"
)


def events(count: int) -> list[CallRinging]:
    return [CallRinging(call_id=f"bench-{n // 4}", leg=f"leg-{n % 4}") for n in range(count)]


class Receiver:
    """Counts deliveries and their lag from commit (header x-created-at)."""

    def __init__(self) -> None:
        self.count = 0
        self.lags: list[float] = []
        self.record_lag = False

    async def take(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.count += 1
        if self.record_lag:
            created_us = int((message.headers or {}).get("x-created-at-us", 0))
            self.lags.append(time.time() - created_us / 1e6)
        if self.count % 100 == 0:
            await message.ack(multiple=True)


def write_for(database: str, seconds: float, rate: float | None, written: Any) -> None:
    """Commit events in transactions of 100 (or rate/100 per 10 ms) for ``seconds``.

    Runs in a process of its own, so the writer does not share a GIL with the consumer
    being measured.
    """
    with psycopg.connect(database) as conn:
        deadline = time.monotonic() + seconds
        batch = 100 if rate is None else max(1, int(rate / 100))
        started = time.monotonic()
        while time.monotonic() < deadline:
            with conn.transaction():
                add_events(conn, events(batch))
            written.value += batch
            if rate is not None:
                due = started + written.value / rate
                time.sleep(max(0.0, due - time.monotonic()))


async def write_in_process(database: DatabaseSettings, seconds: float, rate: float | None) -> int:
    context = multiprocessing.get_context("spawn")
    written = context.Value("q", 0)
    writer = context.Process(target=write_for, args=(database.url, seconds, rate, written))
    writer.start()
    while writer.is_alive():
        await asyncio.sleep(0.1)
    writer.join()
    return int(written.value)


def unpublished(database: DatabaseSettings) -> int:
    with psycopg.connect(database.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM event_outbox WHERE published_at IS NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def published_per_second(database: DatabaseSettings, seconds: float) -> float:
    """Events the relay got confirmed during the last ``seconds`` (from published_at)."""
    with psycopg.connect(database.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM event_outbox"
            " WHERE published_at > now() - make_interval(secs => %s)",
            (seconds,),
        ).fetchone()
    return float(row[0]) / seconds if row else 0.0


async def run(args: argparse.Namespace) -> None:
    settings = load_settings()
    exchange = f"softswitch.bench.{secrets.token_hex(4)}"
    amqp = AmqpSettings(url=settings.amqp.url, exchange=exchange)
    with temporary_database(settings.database, prefix="softswitch_bench") as database:
        connection = await aio_pika.connect(amqp.url.get_secret_value())
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1000)
            topology = await declare_topology(channel, exchange)
            queue = await declare_consumer_queue(
                channel, topology.events, topology.dead, f"{exchange}.bench", ["#"]
            )
            receiver = Receiver()
            await queue.consume(receiver.take)
            env = {
                **os.environ,
                "SOFTSWITCH_DATABASE_URL": database.url,
                "SOFTSWITCH_AMQP_EXCHANGE": exchange,
                "SOFTSWITCH_LOG_LEVEL": "WARNING",
            }
            command = [sys.executable, "-m", "softswitch", "events", "relay"]
            print(TABLE_HEADER)
            relay = subprocess.Popen(command, env=env)
            try:
                await fixed_rate(database, receiver, args)  # first: a fresh broker and queue
            finally:
                relay.send_signal(signal.SIGTERM)
                relay.wait(20)
            before = receiver.count
            queued = await write_in_process(database, 4.0, None)  # while no relay runs
            started = time.monotonic()
            relay = subprocess.Popen(command, env=env)
            try:
                while unpublished(database) > 0 and time.monotonic() - started < 120:
                    await asyncio.sleep(0.05)
                drained = time.monotonic() - started
                await drain(receiver, before + queued)
                print(
                    f"| drain {queued:,} queued events | - | {queued / drained:,.0f}"
                    f" | {queued / (time.monotonic() - started):,.0f} | 0 | - | - |"
                )
                await sustained(database, receiver, args)
            finally:
                relay.send_signal(signal.SIGTERM)
                relay.wait(20)
            await baseline(connection, topology.events, receiver, args)
            for name in (
                f"{exchange}.bench",
                f"{exchange}.cdr",
                f"{exchange}.dead",
                f"{exchange}.unrouted",
            ):
                await channel.queue_delete(name)
            for name in (exchange, f"{exchange}.dead", f"{exchange}.unrouted"):
                await channel.exchange_delete(name)


async def sustained(
    database: DatabaseSettings, receiver: Receiver, args: argparse.Namespace
) -> None:
    before = receiver.count
    started = time.monotonic()
    written = await write_in_process(database, args.seconds, None)
    elapsed = time.monotonic() - started
    published = published_per_second(database, elapsed)
    delivered = receiver.count - before
    print(
        f"| sustained, as fast as possible | {written / elapsed:,.0f} | {published:,.0f}"
        f" | {delivered / elapsed:,.0f} | {written - delivered:,} | - | - |"
    )
    await drain(receiver, before + written)


async def fixed_rate(
    database: DatabaseSettings, receiver: Receiver, args: argparse.Namespace
) -> None:
    before = receiver.count
    receiver.lags.clear()
    receiver.record_lag = True
    started = time.monotonic()
    written = await write_in_process(database, args.seconds, args.rate)
    await drain(receiver, before + written)
    elapsed = time.monotonic() - started
    receiver.record_lag = False
    q = statistics.quantiles(receiver.lags, n=100)
    print(
        f"| {args.rate:,.0f} events/s | {written / elapsed:,.0f} | - |"
        f" {(receiver.count - before) / elapsed:,.0f} | 0 |"
        f" {q[49] * 1000:.1f} | {q[98] * 1000:.1f} |"
    )


async def drain(receiver: Receiver, target: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while receiver.count < target and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def baseline(
    connection: aio_pika.abc.AbstractConnection,
    exchange: aio_pika.abc.AbstractExchange,
    receiver: Receiver,
    args: argparse.Namespace,
) -> None:
    """Direct publishing with confirms, 100 per batch, no outbox."""
    confirm_channel = await connection.channel(publisher_confirms=True)
    confirm_exchange = await confirm_channel.get_exchange(exchange.name)
    before = receiver.count
    published = 0
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        batch = events(100)
        await asyncio.gather(*(
            confirm_exchange.publish(
                aio_pika.Message(e.body(), message_id=str(e.event_id),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=e.routing_key, mandatory=False)
            for e in batch
        ))  # fmt: skip
        published += len(batch)
    elapsed = time.monotonic() - started
    await drain(receiver, before + published)
    print(
        f"| baseline: direct publish with confirms (no outbox) | {published / elapsed:,.0f} | - |"
        f" {(receiver.count - before) / elapsed:,.0f} | - | - | - |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=1000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
