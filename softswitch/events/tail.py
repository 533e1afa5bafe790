"""`softswitch events tail`: live events for people, on a private auto-deleted queue."""

from __future__ import annotations

import asyncio

import aio_pika
import typer

from softswitch.events.broker import declare_topology
from softswitch.events.models import MalformedEvent, parse_event
from softswitch.settings import AmqpSettings


async def tail(amqp: AmqpSettings, key: str, *, as_json: bool, stop: asyncio.Event) -> None:
    connection = await aio_pika.connect(amqp.url.get_secret_value(), timeout=5)
    async with connection:
        channel = await connection.channel()
        topology = await declare_topology(channel, amqp.exchange)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(topology.events, routing_key=key)

        async def show(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if as_json:
                typer.echo(message.body.decode(errors="replace"))
                return
            try:
                event = parse_event(message.body)
            except MalformedEvent as exc:
                typer.echo(f"{message.routing_key}  (malformed: {exc})")
                return
            details = event.model_dump(
                exclude={"type", "schema_version", "event_id", "occurred_at", "call_id"},
                exclude_none=True,
            )
            typer.echo(
                f"{event.occurred_at:%H:%M:%S.%f}"[:-3]
                + f"  {event.routing_key:<28} call={event.call_id or '-'}  {details}"
            )

        await queue.consume(show, no_ack=True)
        await stop.wait()
