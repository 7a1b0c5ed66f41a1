"""A member joining the group takes partitions over: nothing lost, nothing handled again after a commit."""

from __future__ import annotations

import asyncio
from collections import Counter

from payment_infrastructure.kafka.consumer import ConsumedRecord
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fixtures.broker import TopicReader, unique_topic
from tests.integration.kafka.consumer_support import (
    Recorder,
    fast_settings,
    produce,
    running,
    wait_for_commits,
    wait_until,
)

PARTITIONS = 4
PER_PARTITION = 60


async def test_a_second_member_takes_over_partitions_without_losing_or_repeating_committed_records(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("rebalance"), partitions=PARTITIONS)
    group = unique_topic("group")
    bootstrap = kafka_settings.bootstrap_servers
    recorder = Recorder()
    settings = fast_settings(max_in_flight_per_partition=10)

    async def some_work(record: ConsumedRecord) -> None:
        await asyncio.sleep(0.002)  # the handler's own I/O; records keep flowing while the group rebalances

    async def produce_rounds(rounds: range) -> None:
        for i in rounds:
            await produce(bootstrap, topic, [(p, f"order-{p}", str(i).encode()) for p in range(PARTITIONS)])

    half = PER_PARTITION // 2
    async with running(
        kafka_settings,
        settings,
        group_id=group,
        topics=[topic],
        handler=recorder.handler("c1", some_work),
        name="consumer-1",
    ) as first:
        producer = asyncio.create_task(produce_rounds(range(half)))
        await wait_until(
            lambda: all(recorder.offsets(p) for p in range(PARTITIONS)), what="the first member busy on every partition"
        )
        async with running(
            kafka_settings,
            settings,
            group_id=group,
            topics=[topic],
            handler=recorder.handler("c2", some_work),
            name="consumer-2",
        ) as second:
            await wait_until(
                lambda: (
                    len(first.consumer.assigned_partitions()) == 2 and len(second.consumer.assigned_partitions()) == 2
                ),
                what="the partitions split between the members",
            )
            await producer
            await produce_rounds(range(half, PER_PARTITION))
            await wait_until(
                lambda: len({(p.partition, p.offset) for p in recorder.done}) == PARTITIONS * PER_PARTITION,
                what="every record handled",
            )
            await wait_for_commits(bootstrap, group, topic, dict.fromkeys(range(PARTITIONS), PER_PARTITION))
            taken_over = {partition for _, partition in second.consumer.assigned_partitions()}

    handled = Counter((p.partition, p.offset) for p in recorder.done)
    assert set(handled) == {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}
    # The first member committed everything it finished before giving its partitions away: no record twice.
    assert [key for key, times in handled.items() if times > 1] == []
    assert len(taken_over) == 2
    for partition in taken_over:
        handled_by_c1 = recorder.offsets(partition, consumer="c1")
        handled_by_c2 = recorder.offsets(partition, consumer="c2")
        assert handled_by_c1
        assert handled_by_c2
        # In order on each side, and the new owner starts exactly where the old one stopped.
        assert handled_by_c1 + handled_by_c2 == list(range(PER_PARTITION))
