"""Handler failures: poison goes straight to the DLQ, transient failures retry in place, a DLQ outage blocks."""

from __future__ import annotations

from collections import Counter

from prometheus_client import REGISTRY

from payment_domain.topics import dlq_of
from payment_infrastructure.kafka.consumer import ConsumedRecord, PoisonMessage
from payment_infrastructure.kafka.dead_letters import DeadLetterPublisher
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fixtures.broker import TopicReader, unique_topic
from tests.integration.kafka.consumer_support import (
    RECOVERED_AT,
    Recorder,
    committed_offsets,
    dead_letter_publisher,
    fast_settings,
    produce,
    running,
    wait_for_commits,
    wait_until,
)

ENVELOPE_HEADERS = [
    ("eventId", b"0b6f8a52-3f1e-5c1a-9d0e-6a3b2c1d0e9f"),
    ("eventType", b"payment_order_created"),
    ("traceId", b"trace-1"),
    ("aggregateId", b"123456"),
]


async def _topic_with_dlq(reader: TopicReader, prefix: str, partitions: int) -> str:
    topic = await reader.create(unique_topic(prefix), partitions=partitions)
    await reader.create(dlq_of(topic), partitions=partitions)
    return topic


def _records_total(group: str, topic: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "kafka_consumer_records_total", {"group": group, "topic": topic, "result": result}
    )
    return value or 0.0


