"""The retry dispatcher loop with a real Redis and Apache Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from payment_application.ports.publisher import EventHeaders, EventPublisher, OutboundMessage
from payment_application.ports.retry_queue import ClaimedRetry
from payment_domain.events import EventEnvelope
from payment_domain.topics import Topic
from payment_infrastructure.kafka.producer import KafkaEventPublisher
from payment_infrastructure.kafka.settings import KafkaSettings
from payment_infrastructure.redis.retry_queue import RedisRetryQueue
from payment_infrastructure.redis.retry_settings import RetrySettings
from payment_infrastructure.serialization import envelope_to_bytes
from services.payment_consumers.retry_dispatcher import run_retry_dispatcher
from tests.fakes_retry import retry_envelope
from tests.fixtures.broker import ConsumedMessage, TopicReader
from tests.fixtures.redis import RedisServer

TOPIC = Topic.PSP_CALL_REQUESTED.value
HOUR_MS = 3_600_000


class CountingQueue:
    """The real queue, counting the calls made to it (to prove the loop does not spin)."""

    def __init__(self, inner: RedisRetryQueue) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.claimed_at: list[float] = []

    async def schedule(self, envelope: EventEnvelope, *, delay_ms: int) -> bool:
        self.calls["schedule"] += 1
        return await self.inner.schedule(envelope, delay_ms=delay_ms)

    async def claim_due(self, limit: int) -> list[ClaimedRetry]:
        self.calls["claim_due"] += 1
        claimed = await self.inner.claim_due(limit)
        if claimed:
            self.claimed_at.append(time.monotonic())
        return claimed

    async def ack(self, members: Sequence[str]) -> None:
        self.calls["ack"] += 1
        await self.inner.ack(members)

    async def reclaim_expired(self, visibility_timeout_ms: int) -> int:
        self.calls["reclaim_expired"] += 1
        return await self.inner.reclaim_expired(visibility_timeout_ms)

    async def next_due_in_ms(self) -> int | None:
        self.calls["next_due_in_ms"] += 1
        return await self.inner.next_due_in_ms()

    async def sizes(self) -> tuple[int, int]:
        self.calls["sizes"] += 1
        return await self.inner.sizes()


class HangingPublisher:
    """A publisher whose batches never finish: the dispatcher holding it can only be killed mid-round."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def publish(self, topic: str, key: str, value: bytes, headers: EventHeaders) -> None:
        await self.publish_batch([OutboundMessage(topic, key, value, headers)])

    async def publish_batch(self, messages: Sequence[OutboundMessage]) -> list[Exception | None]:
        self.entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(redis: Redis) -> AsyncIterator[CountingQueue]:
    tag = uuid.uuid4().hex[:10]
    keys = [
        f"test:{tag}:payment_retry_queue",
        f"test:{tag}:payment_retry_inflight",
        f"test:{tag}:payment_retry_payloads",
    ]
    yield CountingQueue(RedisRetryQueue(redis, queue_key=keys[0], inflight_key=keys[1], payloads_key=keys[2]))
    await redis.delete(*keys)


@pytest.fixture
async def retry_topic(topic_reader: TopicReader) -> str:
    """The real topic (the envelope names it); tests tell their messages apart by unique paymentOrderIds."""
    return await topic_reader.create(TOPIC, partitions=4)


@pytest.fixture
async def publisher(kafka_settings: KafkaSettings) -> AsyncIterator[KafkaEventPublisher]:
    async with KafkaEventPublisher.from_settings(kafka_settings, client_id="retry-dispatcher-test") as started:
        yield started


def _orders(count: int) -> list[int]:
    base = random.randrange(10**9, 10**12)
    return [base + i for i in range(count)]


def _settings(**overrides: Any) -> RetrySettings:
    values: dict[str, Any] = {"batch_size": 50, "visibility_timeout_ms": 30_000, "max_idle_ms": 200}
    values.update(overrides)
    return RetrySettings(**values)


async def _ours(reader: TopicReader, keys: set[str], count: int, *, within: float = 15.0) -> list[ConsumedMessage]:
    """Poll the topic until `count` messages with our keys are there; fail at the deadline."""
    deadline = time.monotonic() + within
    while True:
        mine = [m for m in await reader.read_all(TOPIC) if m.key in keys]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        await asyncio.sleep(0.05)


