"""An idle consumer's fetches wait long for the first byte, yet the first record after a quiet spell comes at once."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaProducer

from payment_infrastructure.kafka.consumer import ConsumedRecord
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fixtures.broker import TopicReader, unique_topic
from tests.integration.kafka.consumer_support import Recorder, fast_settings, running, wait_until

IDLE_WAIT_MS = 5_000


async def test_the_first_record_after_a_quiet_spell_arrives_long_before_the_idle_fetch_wait(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("pacing"), partitions=2)
    recorder = Recorder()
    delivered_at: list[float] = []

    async def note_time(record: ConsumedRecord) -> None:
        delivered_at.append(time.monotonic())

    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, request_timeout_ms=5_000)
    await producer.start()
    try:
        settings = fast_settings(fetch_max_wait_ms=20, fetch_min_bytes=16_384, idle_fetch_max_wait_ms=IDLE_WAIT_MS)
        async with running(
            kafka_settings,
            settings,
            group_id=unique_topic("group"),
            topics=[topic],
            handler=recorder.handler("c1", note_time),
        ) as run:
            await wait_until(run.consumer.fetching_idle, what="a poll that found nothing")
            # What the broker is asked for now: one byte, held up to the idle wait.
            fetcher = run.consumer._consumer._fetcher  # type: ignore[union-attr]
            assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, IDLE_WAIT_MS)

            for partition in (0, 1):
                sent_at = time.monotonic()
                await producer.send_and_wait(topic, b"first", key=b"k", partition=partition)
                await wait_until(lambda n=partition + 1: len(delivered_at) == n, what=f"the record on {partition}")
                # Held for 16 KiB, the fetch would have come back only after the idle wait.
                assert delivered_at[-1] - sent_at < IDLE_WAIT_MS / 1000 / 3
                await wait_until(run.consumer.fetching_idle, what="quiet again")
    finally:
        await producer.stop()
    assert [p.partition for p in recorder.done] == [0, 1]
