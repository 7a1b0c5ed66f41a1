"""EventPublisher: FakePublisher and KafkaEventPublisher (on the session's Apache Kafka, fresh topics per case) pass
the same cases. What the broker holds is read back after the publish returned: an acknowledged message is there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import pytest

from payment_application.ports.publisher import EventHeaders, EventPublisher, OutboundMessage
from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fakes_outbox import FakePublisher
from tests.fixtures.broker import ConsumedMessage, TopicReader, unique_topic

MAX_REQUEST = 65_536


def headers_for(key: str, n: int = 0) -> EventHeaders:
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"contract/{key}/{n}"))
    return EventHeaders(
        event_id=event_id,
        event_type="payment_order_created",
        trace_id=f"trace-{key}",
        parent_event_id=event_id,
        aggregate_id=key,
    )


def message(topic: str, key: str, n: int = 0) -> OutboundMessage:
    return OutboundMessage(topic, key, f'{{"key":"{key}","n":{n}}}'.encode(), headers_for(key, n))


class PublisherWorld(Protocol):
    publisher: EventPublisher

    async def topic(self) -> str:
        """A fresh topic nothing else writes to."""
        ...

    def undeliverable(self, message: OutboundMessage) -> OutboundMessage:
        """The message, changed so that this broker will not acknowledge it (its key and topic kept)."""
        ...

    async def delivered(self, topic: str) -> list[OutboundMessage]:
        """Every message the broker acknowledged on `topic`."""
        ...


class FakeWorld:
    def __init__(self) -> None:
        self.fake = FakePublisher()
        self.publisher: EventPublisher = self.fake

    async def topic(self) -> str:
        return unique_topic("contract")

    def undeliverable(self, message: OutboundMessage) -> OutboundMessage:
        self.fake.failing_keys.add(message.key)
        return message

    async def delivered(self, topic: str) -> list[OutboundMessage]:
        return [m for m in self.fake.published if m.topic == topic]


class KafkaWorld:
    def __init__(self, publisher: KafkaEventPublisher, reader: TopicReader) -> None:
        self.publisher: EventPublisher = publisher
        self._reader = reader

    async def topic(self) -> str:
        return await self._reader.create(unique_topic("contract"), partitions=3)

    def undeliverable(self, message: OutboundMessage) -> OutboundMessage:
        return OutboundMessage(message.topic, message.key, b"x" * (2 * MAX_REQUEST), message.headers)

    async def delivered(self, topic: str) -> list[OutboundMessage]:
        return [_outbound(m) for m in await self._reader.read_all(topic)]


def _outbound(consumed: ConsumedMessage) -> OutboundMessage:
    """Back from the wire: the header names are the original's."""
    h = {name: value.decode() for name, value in consumed.headers.items()}
    headers = EventHeaders(
        event_id=h["eventId"],
        event_type=h["eventType"],
        trace_id=h["traceId"],
        parent_event_id=h["parentEventId"],
        aggregate_id=h["aggregateId"],
    )
    assert consumed.key is not None
    return OutboundMessage(consumed.topic, consumed.key, consumed.value, headers)


@pytest.fixture(params=["fake", "kafka"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for the fake; the session broker's bootstrap servers (started only for the real publisher's cases)."""
    if request.param == "fake":
        return None
    bootstrap_servers: str = request.getfixturevalue("kafka_broker")
    return bootstrap_servers


@pytest.fixture
async def world(backend: str | None) -> AsyncIterator[PublisherWorld]:
    if backend is None:
        yield FakeWorld()
        return
    settings = KafkaSettings(
        bootstrap_servers=backend,
        linger_ms=1,
        request_timeout_ms=5_000,
        delivery_timeout_ms=5_000,
        max_request_size=MAX_REQUEST,
    )
    async with KafkaEventPublisher.from_settings(settings) as publisher:
        yield KafkaWorld(publisher, TopicReader(backend))


def _by_key(messages: Sequence[OutboundMessage]) -> dict[str, list[bytes]]:
    values: dict[str, list[bytes]] = {}
    for m in messages:
        values.setdefault(m.key, []).append(m.value)
    return values


async def test_a_published_message_is_on_the_broker_with_its_key_value_and_headers(world: PublisherWorld) -> None:
    topic = await world.topic()
    sent = message(topic, "123456")

    await world.publisher.publish(sent.topic, sent.key, sent.value, sent.headers)

    assert await world.delivered(topic) == [sent]


async def test_a_batch_answers_each_message_in_order_and_keeps_each_keys_order(world: PublisherWorld) -> None:
    topic = await world.topic()
    sent = [message(topic, key, n) for n in range(3) for key in ("501", "502", "503", "504")]

    outcomes = await world.publisher.publish_batch(sent)
    delivered = await world.delivered(topic)

    assert outcomes == [None] * len(sent)
    assert sorted(delivered, key=lambda m: m.value) == sorted(sent, key=lambda m: m.value)
    assert _by_key(delivered) == _by_key(sent)


async def test_a_batch_reaches_every_topic_it_names(world: PublisherWorld) -> None:
    first, second = await world.topic(), await world.topic()
    sent = [message(first, "601"), message(second, "602"), message(first, "603")]

    assert await world.publisher.publish_batch(sent) == [None, None, None]

    assert sorted(m.key for m in await world.delivered(first)) == ["601", "603"]
    assert [m.key for m in await world.delivered(second)] == ["602"]


async def test_a_message_not_acknowledged_is_reported_in_its_place_and_the_others_are_delivered(
    world: PublisherWorld,
) -> None:
    topic = await world.topic()
    good_before, good_after = message(topic, "701"), message(topic, "703")
    bad = world.undeliverable(message(topic, "702"))

    outcomes = await world.publisher.publish_batch([good_before, bad, good_after])

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], Exception)
    assert sorted(m.key for m in await world.delivered(topic)) == ["701", "703"]


async def test_publish_raises_when_the_message_is_not_acknowledged(world: PublisherWorld) -> None:
    topic = await world.topic()
    bad = world.undeliverable(message(topic, "801"))

    with pytest.raises(Exception):  # noqa: B017 - the port promises a raise, not which error
        await world.publisher.publish(bad.topic, bad.key, bad.value, bad.headers)

    assert await world.delivered(topic) == []


async def test_an_empty_batch_is_answered_with_no_outcomes(world: PublisherWorld) -> None:
    assert await world.publisher.publish_batch([]) == []
