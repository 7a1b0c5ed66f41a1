"""Liveness of a consumer: a poll loop that stops turning fails /health/live (only a restart frees it); a consumer
whose handlers are slow, with every partition paused, keeps polling and stays alive."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from payment_infrastructure.kafka.consumer import ConsumedRecord, ConsumerWedged, PartitionOrderedConsumer
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.observability.management import create_management_app
from services.payment_consumers.bootstrap import liveness, readiness
from tests.fixtures.broker import TopicReader, unique_topic
from tests.integration.kafka.consumer_support import Recorder, fast_settings, produce, running, wait_until

STALLED_AFTER_MS = 2_000
# A rebalance may hold the poll loop up to rebalance + poll timeouts; the stall bound must be above both.
SETTINGS: dict[str, Any] = {
    "rebalance_timeout_ms": 1_500,
    "drain_timeout_seconds": 1.0,
    "stalled_poll_timeout_ms": STALLED_AFTER_MS,
    "max_in_flight_per_partition": 2,
    "batch_size": 1,
}


def alive(consumer: PartitionOrderedConsumer) -> bool:
    try:
        consumer.check_alive()
    except ConsumerWedged:
        return False
    return True


async def live_status(consumer: PartitionOrderedConsumer) -> int:
    consumers = {"c": consumer}
    app = create_management_app(readiness(consumers), liveness=liveness(consumers))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mgmt") as mgmt:
        return (await mgmt.get("/health/live")).status_code


async def test_a_poll_loop_that_stops_turning_fails_liveness_after_the_bound(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("wedged"), partitions=1)
    recorder = Recorder()
    async with running(
        kafka_settings,
        fast_settings(**SETTINGS),
        group_id=unique_topic("group"),
        topics=[topic],
        handler=recorder.handler("c1"),
    ) as run:
        await wait_until(lambda: run.consumer.healthy, what="the consumer joining")
        assert alive(run.consumer) and await live_status(run.consumer) == 200

        # Wedge the loop: the next poll never returns (as a hung fetch or a callback that never ends would).
        polls_hung = asyncio.Event()

        async def hangs(*_args: object, **_kwargs: object) -> dict[Any, Any]:
            polls_hung.set()
            await asyncio.Event().wait()
            return {}

        run.consumer._consumer.getmany = hangs  # type: ignore[union-attr]
        await asyncio.wait_for(polls_hung.wait(), 5)
        hung_at = time.monotonic()
        assert alive(run.consumer), "a poll that has just started is not a stall"
        await wait_until(lambda: not alive(run.consumer), within=10, what="liveness to fail")
        assert time.monotonic() - hung_at >= STALLED_AFTER_MS / 1000 - 0.2
        assert await live_status(run.consumer) == 503
        with pytest.raises(ConsumerWedged, match="has not polled for"):
            run.consumer.check_alive()
        await run.shutdown()
        assert alive(run.consumer), "a stopped consumer is not wedged: its run ended, and with it the process"


async def test_a_consumer_with_every_partition_paused_behind_slow_handlers_stays_alive(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    topic = await topic_reader.create(unique_topic("paused"), partitions=1)
    await produce(kafka_settings.bootstrap_servers, topic, [(0, "k", str(i).encode()) for i in range(10)])
    gate = asyncio.Event()
    recorder = Recorder()

    async def slow(_record: ConsumedRecord) -> None:
        await gate.wait()

    async with running(
        kafka_settings,
        fast_settings(**SETTINGS),
        group_id=unique_topic("group"),
        topics=[topic],
        handler=recorder.handler("c1", slow),
    ) as run:
        await wait_until(lambda: len(recorder.started) == 1, what="the first record to start")
        started = time.monotonic()
        # Longer than the stall bound, while the handler holds the partition and the loop polls a paused one.
        while time.monotonic() - started < STALLED_AFTER_MS / 1000 * 1.5:
            assert alive(run.consumer)
            await asyncio.sleep(0.1)
        assert await live_status(run.consumer) == 200
        gate.set()
        await wait_until(lambda: len(recorder.done) == 10, what="every record")
