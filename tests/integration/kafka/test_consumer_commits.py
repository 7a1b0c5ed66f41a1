"""Offsets are committed only once a record is done: a crash redelivers, a clean stop drains and commits."""

from __future__ import annotations

import asyncio

from payment_infrastructure.kafka.consumer import ConsumedRecord
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fixtures.broker import TopicReader, unique_topic
from tests.integration.kafka.consumer_support import (
    Recorder,
    committed_offsets,
    fast_settings,
    produce,
    running,
    wait_for_commits,
    wait_until,
)


async def test_a_record_whose_handler_never_returned_is_delivered_again_after_a_crash(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("crash"), partitions=1)
    group = unique_topic("group")
    bootstrap = kafka_settings.bootstrap_servers
    await produce(bootstrap, topic, [(0, "k", str(i).encode()) for i in range(3)])
    first = Recorder()
    never = asyncio.Event()

    async def stuck_on_offset_2(record: ConsumedRecord) -> None:
        if record.offset == 2:
            await never.wait()

    async with running(
        kafka_settings,
        fast_settings(),
        group_id=group,
        topics=[topic],
        handler=first.handler("c1", stuck_on_offset_2),
    ) as run:
        await wait_until(lambda: [p.offset for p in first.started] == [0, 1, 2], what="offset 2 in the handler")
        await wait_for_commits(bootstrap, group, topic, {0: 2})
        await run.kill()

    # The handler of offset 2 never returned: nothing past it was committed, even by the crash.
    assert await committed_offsets(bootstrap, group, topic, 1) == {0: 2}

    second = Recorder()
    async with running(
        kafka_settings,
        fast_settings(),
        group_id=group,
        topics=[topic],
        handler=second.handler("c2"),
        name="consumer-2",
    ):
        await wait_until(lambda: second.offsets(0) == [2], what="offset 2 delivered again")
    assert await committed_offsets(bootstrap, group, topic, 1) == {0: 3}


async def test_a_stop_lets_the_record_in_hand_finish_commits_it_and_a_restart_sees_nothing_again(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("drain"), partitions=2)
    group = unique_topic("group")
    bootstrap = kafka_settings.bootstrap_servers
    await produce(bootstrap, topic, [(p, f"k{p}", str(i).encode()) for p in (0, 1) for i in range(5)])
    first = Recorder()
    release = asyncio.Event()

    async def slow_last_record(record: ConsumedRecord) -> None:
        if record.partition == 0 and record.offset == 4:
            await release.wait()

    async with running(
        kafka_settings,
        fast_settings(drain_timeout_seconds=5.0),
        group_id=group,
        topics=[topic],
        handler=first.handler("c1", slow_last_record),
    ) as run:
        await wait_until(lambda: len(first.started) == 10, what="every record started")
        run.stop.set()  # what the SIGTERM handler does
        await wait_until(lambda: not run.consumer.healthy, what="the consumer stopping")
        release.set()  # offset 4 of partition 0 finishes while the consumer drains
        await asyncio.wait_for(run.task, 10)

    assert first.offsets(0) == [0, 1, 2, 3, 4]
    assert await committed_offsets(bootstrap, group, topic, 2) == {0: 5, 1: 5}

    # A restarted member starts after everything done: the first record it sees is a new one.
    await produce(bootstrap, topic, [(0, "k0", b"after-restart")])
    second = Recorder()
    async with running(
        kafka_settings,
        fast_settings(),
        group_id=group,
        topics=[topic],
        handler=second.handler("c2"),
        name="consumer-2",
    ):
        await wait_until(lambda: len(second.done) >= 1, what="the new record")
    assert [(p.partition, p.offset, p.value) for p in second.done] == [(0, 5, b"after-restart")]


async def test_a_handler_still_running_at_the_drain_timeout_is_cancelled_and_its_record_not_committed(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("drain_timeout"), partitions=1)
    group = unique_topic("group")
    bootstrap = kafka_settings.bootstrap_servers
    await produce(bootstrap, topic, [(0, "k", str(i).encode()) for i in range(3)])
    recorder = Recorder()
    cancelled = asyncio.Event()

    async def never_ends_on_offset_1(record: ConsumedRecord) -> None:
        if record.offset == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

    async with running(
        kafka_settings,
        fast_settings(drain_timeout_seconds=0.2),
        group_id=group,
        topics=[topic],
        handler=recorder.handler("c1", never_ends_on_offset_1),
    ) as run:
        await wait_until(lambda: [p.offset for p in recorder.started] == [0, 1], what="offset 1 in the handler")
        await run.shutdown()

    assert cancelled.is_set()
    assert await committed_offsets(bootstrap, group, topic, 1) == {0: 1}
