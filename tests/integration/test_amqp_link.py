"""The lean AMQP link against the real RabbitMQ: what the relay and the consumers rely on."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aio_pika
import pytest
from pamqp.commands import Basic

from softswitch.events.amqp import AmqpLink, AmqpLinkError, Delivery, OutgoingMessage
from softswitch.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def queue(host_settings: Settings) -> AsyncIterator[str]:
    """A durable queue of this test's own, deleted afterwards."""
    name = f"softswitch.test-link-{secrets.token_hex(4)}"
    async with await aio_pika.connect(host_settings.amqp.url.get_secret_value()) as connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)
        yield name
        await channel.queue_delete(name)


async def take(link: AmqpLink, count: int) -> list[Delivery]:
    taken: list[Delivery] = []
    while len(taken) < count:
        batch = await link.deliveries(limit=count, timeout=5)
        assert batch, f"only {len(taken)} of {count} deliveries arrived"
        taken += batch
    return taken


def message(queue: str, number: int, body: bytes) -> OutgoingMessage:
    return OutgoingMessage(
        queue,
        body,
        Basic.Properties(
            message_id=f"m-{number}",
            message_type="call.ringing",
            delivery_mode=2,
            headers={"x-outbox-id": number, "x-note": "тест"},
        ),
    )


async def test_confirmed_batches_arrive_whole_in_order(host_settings: Settings, queue: str) -> None:
    url = host_settings.amqp.url.get_secret_value()
    # Bigger than a frame: the body is split into several body frames and joined again.
    big = bytes(range(256)) * 2000
    bodies = [f'{{"n": {n}}}'.encode() for n in range(500)] + [big, b""]
    async with (
        await AmqpLink.connect(url, confirms=True) as publisher,
        await AmqpLink.connect(url) as consumer,
    ):
        first = publisher.publish("", [message(queue, n, b) for n, b in enumerate(bodies[:250])])
        second = publisher.publish(
            "", [message(queue, n + 250, b) for n, b in enumerate(bodies[250:])]
        )
        await first
        await second
        await consumer.consume(queue, prefetch=len(bodies))
        got = await take(consumer, len(bodies))
        consumer.ack(got[-1].delivery_tag, multiple=True)

    assert [d.body for d in got] == bodies
    assert [d.properties.message_id for d in got] == [f"m-{n}" for n in range(len(bodies))]
    assert got[3].properties.headers == {"x-outbox-id": 3, "x-note": "тест"}
    assert {d.routing_key for d in got} == {queue}
    assert not any(d.redelivered for d in got)


async def test_unacknowledged_deliveries_come_back_redelivered(
    host_settings: Settings, queue: str
) -> None:
    url = host_settings.amqp.url.get_secret_value()
    async with await AmqpLink.connect(url, confirms=True) as publisher:
        await publisher.publish("", [message(queue, n, b"x") for n in range(10)])
    async with await AmqpLink.connect(url) as consumer:
        await consumer.consume(queue, prefetch=100)
        got = await take(consumer, 10)
        consumer.ack(got[3].delivery_tag, multiple=True)  # 0..3 done, 4..9 not
    async with await AmqpLink.connect(url) as consumer:
        await consumer.consume(queue, prefetch=100)
        again = await take(consumer, 6)
        consumer.ack(again[-1].delivery_tag, multiple=True)
    assert [d.properties.message_id for d in again] == [f"m-{n}" for n in range(4, 10)]
    assert all(d.redelivered for d in again)


async def test_a_refused_publish_fails_its_batch_and_the_link(host_settings: Settings) -> None:
    url = host_settings.amqp.url.get_secret_value()
    async with await AmqpLink.connect(url, confirms=True) as link:
        confirmed = link.publish("softswitch.no-such-exchange", [message("k", 1, b"x")])
        with pytest.raises(AmqpLinkError, match="404"):
            await confirmed
        assert link.is_closed
        with pytest.raises(AmqpLinkError):
            link.publish("", [message("k", 2, b"x")])


async def test_a_deleted_queue_ends_the_consumer(host_settings: Settings, queue: str) -> None:
    url = host_settings.amqp.url.get_secret_value()
    async with await AmqpLink.connect(url) as consumer:
        await consumer.consume(queue, prefetch=10)
        async with await aio_pika.connect(url) as connection:
            await (await connection.channel()).queue_delete(queue)
        with pytest.raises(AmqpLinkError, match="cancelled"):
            await consumer.deliveries(limit=10, timeout=5)


async def test_wrong_credentials_are_refused(host_settings: Settings) -> None:
    with pytest.raises((AmqpLinkError, TimeoutError)):
        await AmqpLink.connect("amqp://guest:wrong@127.0.0.1:5672/", timeout=3)
