"""Events through the real outbox, relay, RabbitMQ and CDR consumer."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import psycopg
import pytest

from softswitch.events.broker import declare_consumer_queue, declare_topology
from softswitch.events.consumer import CdrConsumer, fold_batch
from softswitch.events.examples import EXAMPLES
from softswitch.events.models import (
    CallAnswered,
    CallEnded,
    CallRinging,
    CallRouted,
    CallStarted,
    Event,
    parse_event,
)
from softswitch.events.outbox import add_events
from softswitch.events.relay import OutboxRelay
from softswitch.settings import AmqpSettings, DatabaseSettings, Settings
from tests.conftest import free_tcp_port
from tests.integration.conftest import PrivateRabbitMQ

pytestmark = pytest.mark.integration


@dataclass
class Collector:
    """A test consumer: every message of its queue, in arrival order."""

    messages: list[aio_pika.abc.AbstractIncomingMessage] = field(default_factory=list)

    async def take(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.messages.append(message)
        await message.ack()

    @property
    def event_ids(self) -> list[str]:
        return [str(m.message_id) for m in self.messages]


@dataclass
class Bus:
    amqp: AmqpSettings
    database: DatabaseSettings
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, service: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self.tasks.append(asyncio.create_task(service(self.stop)))

    async def collector(self, binding_key: str = "#") -> Collector:
        collector = Collector()
        connection = await aio_pika.connect(self.amqp.url.get_secret_value())
        channel = await connection.channel()
        topology = await declare_topology(channel, self.amqp.exchange)
        queue = await declare_consumer_queue(
            channel, topology.events, topology.dead,
            f"{self.amqp.exchange}.collector-{secrets.token_hex(3)}",
            [binding_key],
        )  # fmt: skip
        await queue.consume(collector.take)
        self.stop_callbacks.append(connection.close)
        return collector

    stop_callbacks: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)


def exchange_name() -> str:
    return f"softswitch.test.{secrets.token_hex(4)}"


@pytest.fixture
async def bus(host_settings: Settings, migrated_database: DatabaseSettings) -> AsyncIterator[Bus]:
    amqp = AmqpSettings(url=host_settings.amqp.url, exchange=exchange_name())
    bus = Bus(amqp, migrated_database, asyncio.Event())
    yield bus
    bus.stop.set()
    await asyncio.wait_for(asyncio.gather(*bus.tasks), 15)
    for close in bus.stop_callbacks:
        await close()
    connection = await aio_pika.connect(amqp.url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        for name in await _queues_of(amqp.exchange):
            await channel.queue_delete(name)
        for suffix in ("", ".unrouted", ".dead"):
            await channel.exchange_delete(amqp.exchange + suffix)


async def _queues_of(exchange: str) -> list[str]:
    listed = await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return [name for name in listed.stdout.split() if name.startswith(exchange + ".")]


def write_events(database: DatabaseSettings, events: list[Event]) -> None:
    with psycopg.connect(database.url) as conn:
        add_events(conn, events)


async def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def call_events(call_id: str, *, talk: float = 30.0) -> list[Event]:
    base = {"call_id": call_id, "sip_call_id": f"{call_id}@test"}
    started = CallStarted(**base, caller="89161234567", callee="100")
    return [
        started,
        CallRouted(**base, route="Queue", action="app", caller="79161234567", callee="100"),
        CallAnswered(**base, leg="agent-7", occurred_at=started.occurred_at + timedelta(seconds=4)),
        CallEnded(
            **base, disposition="answered", wait_seconds=4, talk_seconds=talk,
            occurred_at=started.occurred_at + timedelta(seconds=4 + talk),
        ),
    ]  # fmt: skip


def metrics(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return ""


def unpublished(database: DatabaseSettings) -> int:
    with psycopg.connect(database.url) as conn:
        row = conn.execute("SELECT count(*) FROM event_outbox WHERE published_at IS NULL")
        return int(row.fetchone()[0])  # type: ignore[index]


async def test_every_event_type_round_trips_in_order(bus: Bus) -> None:
    collector = await bus.collector()
    many = [CallRinging(call_id=f"order-{n}", leg="x") for n in range(3000)]
    write_events(bus.database, EXAMPLES)
    write_events(bus.database, many)
    # Small batches, many in flight: order must survive the pipelining.
    bus.start(OutboxRelay(bus.database.url, bus.amqp, batch_size=100).run)
    await eventually(lambda: len(collector.messages) == len(EXAMPLES) + len(many))
    received = [parse_event(m.body) for m in collector.messages]
    assert received[: len(EXAMPLES)] == EXAMPLES
    sent_ids = [e.event_id for e in EXAMPLES + many]
    received_ids = [e.event_id for e in received]
    first_difference = next(
        (i for i, (a, b) in enumerate(zip(sent_ids, received_ids, strict=True)) if a != b), None
    )
    assert first_difference is None, f"order differs from position {first_difference}"
    assert received[-1] == many[-1]
    routing_keys = [m.routing_key for m in collector.messages]
    assert routing_keys == [e.routing_key for e in EXAMPLES + many]
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in collector.messages)
    await eventually(lambda: unpublished(bus.database) == 0)


async def test_cdr_rows_are_built_once_whatever_the_duplicates(bus: Bus) -> None:
    first, second = call_events("call-a"), call_events("call-b", talk=10)
    write_events(bus.database, first + second)
    bus.start(OutboxRelay(bus.database.url, bus.amqp).run)
    bus.start(CdrConsumer(bus.database.url, bus.amqp).run)
    await eventually(lambda: cdr_events(bus.database) == 8)
    # The same events again, as a replay would send them: nothing may count twice.
    connection = await aio_pika.connect(bus.amqp.url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(bus.amqp.exchange)
        for event in first:
            await exchange.publish(
                aio_pika.Message(event.body(), message_id=str(event.event_id)),
                routing_key=event.routing_key,
            )
    await eventually(lambda: seen(bus.database) == 8 and duplicates_consumed(bus))
    with psycopg.connect(bus.database.url) as conn:
        rows = conn.execute(
            "SELECT call_id, caller, callee, route, disposition, wait_seconds, talk_seconds,"
            " events, answered_at - started_at FROM cdr ORDER BY call_id"
        ).fetchall()
    assert rows == [
        ("call-a", "79161234567", "100", "Queue", "answered", 4.0, 30.0, 4, timedelta(seconds=4)),
        ("call-b", "79161234567", "100", "Queue", "answered", 4.0, 10.0, 4, timedelta(seconds=4)),
    ]


def cdr_events(database: DatabaseSettings) -> int:
    with psycopg.connect(database.url) as conn:
        return int(conn.execute("SELECT coalesce(sum(events), 0) FROM cdr").fetchone()[0])  # type: ignore[index]


def seen(database: DatabaseSettings) -> int:
    with psycopg.connect(database.url) as conn:
        return int(conn.execute("SELECT count(*) FROM cdr_event_seen").fetchone()[0])  # type: ignore[index]


def duplicates_consumed(bus: Bus) -> bool:
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name", "messages"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    depth = dict(line.split() for line in listed.stdout.splitlines() if line.strip())
    return depth.get(f"{bus.amqp.exchange}.cdr") == "0"


async def test_a_malformed_message_is_dead_lettered_with_its_reason(bus: Bus) -> None:
    dead = Collector()
    connection = await aio_pika.connect(bus.amqp.url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        topology = await declare_topology(channel, bus.amqp.exchange)
        dead_queue = await channel.get_queue(f"{bus.amqp.exchange}.dead")
        await dead_queue.consume(dead.take)
        bus.start(CdrConsumer(bus.database.url, bus.amqp).run)
        await eventually(lambda: queue_exists(f"{bus.amqp.exchange}.cdr"))
        for body in (b"{not json", b'{"type": "call.ended", "call_id": "x"}', b"[]"):
            await topology.events.publish(
                aio_pika.Message(body, message_id=str(uuid.uuid4())), routing_key="call.ended"
            )
        write_events(bus.database, call_events("after-garbage"))
        bus.start(OutboxRelay(bus.database.url, bus.amqp).run)
        await eventually(lambda: len(dead.messages) == 3 and cdr_events(bus.database) == 4)
        reasons = [m.headers["x-softswitch-error"] for m in dead.messages]
    assert reasons[0].startswith("not JSON")
    assert reasons[1].startswith("call.ended: ") and "disposition: Field required" in reasons[1]
    assert reasons[2] == "not a JSON object"
    assert {m.headers["x-original-routing-key"] for m in dead.messages} == {"call.ended"}


def queue_exists(name: str) -> bool:
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return name in listed.stdout.split()


async def test_broker_outage_in_a_burst_loses_no_event(
    migrated_database: DatabaseSettings, private_rabbitmq: PrivateRabbitMQ
) -> None:
    amqp = AmqpSettings(url=private_rabbitmq.url, exchange="softswitch.events")
    stop = asyncio.Event()
    services = [
        asyncio.create_task(OutboxRelay(migrated_database.url, amqp, batch_size=200).run(stop)),
        asyncio.create_task(CdrConsumer(migrated_database.url, amqp).run(stop)),
    ]
    burst = [e for n in range(500) for e in call_events(f"outage-{n}")]  # 2,000 events
    try:
        write_events(migrated_database, burst[:600])
        await eventually(lambda: seen(migrated_database) > 0)
        await asyncio.to_thread(private_rabbitmq.stop)
        # Services keep working: events are committed while the broker is away.
        write_events(migrated_database, burst[600:1400])
        await asyncio.sleep(1.0)
        assert unpublished(migrated_database) > 0
        await asyncio.to_thread(private_rabbitmq.start)
        write_events(migrated_database, burst[1400:])
        await eventually(lambda: seen(migrated_database) == len(burst), timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*services), 20)
    with psycopg.connect(migrated_database.url) as conn:
        ids = {row[0] for row in conn.execute("SELECT event_id FROM cdr_event_seen")}
        per_call = conn.execute("SELECT count(*), min(events), max(events) FROM cdr").fetchone()
    assert ids == {event.event_id for event in burst}
    assert per_call == (500, 4, 4)
    assert unpublished(migrated_database) == 0


async def test_relay_killed_between_publish_and_mark_sent_loses_nothing(bus: Bus) -> None:
    collector = await bus.collector()
    events = [e for n in range(50) for e in call_events(f"crash-{n}")]
    write_events(bus.database, events)
    env = {
        **os.environ,
        "SOFTSWITCH_DATABASE_URL": bus.database.url,
        "SOFTSWITCH_AMQP_URL": bus.amqp.url.get_secret_value(),
        "SOFTSWITCH_AMQP_EXCHANGE": bus.amqp.exchange,
    }
    with psycopg.connect(bus.database.url) as blocker:
        # Hold the outbox rows: the relay reads and publishes them, then its UPDATE that
        # marks them sent waits on our lock, i.e. it sits between publish and mark-sent.
        blocker.execute("SELECT id FROM event_outbox FOR UPDATE")
        relay = subprocess.Popen([sys.executable, "-m", "softswitch", "events", "relay"], env=env)
        await eventually(lambda: len(collector.messages) >= len(events) // 2)
        os.kill(relay.pid, signal.SIGKILL)
        relay.wait(10)
        # Its UPDATE was already sent and would still commit once our lock goes (PostgreSQL
        # does not notice a dead client while waiting on a lock); end that backend too, as
        # if the relay's whole host had died, so the batch is really never marked sent.
        with psycopg.connect(bus.database.url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'UPDATE event_outbox%%'"
                " AND pid <> pg_backend_pid()"
            )
        blocker.rollback()
    assert unpublished(bus.database) == len(events)  # nothing was marked sent
    metrics_port = free_tcp_port()
    relay = subprocess.Popen(
        [sys.executable, "-m", "softswitch", "events", "relay"],
        env={**env, "SOFTSWITCH_METRICS_PORT": str(metrics_port)},
    )
    try:
        await eventually(lambda: unpublished(bus.database) == 0, timeout=30)
        await eventually(lambda: len(set(collector.event_ids)) == len(events))
        # The relay process serves its own metrics: the backlog is back to zero.
        await eventually(lambda: "softswitch_events_outbox_backlog 0.0" in metrics(metrics_port))
        assert f"softswitch_events_published_total {float(len(events))}" in metrics(metrics_port)
    finally:
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(10) == 0
    assert set(collector.event_ids) == {str(e.event_id) for e in events}
    assert len(collector.event_ids) > len(events)  # the killed relay's batch came twice


async def test_tail_prints_live_events_of_its_key(bus: Bus) -> None:
    env = {
        **os.environ,
        "SOFTSWITCH_AMQP_URL": bus.amqp.url.get_secret_value(),
        "SOFTSWITCH_AMQP_EXCHANGE": bus.amqp.exchange,
    }
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "softswitch", "events", "tail", "--key", "call.#", "--json",
        env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.sleep(1.5)  # its queue is bound
        ended = call_events("tailed")[-1]
        other = EXAMPLES[7]  # acd.waiter.joined: not under call.#
        write_events(bus.database, [other, ended])
        bus.start(OutboxRelay(bus.database.url, bus.amqp).run)
        assert tail.stdout is not None
        line = await asyncio.wait_for(tail.stdout.readline(), 10)
    finally:
        tail.send_signal(signal.SIGTERM)
        await asyncio.wait_for(tail.wait(), 10)
    assert parse_event(line) == ended


def test_schema_writes_one_json_schema_per_event(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "softswitch", "events", "schema", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(f"{e.routing_key}.json" for e in EXAMPLES)
    ended = json.loads((tmp_path / "call.ended.json").read_text())
    assert {"disposition", "wait_seconds", "event_id", "call_id"} <= ended["properties"].keys()


def test_a_duplicate_inside_one_batch_is_folded_once(migrated_database: DatabaseSettings) -> None:
    events = call_events("dup-in-batch")
    with psycopg.connect(migrated_database.url) as conn, conn.transaction():
        folded, duplicates = fold_batch(conn, [*events, events[2], events[3]])
    assert (folded, duplicates) == (4, 2)
    with psycopg.connect(migrated_database.url) as conn:
        assert conn.execute("SELECT events, talk_seconds FROM cdr").fetchall() == [(4, 30.0)]
