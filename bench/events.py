"""Event bus benchmark: outbox -> relay -> RabbitMQ -> consumer, with publisher confirms.

The relay runs as its own process (`softswitch events relay`); the consumer is this process,
on the CDR consumer's queue (in its place: one queue, as deployed) through the same lean AMQP
link the CDR consumer uses; writers are processes of their own committing events in
transactions of 100.

1. Fixed rates (``--rates``, default 1,000 and 10,000 events/s) for ``--seconds``: what was
   written and delivered per second, how far behind the consumer was when writing stopped,
   and the lag from each event's commit to its consumption, p50/p99.
2. Drain: the outbox is filled first (no relay running), then the relay starts and drains it.
3. Sustained maximum: ``--writers`` processes write as fast as they can while the relay
   publishes; events/s written, confirmed, delivered, the backlog left, and the CPU each
   stage spent per event (all stages share the machine's two cores).
4. Baseline in the same run: events published straight to the broker with confirms, as the
   relay does but without the outbox (what a service could do, losing events whenever the
   broker is down).

    .venv/bin/python bench/events.py [--seconds 10] [--rates 1000,10000] [--writers 2]

Uses the stack's PostgreSQL and RabbitMQ (softswitch stack up) with a scratch database and
an exchange of its own; loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
from pamqp.commands import Basic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    busy_share,
    children_cpu,
    cpu_of_processes,
    cpu_seconds,
    machine_busy,
    postgres_cpu,
)

from softswitch.db import temporary_database
from softswitch.events.amqp import AmqpLink, Delivery, OutgoingMessage
from softswitch.events.broker import declare_topology
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
    """Counts deliveries and their lag from commit (header x-created-at-us).

    Consumes like the CDR consumer does: the lean AMQP link, batches acknowledged at once.
    """

    def __init__(self) -> None:
        self.count = 0
        self.lags: list[float] = []
        self.record_lag = False

    async def run(self, link: AmqpLink) -> None:
        while True:
            batch = await link.deliveries(limit=1000, timeout=1.0)
            if not batch:
                continue
            self.count += len(batch)
            if self.record_lag:
                now = time.time()
                self.lags += [now - committed_at(delivery) for delivery in batch]
            link.ack(batch[-1].delivery_tag, multiple=True)


def committed_at(delivery: Delivery) -> float:
    created_us = (delivery.properties.headers or {}).get("x-created-at-us")
    assert isinstance(created_us, int), "the relay sets x-created-at-us"
    return created_us / 1e6


def write_for(
    database: str, seconds: float, rate: float | None, written: Any, ready: Any, go: Any
) -> None:
    """Commit events in transactions of 100 (or rate/100 per 10 ms) for ``seconds``.

    Runs in a process of its own, so the writer does not share a GIL with the consumer
    being measured; starts writing on ``go``, once every writer has started up (a spawned
    process's imports cost a second of CPU, which is not the pipeline's).
    """
    with psycopg.connect(database) as conn:
        ready.release()
        go.wait()
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


class Writers:
    """``count`` writer processes sharing ``rate`` (None: as fast as they can), started up
    and waiting; ``run`` lets them write for ``seconds`` and returns what they committed."""

    def __init__(
        self, database: DatabaseSettings, seconds: float, rate: float | None, count: int
    ) -> None:
        context = multiprocessing.get_context("spawn")
        share = None if rate is None else rate / count
        self._ready = context.Semaphore(0)
        self._go = context.Event()
        self._counts = [context.Value("q", 0) for _ in range(count)]
        self._processes = [
            context.Process(
                target=write_for,
                args=(database.url, seconds, share, written, self._ready, self._go),
            )
            for written in self._counts
        ]
        for process in self._processes:
            process.start()

    async def started(self) -> None:
        for _ in self._processes:
            while not self._ready.acquire(block=False):
                await asyncio.sleep(0.05)

    async def run(self) -> int:
        self._go.set()
        while any(process.is_alive() for process in self._processes):
            await asyncio.sleep(0.1)
        for process in self._processes:
            process.join()
        return sum(int(written.value) for written in self._counts)


async def write_in_process(
    database: DatabaseSettings, seconds: float, rate: float | None, writers: int = 1
) -> int:
    """Events committed by ``writers`` processes of their own (each at ``rate`` / writers)."""
    processes = Writers(database, seconds, rate, writers)
    await processes.started()
    return await processes.run()


async def relay_ready(database: DatabaseSettings, receiver: Receiver) -> None:
    """Until the relay just started delivers an event: its start-up is not lag."""
    before = receiver.count
    with psycopg.connect(database.url) as conn:
        add_events(conn, events(1))
    await drain(receiver, before + 1, timeout=30)


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
        url = amqp.url.get_secret_value()
        connection = await aio_pika.connect(url)
        async with connection, await AmqpLink.connect(url) as link:
            channel = await connection.channel()
            topology = await declare_topology(channel, exchange)
            # The bench's consumer takes the CDR consumer's place on its queue: one queue,
            # as deployed (each further consumer queue costs the broker ~50 us per event).
            await link.consume(topology.cdr.name, prefetch=2000)
            receiver = Receiver()
            receiving = asyncio.create_task(receiver.run(link))
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
                await relay_ready(database, receiver)
                for rate in args.rates:  # first: a fresh broker and queue
                    await fixed_rate(database, receiver, rate, args)
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
                cpu_line = await sustained(database, receiver, relay.pid, args)
            finally:
                relay.send_signal(signal.SIGTERM)
                relay.wait(20)
            await baseline(url, exchange, receiver, args)
            receiving.cancel()
            print(f"\n{cpu_line}")
            for name in (
                f"{exchange}.cdr",
                f"{exchange}.dead",
                f"{exchange}.unrouted",
            ):
                await channel.queue_delete(name)
            for name in (exchange, f"{exchange}.dead", f"{exchange}.unrouted"):
                await channel.exchange_delete(name)


def stage_cpu(relay_pid: int) -> dict[str, float]:
    """CPU seconds so far of each stage: the relay, RabbitMQ, this process (the consumer),
    PostgreSQL, and our finished children (the writers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "relay": cpu_seconds(relay_pid),
        "broker": cpu_of_processes(
            lambda entry: (entry / "comm").read_text().strip() == "beam.smp"
        ),
        "consumer": own.ru_utime + own.ru_stime,
        "postgres": postgres_cpu(),
        "writers": children_cpu(),
    }


