"""Per-partition order, concurrency across partitions, bounded in-flight work, lag and health."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from payment_infrastructure.kafka.consumer import ConsumedRecord, ConsumerNotReady, PartitionOrderedConsumer
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fixtures.broker import TopicReader, unique_topic
from tests.integration.kafka.consumer_support import (
    Recorder,
    committed_offsets,
    fast_settings,
    produce,
    running,
    wait_until,
)


async def test_records_of_one_partition_are_handled_in_offset_order_while_partitions_run_concurrently(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("order"), partitions=2)
    await produce(
        kafka_settings.bootstrap_servers, topic, [(p, f"k{p}", f"{p}-{i}".encode()) for p in (0, 1) for i in range(20)]
    )
    slow_partition_released = asyncio.Event()
    recorder = Recorder()

    async def slow_on_partition_0(record: ConsumedRecord) -> None:
        if record.partition == 0:
            await slow_partition_released.wait()

    async with running(
        kafka_settings,
        fast_settings(),
        group_id=unique_topic("group"),
        topics=[topic],
        handler=recorder.handler("c1", slow_on_partition_0),
    ):
        # Partition 1 finishes everything while partition 0 is stuck on its first record.
        await wait_until(lambda: len(recorder.offsets(1)) == 20, what="partition 1 handled")
        assert recorder.offsets(0) == []
        assert [p.offset for p in recorder.started if p.partition == 0] == [0]

        slow_partition_released.set()
        await wait_until(lambda: len(recorder.offsets(0)) == 20, what="partition 0 handled")

    assert recorder.offsets(0) == list(range(20))
    assert recorder.offsets(1) == list(range(20))
    assert recorder.values(0) == [f"0-{i}".encode() for i in range(20)]


async def test_in_flight_records_of_a_partition_never_exceed_the_bound_and_none_is_lost_or_repeated(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("bounded"), partitions=1)
    await produce(kafka_settings.bootstrap_servers, topic, [(0, "k", str(i).encode()) for i in range(60)])
    bound = 5
    gate = asyncio.Event()
    samples: list[int] = []
    recorder = Recorder()
    consumers: list[PartitionOrderedConsumer] = []

    def sample() -> None:
        samples.append(consumers[0].in_flight().get((topic, 0), 0))

    async def gated(record: ConsumedRecord) -> None:
        sample()
        await gate.wait()
        await asyncio.sleep(0)  # let the poll loop run between records, as real I/O would

    async def sample_continuously() -> None:
        while True:
            sample()
            await asyncio.sleep(0.001)

    async with running(
        kafka_settings,
        # One poll returns far more records than the bound: the rest must be fetched again later.
        fast_settings(max_in_flight_per_partition=bound, max_poll_records=200),
        group_id=unique_topic("group"),
        topics=[topic],
        handler=recorder.handler("c1", gated),
    ) as run:
        consumers.append(run.consumer)
        sampler = asyncio.create_task(sample_continuously())
        # The handler is stuck on the first record: the queue fills up to the bound and fetching pauses.
        await wait_until(lambda: run.consumer.in_flight().get((topic, 0)) == bound, what="a full queue")
        gate.set()
        await wait_until(lambda: len(recorder.done) == 60, what="all records handled")
        sampler.cancel()

    assert max(samples) == bound
    assert len(samples) > 60
    assert recorder.offsets(0) == list(range(60))


async def test_lag_is_the_highwater_minus_the_committed_offset_and_health_follows_the_run(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("lag"), partitions=1)
    group = unique_topic("group")
    await produce(kafka_settings.bootstrap_servers, topic, [(0, "k", str(i).encode()) for i in range(10)])
    gate = asyncio.Event()
    recorder = Recorder()

    async def gated(record: ConsumedRecord) -> None:
        await gate.wait()

    async with running(
        kafka_settings,
        fast_settings(),
        group_id=group,
        topics=[topic],
        handler=recorder.handler("c1", gated),
    ) as run:
        await wait_until(lambda: run.consumer.lag() == {topic: 10}, what="lag of 10")
        assert run.consumer.healthy

        gate.set()
        await wait_until(lambda: run.consumer.lag() == {topic: 0}, what="lag of 0")
        await wait_until(
            lambda: (
                REGISTRY.get_sample_value("kafka_consumer_member_lag", {"consumergroup": group, "topic": topic}) == 0.0
            ),
            what="the lag gauge",
        )
        assert await committed_offsets(kafka_settings.bootstrap_servers, group, topic, 1) == {0: 10}
        await run.consumer.check_ready()
        await run.shutdown()
        assert not run.consumer.healthy
        with pytest.raises(ConsumerNotReady):
            await run.consumer.check_ready()
        assert REGISTRY.get_sample_value("kafka_consumer_member_lag", {"consumergroup": group, "topic": topic}) is None
