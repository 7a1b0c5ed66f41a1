"""Helpers shared by the consumer runtime tests: a recording handler, a running consumer, offsets, polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from payment_infrastructure.kafka.consumer import ConsumedRecord, PartitionOrderedConsumer
from payment_infrastructure.kafka.consumer_settings import ConsumerSettings
from payment_infrastructure.kafka.dead_letters import DeadLetterPublisher, DeadLetterSink
from payment_infrastructure.kafka.settings import KafkaSettings
from tests.fakes import FakeClock

RECOVERED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def fast_settings(**overrides: Any) -> ConsumerSettings:
    """Short timeouts so rebalances and retries happen in well under a second."""
    values: dict[str, Any] = {
        "poll_timeout_ms": 100,
        "fetch_max_wait_ms": 20,
        "commit_interval_ms": 50,
        "session_timeout_ms": 1_500,
        "heartbeat_interval_ms": 100,
        "rebalance_timeout_ms": 8_000,
        "request_timeout_ms": 15_000,
        "in_place_retries": 3,
        "in_place_backoff_ms": 10,
        "in_place_backoff_max_ms": 40,
        "dead_letter_backoff_max_ms": 100,
        "drain_timeout_seconds": 3.0,
    }
    values.update(overrides)
    return ConsumerSettings(**values)


def dead_letter_publisher(kafka: KafkaSettings) -> DeadLetterPublisher:
    return DeadLetterPublisher.from_settings(kafka, clock=FakeClock(RECOVERED_AT))


@dataclass
class Processed:
    consumer: str
    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass
class Recorder:
    """Every handler call that returned, in completion order, plus every call started."""

    done: list[Processed] = field(default_factory=list)
    started: list[Processed] = field(default_factory=list)

    def handler(
        self, consumer: str, behaviour: Callable[[ConsumedRecord], Awaitable[None]] | None = None
    ) -> Callable[[ConsumedRecord], Awaitable[None]]:
        async def handle(record: ConsumedRecord) -> None:
            entry = Processed(consumer, record.topic, record.partition, record.offset, record.value)
            self.started.append(entry)
            if behaviour is not None:
                await behaviour(record)
            self.done.append(entry)

        return handle

    def offsets(self, partition: int, *, consumer: str | None = None) -> list[int]:
        return [p.offset for p in self.done if p.partition == partition and consumer in (None, p.consumer)]

    def values(self, partition: int) -> list[bytes]:
        return [p.value for p in self.done if p.partition == partition]


class RunningConsumer:
    def __init__(self, consumer: PartitionOrderedConsumer) -> None:
        self.consumer = consumer
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(consumer.run(self.stop))

    async def shutdown(self, within: float = 15.0) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, within)

    async def kill(self) -> None:
        """A crash: the task is cancelled, whatever it was doing."""
        self.task.cancel()
        await asyncio.wait({self.task})


@asynccontextmanager
async def running(
    kafka: KafkaSettings,
    settings: ConsumerSettings,
    *,
    group_id: str,
    topics: Sequence[str],
    handler: Callable[[ConsumedRecord], Awaitable[None]],
    dead_letters: DeadLetterSink | None = None,
    name: str = "consumer-1",
) -> AsyncIterator[RunningConsumer]:
    """A consumer running until the block ends; without `dead_letters`, a real DLQ publisher of its own."""
    async with contextlib.AsyncExitStack() as owned:
        if dead_letters is None:
            dead_letters = await owned.enter_async_context(dead_letter_publisher(kafka))
        consumer = PartitionOrderedConsumer(
            kafka, settings, group_id=group_id, topics=topics, handler=handler, dead_letters=dead_letters, name=name
        )
        run = RunningConsumer(consumer)
        try:
            yield run
        finally:
            if not run.task.done():
                await run.shutdown()
            elif not run.task.cancelled() and (error := run.task.exception()) is not None:
                raise error


async def wait_until(condition: Callable[[], bool], *, within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


async def produce(
    bootstrap_servers: str,
    topic: str,
    messages: Sequence[tuple[int, str | None, bytes]],
    *,
    headers: Sequence[tuple[str, bytes]] = (),
) -> None:
    """(partition, key, value) triples, each acknowledged before the next is sent (so offsets follow the list)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, request_timeout_ms=5_000)
    await producer.start()
    try:
        for partition, key, value in messages:
            await producer.send_and_wait(
                topic,
                value,
                key=None if key is None else key.encode(),
                partition=partition,
                headers=list(headers),
            )
    finally:
        await producer.stop()


async def committed_offsets(bootstrap_servers: str, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    """What the group committed, per partition (absent: nothing committed). Read with a member that never joins.

    Not the admin client's list_consumer_group_offsets: aiokafka cannot decode the dev broker's answer to it.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()
    return {p: offset for p, offset in offsets.items() if offset is not None}


async def wait_for_commits(
    bootstrap_servers: str, group_id: str, topic: str, expected: dict[int, int], *, within: float = 10.0
) -> None:
    partitions = max(expected) + 1
    deadline = time.monotonic() + within
    while (committed := await committed_offsets(bootstrap_servers, group_id, topic, partitions)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"committed {committed}, expected {expected} within {within}s")
        await asyncio.sleep(0.02)