async def sustained(
    database: DatabaseSettings, receiver: Receiver, relay_pid: int, args: argparse.Namespace
) -> str:
    writers = Writers(database, args.seconds, None, args.writers)
    await writers.started()
    before = receiver.count
    cpu_before, busy_before = stage_cpu(relay_pid), machine_busy()
    started = time.monotonic()
    written = await writers.run()
    elapsed = time.monotonic() - started
    cpu, busy = stage_cpu(relay_pid), busy_share(busy_before, machine_busy())
    published = published_per_second(database, elapsed)
    delivered = receiver.count - before
    per_event = " / ".join(
        f"{(cpu[stage] - cpu_before[stage]) / max(delivered, 1) * 1e6:.0f}" for stage in cpu
    )
    print(
        f"| sustained, {args.writers} writer(s) as fast as they can | {written / elapsed:,.0f}"
        f" | {published:,.0f} | {delivered / elapsed:,.0f} | {written - delivered:,} | - | - |"
    )
    await drain(receiver, before + written)
    return (
        f"CPU per delivered event while sustained, us (relay / broker / consumer / PostgreSQL /"
        f" writers): {per_event}; machine {busy:.0%} busy"
    )


async def fixed_rate(
    database: DatabaseSettings, receiver: Receiver, rate: float, args: argparse.Namespace
) -> None:
    """Events offered at ``rate`` for ``--seconds``: is it kept up with, and the lag."""
    writers = Writers(database, args.seconds, rate, args.writers)
    await writers.started()
    before = receiver.count
    receiver.lags.clear()
    receiver.record_lag = True
    started = time.monotonic()
    written = await writers.run()
    writing = time.monotonic() - started
    delivered = receiver.count - before
    await drain(receiver, before + written)
    receiver.record_lag = False
    q = statistics.quantiles(receiver.lags, n=100)
    print(
        f"| {rate:,.0f} events/s offered | {written / writing:,.0f} | - |"
        f" {delivered / writing:,.0f} | {written - delivered:,} |"
        f" {q[49] * 1000:.1f} | {q[98] * 1000:.1f} |"
    )


async def drain(receiver: Receiver, target: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while receiver.count < target and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def baseline(url: str, exchange: str, receiver: Receiver, args: argparse.Namespace) -> None:
    """Direct publishing with confirms, 2,000 per batch and up to 4 batches in flight, as
    the relay does, through the same AMQP link: the broker's and client's share alone."""
    before = receiver.count
    published = 0
    in_flight: list[asyncio.Future[None]] = []
    started = time.monotonic()
    async with await AmqpLink.connect(url, confirms=True) as link:
        while time.monotonic() - started < args.seconds:
            batch = events(2000)
            in_flight.append(
                link.publish(
                    exchange,
                    [
                        OutgoingMessage(
                            e.routing_key,
                            e.body(),
                            Basic.Properties(message_id=str(e.event_id), delivery_mode=2),
                        )
                        for e in batch
                    ],
                )
            )
            published += len(batch)
            if len(in_flight) >= 4:
                await in_flight.pop(0)
        await asyncio.gather(*in_flight)
    elapsed = time.monotonic() - started
    await drain(receiver, before + published)
    print(
        f"| baseline: direct publish with confirms (no outbox) | {published / elapsed:,.0f} | - |"
        f" {(receiver.count - before) / elapsed:,.0f} | - | - | - |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--rates",
        type=lambda text: [float(rate) for rate in text.split(",")],
        default=[1000.0, 10000.0],
        help="offered rates for the lag test, events/s",
    )
    parser.add_argument(
        "--writers", type=int, default=2, help="writer processes (they share the offered rate)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
