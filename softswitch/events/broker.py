"""RabbitMQ topology of the event bus, declared idempotently by every publisher and consumer.

- ``<exchange>`` (topic, durable): every event, routing key = event type.
- ``<exchange>.unrouted`` (fanout) -> queue ``<exchange>.unrouted``: the topic exchange's
  alternate exchange, so an event no queue is bound to yet is kept, not dropped.
- ``<exchange>.dead`` (fanout) -> queue ``<exchange>.dead``: messages a consumer could not
  use, with the reason in header ``x-softswitch-error``.
- ``<exchange>.cdr``: the CDR consumer's queue, bound to every event. Declared with the
  exchanges, by publishers too, so events published before the CDR consumer first ran are
  waiting for it rather than parked as unrouted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aio_pika
import aiormq
import psycopg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

# What ends a relay's or consumer's session with the broker or the database; they reconnect.
CONNECTION_FAILURES = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,  # a RuntimeError, not an AMQPError
    aio_pika.exceptions.AMQPException,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True)
class Topology:
    events: AbstractExchange
    dead: AbstractExchange
    cdr: AbstractQueue


async def declare_topology(channel: AbstractChannel, name: str) -> Topology:
    unrouted = await channel.declare_exchange(
        f"{name}.unrouted", aio_pika.ExchangeType.FANOUT, durable=True
    )
    unrouted_queue = await channel.declare_queue(f"{name}.unrouted", durable=True)
    await unrouted_queue.bind(unrouted)
    events = await channel.declare_exchange(
        name,
        aio_pika.ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": f"{name}.unrouted"},
    )
    dead = await channel.declare_exchange(
        f"{name}.dead", aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead_queue = await channel.declare_queue(f"{name}.dead", durable=True)
    await dead_queue.bind(dead)
    cdr = await declare_consumer_queue(channel, events, dead, f"{name}.cdr", ["#"])
    return Topology(events, dead, cdr)


async def ensure_topology(url: str, name: str) -> Topology:
    """Declare the topology on a connection of its own, closed afterwards: for the relay and
    the CDR consumer, which then speak AMQP through an AmqpLink. Only the names of what it
    returns are of use."""
    async with await aio_pika.connect(url, timeout=5) as connection:
        return await declare_topology(await connection.channel(), name)


async def declare_consumer_queue(
    channel: AbstractChannel,
    events: AbstractExchange,
    dead: AbstractExchange,
    name: str,
    binding_keys: list[str],
) -> AbstractQueue:
    """A durable queue bound to ``binding_keys``; what a consumer rejects goes to dead."""
    queue = await channel.declare_queue(
        name, durable=True, arguments={"x-dead-letter-exchange": dead.name}
    )
    for key in binding_keys:
        await queue.bind(events, routing_key=key)
    return queue
