"""Topic creation and the publisher against Apache Kafka."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from payment_application.ports.publisher import EventHeaders, OutboundMessage
from payment_domain.topics import Topic
from payment_infrastructure.kafka.admin import create_topics, ensure_topics, topic_layout
from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fixtures.broker import KafkaFactory, TopicReader, unique_topic

DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs' config source for a topic's own setting

HEADERS = EventHeaders(
    event_id="0b6f8a52-3f1e-5c1a-9d0e-6a3b2c1d0e9f",
    event_type="payment_order_created",
    trace_id="trace-1",
    parent_event_id="0b6f8a52-3f1e-5c1a-9d0e-6a3b2c1d0e9f",
    aggregate_id="123456",
)


async def _partition_counts(bootstrap_servers: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described}


async def test_ensure_topics_creates_every_topic_and_its_dlq_once(kafka_factory: KafkaFactory) -> None:
    broker = await kafka_factory()  # the real topic names: a broker of its own
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=6)

    created = await ensure_topics(settings)
    created_again = await ensure_topics(settings)
    counts = {t: n for t, n in (await _partition_counts(broker.bootstrap_servers)).items() if not t.startswith("__")}

    expected = {t.value for t in Topic} | {t.dlq for t in Topic}
    assert set(created) == expected
    assert created_again == []
    assert counts == topic_layout(settings)
    assert counts[Topic.PAYMENT_ORDER_CREATED.value] == 6
    assert counts[Topic.PAYMENT_ORDER_CREATED.dlq] == 6
    assert counts[Topic.STATUS_CHECK_SCHEDULER.value] == 1
    assert counts[Topic.STATUS_CHECK_SCHEDULER.dlq] == 1


async def test_publish_sends_key_value_and_the_original_headers(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic())
    async with KafkaEventPublisher.from_settings(kafka_settings) as publisher:
        await publisher.publish(topic, "123456", b'{"eventId":"x"}', HEADERS)

    [message] = await topic_reader.read_all(topic)

    assert message.key == "123456"
    assert message.value == b'{"eventId":"x"}'
    assert message.headers == {
        "eventId": HEADERS.event_id.encode(),
        "eventType": b"payment_order_created",
        "traceId": b"trace-1",
        "parentEventId": HEADERS.parent_event_id.encode(),
        "aggregateId": b"123456",
    }


async def test_one_key_always_lands_on_one_partition(kafka_settings: KafkaSettings, topic_reader: TopicReader) -> None:
    topic = await topic_reader.create(unique_topic(), partitions=8)
    messages = [OutboundMessage(topic, str(key), f"{key}-{n}".encode(), HEADERS) for n in range(3) for key in range(20)]
    async with KafkaEventPublisher.from_settings(kafka_settings) as publisher:
        outcomes = await publisher.publish_batch(messages)

    consumed = await topic_reader.read_all(topic)

    assert outcomes == [None] * len(messages)
    partitions_of: dict[str | None, set[int]] = {}
    for message in consumed:
        partitions_of.setdefault(message.key, set()).add(message.partition)
    assert len(consumed) == 60
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len({p for ps in partitions_of.values() for p in ps}) > 1
    for key in partitions_of:
        in_order = [m.value for m in consumed if m.key == key]
        assert in_order == [f"{key}-{n}".encode() for n in range(3)]


async def test_publish_batch_reports_each_failure_and_delivers_the_rest(
    kafka_broker: str, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic())
    settings = KafkaSettings(bootstrap_servers=kafka_broker, max_request_size=4_096)
    messages = [
        OutboundMessage(topic, "1", b"a", HEADERS),
        OutboundMessage(topic, "2", b"b" * 8_192, HEADERS),  # larger than a request may be
        OutboundMessage(topic, "3", b"c", HEADERS),
    ]
    async with KafkaEventPublisher.from_settings(settings) as publisher:
        outcomes = await publisher.publish_batch(messages)

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], MessageSizeTooLargeError)
    assert sorted(m.value for m in await topic_reader.read_all(topic)) == [b"a", b"c"]


async def test_publish_raises_when_no_broker_acknowledges(kafka_factory: KafkaFactory) -> None:
    broker = await kafka_factory()
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=500, delivery_timeout_ms=1_500
    )
    await create_topics(settings, {"down_topic": 1})
    publisher = KafkaEventPublisher.from_settings(settings)
    await publisher.start()
    try:
        await broker.stop()
        with pytest.raises(KafkaError):
            await publisher.publish("down_topic", "1", b"x", HEADERS)
    finally:
        await publisher.stop()


async def test_a_restarted_broker_keeps_its_topics_records_and_committed_offsets(
    kafka_factory: KafkaFactory, topic_reader: TopicReader
) -> None:
    broker = await kafka_factory()
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, linger_ms=1)
    await ensure_topics(settings)
    topic = Topic.PAYMENT_ORDER_CREATED.value
    async with KafkaEventPublisher.from_settings(settings) as publisher:
        await publisher.publish_batch([OutboundMessage(topic, str(k), f"v{k}".encode(), HEADERS) for k in range(6)])
    group = "restart-test-group"
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap_servers, group_id=group, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    try:
        first: list[bytes] = []
        next_offsets: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + 30
        while len(first) < 3:
            assert time.monotonic() < deadline, "the first three records never arrived"
            for tp, records in (await consumer.getmany(timeout_ms=500, max_records=3 - len(first))).items():
                first.extend(bytes(r.value or b"") for r in records)
                next_offsets[tp] = records[-1].offset + 1
        await consumer.commit(next_offsets)
    finally:
        await consumer.stop()

    await broker.stop()
    await broker.start()

    reader = TopicReader(broker.bootstrap_servers)
    everything = sorted(m.value for m in await reader.read_all(topic))
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    committed: dict[TopicPartition, int] = {}
    try:
        # The group coordinator loads the offsets topic after a start; until then the group reads as empty.
        deadline = time.monotonic() + 30
        while not committed and time.monotonic() < deadline:
            offsets = await admin.list_consumer_group_offsets(group)
            committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
            if not committed:
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    assert set(topic_layout(settings)) <= set(await _partition_counts(broker.bootstrap_servers))
    assert everything == sorted(f"v{k}".encode() for k in range(6))
    assert committed == next_offsets


async def test_topics_are_created_with_the_configured_min_insync_replicas_as_their_own_setting(
    kafka_settings: KafkaSettings,
) -> None:
    topic = unique_topic()
    await create_topics(kafka_settings, {topic: 1})

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_settings.bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    [(_code, _message, _type, _name, entries)] = response.resources
    [(_, value, _read_only, source, *_rest)] = [e for e in entries if e[0] == "min.insync.replicas"]

    assert value == str(kafka_settings.min_insync_replicas)
    assert source == DYNAMIC_TOPIC_CONFIG  # set on the topic, not inherited from whatever the broker defaults to


def test_min_insync_replicas_above_the_replication_factor_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match=r"min_insync_replicas \(2\) must not exceed kafka.replication_factor \(1\)"):
        KafkaSettings(replication_factor=1, min_insync_replicas=2)