class Dispatcher:
    """One running `run_retry_dispatcher` task; `stop()` asks it to stop and times how long it takes."""

    def __init__(self, queue: CountingQueue, publisher: EventPublisher, settings: RetrySettings) -> None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(run_retry_dispatcher(queue, publisher, settings, self.stop_event))

    async def stop(self) -> float:
        self.stop_event.set()
        started = time.monotonic()
        await asyncio.wait_for(self.task, timeout=5)
        return time.monotonic() - started


@contextlib.asynccontextmanager
async def running(
    queue: CountingQueue, publisher: EventPublisher, settings: RetrySettings
) -> AsyncIterator[Dispatcher]:
    """Never leaves a dispatcher running past its test, even when the test fails."""
    dispatcher = Dispatcher(queue, publisher, settings)
    try:
        yield dispatcher
    finally:
        if not dispatcher.task.done():
            dispatcher.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher.task


async def test_due_retries_reach_the_topic_keyed_by_payment_order_id_with_the_original_headers(
    queue: CountingQueue, publisher: KafkaEventPublisher, retry_topic: str, topic_reader: TopicReader
) -> None:
    envelopes = [retry_envelope(order, 2, trace_id=f"trace-{order}") for order in _orders(120)]
    for envelope in envelopes:
        await queue.schedule(envelope, delay_ms=0)
    processed_before = _processed()

    async with running(queue, publisher, _settings()) as dispatcher:
        # Acknowledged means published: read once the dispatcher is done, so the reader's own writes (its end
        # markers) never race the dispatcher's on one partition (the dev broker once lost records with several
        # producers on one partition: docs/operations.md).
        await _wait_for_sizes(queue, (0, 0))
        mine = await _ours(topic_reader, {e.aggregate_id for e in envelopes}, len(envelopes))
        await dispatcher.stop()

    by_key = {m.key: m for m in mine}
    assert len(mine) == len(envelopes) == len(by_key)
    for envelope in envelopes:
        message = by_key[envelope.aggregate_id]
        assert message.value == envelope_to_bytes(envelope)
        assert message.headers == {
            "eventId": envelope.event_id.encode(),
            "eventType": b"payment_order_psp_call_requested",
            "traceId": envelope.trace_id.encode(),
            "parentEventId": envelope.parent_event_id.encode(),
            "aggregateId": envelope.aggregate_id.encode(),
        }
    assert _processed() - processed_before == len(envelopes)


async def test_retries_claimed_by_a_dispatcher_that_died_before_publishing_are_published_after_the_visibility_timeout(
    queue: CountingQueue, publisher: KafkaEventPublisher, retry_topic: str, topic_reader: TopicReader
) -> None:
    visibility_ms = 1_500
    envelopes = [retry_envelope(order, 1) for order in _orders(30)]
    for envelope in envelopes:
        await queue.schedule(envelope, delay_ms=0)
    keys = {e.aggregate_id for e in envelopes}

    hanging = HangingPublisher()
    async with running(queue, hanging, _settings(visibility_timeout_ms=visibility_ms)) as doomed:
        await asyncio.wait_for(hanging.entered.wait(), timeout=5)
        claimed_at = queue.claimed_at[-1]
        doomed.task.cancel()  # the pod dies between claim and publish
        with pytest.raises(asyncio.CancelledError):
            await doomed.task
    assert await queue.inner.sizes() == (0, len(envelopes))

    settings = _settings(visibility_timeout_ms=visibility_ms, reclaim_interval_ms=50)
    async with running(queue, publisher, settings) as survivor:
        # Well before the timeout the survivor (reclaiming every 50 ms) must leave them alone: for all it knows
        # they are still being published.
        await asyncio.sleep(max(0.0, claimed_at + visibility_ms / 1000 / 2 - time.monotonic()))
        assert await queue.inner.sizes() == (0, len(envelopes))
        assert await _ours(topic_reader, keys, len(envelopes), within=0) == []

        mine = await _ours(topic_reader, keys, len(envelopes))
        published_after = time.monotonic() - claimed_at
        await _wait_for_sizes(queue, (0, 0))
        await survivor.stop()

    assert len(mine) == len(keys)
    assert {m.key for m in mine} == keys
    assert published_after >= visibility_ms / 1000
    assert queue.calls["reclaim_expired"] >= 2