async def test_a_poison_message_goes_to_the_dlq_with_its_headers_and_the_next_record_is_handled(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await _topic_with_dlq(topic_reader, "poison", partitions=2)
    group = unique_topic("group")
    bootstrap = kafka_settings.bootstrap_servers
    await produce(
        bootstrap,
        topic,
        [(1, "order-7", b'{"ok": 1}'), (1, "order-7", b"not json"), (1, "order-7", b'{"ok": 2}')],
        headers=ENVELOPE_HEADERS,
    )
    recorder = Recorder()
    calls: Counter[int] = Counter()

    async def rejects_garbage(record: ConsumedRecord) -> None:
        calls[record.offset] += 1
        if record.value == b"not json":
            raise PoisonMessage("value is not a JSON envelope")

    async with running(
        kafka_settings,
        fast_settings(),
        group_id=group,
        topics=[topic],
        handler=recorder.handler("c1", rejects_garbage),
    ):
        await wait_until(lambda: recorder.offsets(1) == [0, 2], what="the records around the poison")
        await wait_for_commits(bootstrap, group, topic, {1: 3})

    assert calls == {0: 1, 1: 1, 2: 1}  # no retry for poison
    [letter] = await topic_reader.wait_for(dlq_of(topic), 1)
    assert (letter.partition, letter.key, letter.value) == (1, "order-7", b"not json")
    assert {name: letter.headers[name] for name, _ in ENVELOPE_HEADERS} == dict(ENVELOPE_HEADERS)
    assert letter.headers["x-error-class"] == b"payment_infrastructure.kafka.records.PoisonMessage"
    assert letter.headers["x-error-message"] == b"value is not a JSON envelope"
    assert letter.headers["x-original-topic"] == topic.encode()
    assert letter.headers["x-original-partition"] == b"1"
    assert letter.headers["x-original-offset"] == b"1"
    assert letter.headers["x-consumer-group"] == group.encode()
    assert letter.headers["x-attempts"] == b"1"
    assert letter.headers["x-recovered-at"] == RECOVERED_AT.isoformat().encode()
    assert b"PoisonMessage: value is not a JSON envelope" in letter.headers["x-error-stacktrace"]
    assert _records_total(group, topic, "dead_lettered") == 1
    assert _records_total(group, topic, "ok") == 2
    assert REGISTRY.get_sample_value("kafka_dlq_messages_total", {"topic": dlq_of(topic)}) == 1


async def test_a_handler_that_fails_twice_then_succeeds_is_retried_in_place_and_not_dead_lettered(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await _topic_with_dlq(topic_reader, "transient", partitions=1)
    group = unique_topic("group")
    await produce(kafka_settings.bootstrap_servers, topic, [(0, "k", b"flaky"), (0, "k", b"next")])
    recorder = Recorder()
    calls: Counter[int] = Counter()

    async def fails_twice(record: ConsumedRecord) -> None:
        calls[record.offset] += 1
        if record.offset == 0 and calls[0] <= 2:
            raise ConnectionError("database restarting")

    async with running(
        kafka_settings,
        fast_settings(in_place_retries=3),
        group_id=group,
        topics=[topic],
        handler=recorder.handler("c1", fails_twice),
    ):
        await wait_until(lambda: recorder.offsets(0) == [0, 1], what="both records handled")

    assert calls == {0: 3, 1: 1}
    assert await topic_reader.read_all(dlq_of(topic)) == []
    assert _records_total(group, topic, "retried") == 2
    assert _records_total(group, topic, "ok") == 2
    assert _records_total(group, topic, "dead_lettered") == 0


async def test_a_handler_that_always_fails_is_dead_lettered_after_the_in_place_retries(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await _topic_with_dlq(topic_reader, "broken", partitions=1)
    group = unique_topic("group")
    bootstrap = kafka_settings.bootstrap_servers
    await produce(bootstrap, topic, [(0, "k", b"doomed"), (0, "k", b"next")])
    recorder = Recorder()
    calls: Counter[int] = Counter()

    async def fails_on_first(record: ConsumedRecord) -> None:
        calls[record.offset] += 1
        if record.offset == 0:
            raise RuntimeError(f"attempt {calls[0]} failed")

    async with running(
        kafka_settings,
        fast_settings(in_place_retries=2),
        group_id=group,
        topics=[topic],
        handler=recorder.handler("c1", fails_on_first),
    ):
        await wait_until(lambda: recorder.offsets(0) == [1], what="the record after the failing one")
        await wait_for_commits(bootstrap, group, topic, {0: 2})

    assert calls == {0: 3, 1: 1}
    [letter] = await topic_reader.wait_for(dlq_of(topic), 1)
    assert (letter.partition, letter.value) == (0, b"doomed")
    assert letter.headers["x-error-class"] == b"RuntimeError"
    assert letter.headers["x-error-message"] == b"attempt 3 failed"
    assert letter.headers["x-attempts"] == b"3"
    assert _records_total(group, topic, "retried") == 2


class CountingDeadLetters:
    """A real publisher, counting its attempts (so the test can see the DLQ being retried)."""

    def __init__(self, publisher: DeadLetterPublisher) -> None:
        self.publisher = publisher
        self.attempts = 0

    async def publish(self, record: ConsumedRecord, error: BaseException, *, group_id: str, attempts: int) -> None:
        self.attempts += 1
        await self.publisher.publish(record, error, group_id=group_id, attempts=attempts)


async def test_when_the_dlq_cannot_take_a_record_the_partition_waits_and_nothing_past_it_is_committed(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await _topic_with_dlq(topic_reader, "dlq_down", partitions=1)
    group = unique_topic("group")
    bootstrap = kafka_settings.bootstrap_servers
    big_poison = b"x" * 4_000
    await produce(bootstrap, topic, [(0, "k", b"fine"), (0, "k", big_poison), (0, "k", b"after")])
    first = Recorder()

    async def poison_if_big(record: ConsumedRecord) -> None:
        if len(record.value) > 1_000:
            raise PoisonMessage("too big")

    # This publisher refuses anything over 2 KB: every dead-letter publish of the big record fails.
    refusing = CountingDeadLetters(dead_letter_publisher(kafka_settings.model_copy(update={"max_request_size": 2_048})))
    async with (
        refusing.publisher,
        running(
            kafka_settings,
            fast_settings(drain_timeout_seconds=0.2),
            group_id=group,
            topics=[topic],
            handler=first.handler("c1", poison_if_big),
            dead_letters=refusing,
        ) as run,
    ):
        await wait_until(lambda: refusing.attempts >= 3, what="several dead-letter attempts")
        assert first.offsets(0) == [0]  # the record after the poison waits: order is kept
        await wait_for_commits(bootstrap, group, topic, {0: 1})
        await run.shutdown()

    assert await committed_offsets(bootstrap, group, topic, 1) == {0: 1}

    # With a DLQ that works, the next member dead-letters the record and moves on.
    second = Recorder()
    async with running(
        kafka_settings,
        fast_settings(),
        group_id=group,
        topics=[topic],
        handler=second.handler("c2", poison_if_big),
        name="consumer-2",
    ):
        await wait_until(lambda: second.offsets(0) == [2], what="the record after the poison")
    [letter] = await topic_reader.wait_for(dlq_of(topic), 1)
    assert (letter.offset, letter.value, letter.headers["x-original-offset"]) == (0, big_poison, b"1")