async def test_the_loop_sleeps_until_the_next_due_time_instead_of_polling(
    queue: CountingQueue, publisher: KafkaEventPublisher, retry_topic: str, topic_reader: TopicReader
) -> None:
    [order] = _orders(1)
    await queue.schedule(retry_envelope(order, 1), delay_ms=1_200)
    scheduled_at = time.monotonic()

    async with running(queue, publisher, _settings(max_idle_ms=10_000, reclaim_interval_ms=60_000)) as dispatcher:
        [message] = await _ours(topic_reader, {str(order)}, 1)
        published_after = queue.claimed_at[0] - scheduled_at
        claims = queue.calls["claim_due"]
        stop_took = await dispatcher.stop()

    assert message.key == str(order)
    assert 1.15 <= published_after < 3.0  # woke at the due time: not at max_idle (10 s), not early
    assert claims <= 3  # one look at start, one at the due time (plus at most one for ms rounding)
    assert stop_took < 1.0  # an idle sleep is cut short by stop


async def test_an_idle_dispatcher_makes_few_redis_calls_and_notices_a_new_earlier_item_within_max_idle(
    queue: CountingQueue, publisher: KafkaEventPublisher, retry_topic: str, topic_reader: TopicReader
) -> None:
    await queue.schedule(retry_envelope(_orders(1)[0], 1), delay_ms=HOUR_MS)

    async with running(queue, publisher, _settings(max_idle_ms=250, reclaim_interval_ms=60_000)) as dispatcher:
        await _wait_until(lambda: queue.calls["claim_due"] >= 1)
        idle_from = sum(queue.calls.values())
        await asyncio.sleep(1.0)  # the idle window being measured, not a wait for a condition
        idle_calls = sum(queue.calls.values()) - idle_from

        [order] = _orders(1)
        await queue.inner.schedule(retry_envelope(order, 1), delay_ms=0)
        scheduled_at = time.monotonic()
        await _ours(topic_reader, {str(order)}, 1)
        noticed_after = queue.claimed_at[0] - scheduled_at
        await dispatcher.stop()

    # One claim and one next-due look per max_idle (250 ms) over 1 s; a polling loop would make thousands.
    assert 4 <= idle_calls <= 12
    assert noticed_after < 0.25 + 0.2


async def test_a_broker_outage_leaves_retries_in_flight_and_they_are_published_once_it_is_back(
    queue: CountingQueue, kafka_broker: str, retry_topic: str, topic_reader: TopicReader
) -> None:
    envelopes = [retry_envelope(order, 4) for order in _orders(5)]
    for envelope in envelopes:
        await queue.schedule(envelope, delay_ms=0)
    keys = {e.aggregate_id for e in envelopes}
    failed_before = _failed()

    broken = KafkaEventPublisher.from_settings(
        KafkaSettings(bootstrap_servers=kafka_broker, request_timeout_ms=300, delivery_timeout_ms=300),
        client_id="retry-broken",
    )
    await broken.start()
    await broken.stop()  # a stopped producer rejects every send, like a broker outage
    async with running(queue, broken, _settings(visibility_timeout_ms=800)) as dispatcher:
        await _wait_until(lambda: _failed() >= failed_before + len(envelopes))
        await dispatcher.stop()
    assert await queue.inner.sizes() == (0, len(envelopes))

    healed = KafkaEventPublisher.from_settings(KafkaSettings(bootstrap_servers=kafka_broker, linger_ms=1))
    async with healed, running(queue, healed, _settings(visibility_timeout_ms=800, reclaim_interval_ms=50)) as again:
        mine = await _ours(topic_reader, keys, len(envelopes))
        await _wait_for_sizes(queue, (0, 0))
        await again.stop()

    assert len(mine) == len(keys)
    assert {m.key for m in mine} == keys


async def _wait_for_sizes(queue: CountingQueue, expected: tuple[int, int], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (sizes := await queue.inner.sizes()) != expected:
        assert time.monotonic() < deadline, f"sizes stayed {sizes}, expected {expected}"
        await asyncio.sleep(0.02)


async def _wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition did not hold in time"
        await asyncio.sleep(0.01)


def _processed() -> float:
    return REGISTRY.get_sample_value("redis_retry_events_total", {"result": "processed", "topic": TOPIC}) or 0.0


def _failed() -> float:
    return REGISTRY.get_sample_value("redis_retry_events_total", {"result": "failed", "topic": TOPIC}) or 0.0
