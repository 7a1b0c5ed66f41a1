"""RedisRetryQueue against a real Redis (the session's private redis-server; keys unique per test)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import WatchError

from payment_application.errors import DependencyUnavailable
from payment_application.ports.publisher import EventHeaders
from payment_infrastructure.redis.retry_queue import RedisRetryQueue
from payment_infrastructure.redis.retry_settings import RetrySettings
from payment_infrastructure.serialization import envelope_to_bytes
from tests.fakes_retry import retry_envelope
from tests.fixtures.ports import wait_until
from tests.fixtures.redis import RedisServer

HOUR_MS = 3_600_000


def _settings() -> RetrySettings:
    tag = uuid.uuid4().hex[:10]
    return RetrySettings(
        queue_key=f"test:{tag}:payment_retry_queue",
        inflight_key=f"test:{tag}:payment_retry_inflight",
        payloads_key=f"test:{tag}:payment_retry_payloads",
    )


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def settings(redis: Redis) -> AsyncIterator[RetrySettings]:
    chosen = _settings()
    yield chosen
    await redis.delete(chosen.queue_key, chosen.inflight_key, chosen.payloads_key)


@pytest.fixture
def queue(redis: Redis, settings: RetrySettings) -> RedisRetryQueue:
    return RedisRetryQueue.from_settings(redis, settings)


async def _redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_due_item_is_claimed_with_its_stored_envelope_and_ack_forgets_it(
    queue: RedisRetryQueue, redis: Redis, settings: RetrySettings
) -> None:
    envelope = retry_envelope(7001, 2)

    assert await queue.schedule(envelope, delay_ms=0) is True
    [claimed] = await queue.claim_due(10)

    assert claimed.member == "7001:2"
    assert claimed.message.topic == "payment_order_psp_call_requested_topic"
    assert claimed.message.key == "7001"
    assert claimed.message.value == envelope_to_bytes(envelope)
    assert claimed.message.headers == EventHeaders.of(envelope)
    assert await queue.sizes() == (0, 1)

    await queue.ack([claimed.member])

    assert await queue.sizes() == (0, 0)
    assert await redis.hexists(settings.payloads_key, "7001:2") == 0
    assert await queue.claim_due(10) == []


async def test_due_time_is_redis_time_plus_the_delay(
    queue: RedisRetryQueue, redis: Redis, settings: RetrySettings
) -> None:
    before = await _redis_ms(redis)
    await queue.schedule(retry_envelope(7002, 1), delay_ms=4_000)
    after = await _redis_ms(redis)

    score = await redis.zscore(settings.queue_key, "7002:1")

    assert score is not None
    assert before + 4_000 <= score <= after + 4_000


async def test_items_not_yet_due_are_neither_claimed_nor_touched(
    queue: RedisRetryQueue, redis: Redis, redis_server: RedisServer, settings: RetrySettings
) -> None:
    await queue.schedule(retry_envelope(7003, 1), delay_ms=HOUR_MS)
    score_before = await redis.zscore(settings.queue_key, "7003:1")
    watcher = Redis.from_url(redis_server.url)
    try:
        async with watcher.pipeline(transaction=True) as pipe:
            # WATCH fails the EXEC below if anything writes any of the keys meanwhile (the original popped and
            # re-added not-due items on every tick, which would trip it).
            await pipe.watch(settings.queue_key, settings.inflight_key, settings.payloads_key)
            claimed = await queue.claim_due(100)
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.ping()
            await pipe.execute()
    finally:
        await watcher.aclose()

    assert claimed == []
    assert await redis.zscore(settings.queue_key, "7003:1") == score_before
    assert await queue.sizes() == (1, 0)


async def test_the_watch_probe_does_detect_a_claim_that_writes(
    queue: RedisRetryQueue, redis_server: RedisServer, settings: RetrySettings
) -> None:
    """Guards the previous test: the same probe fails when the claim does move an item."""
    await queue.schedule(retry_envelope(7004, 1), delay_ms=0)
    watcher = Redis.from_url(redis_server.url)
    try:
        async with watcher.pipeline(transaction=True) as pipe:
            await pipe.watch(settings.queue_key, settings.inflight_key, settings.payloads_key)
            assert len(await queue.claim_due(100)) == 1
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.ping()
            with pytest.raises(WatchError):
                await pipe.execute()
    finally:
        await watcher.aclose()


async def test_a_duplicate_schedule_collapses_and_keeps_the_first_due_time_and_payload(
    queue: RedisRetryQueue, redis: Redis, settings: RetrySettings
) -> None:
    first = retry_envelope(7005, 1, trace_id="first")
    again = retry_envelope(7005, 1, trace_id="second")

    assert await queue.schedule(first, delay_ms=HOUR_MS) is True
    score = await redis.zscore(settings.queue_key, "7005:1")
    assert await queue.schedule(again, delay_ms=2 * HOUR_MS) is False
    assert await queue.schedule(again, delay_ms=0) is False

    assert await redis.zscore(settings.queue_key, "7005:1") == score
    assert await redis.hget(settings.payloads_key, "7005:1") == envelope_to_bytes(first)
    assert await queue.sizes() == (1, 0)
    assert await queue.schedule(retry_envelope(7005, 2), delay_ms=HOUR_MS) is True
    assert await queue.sizes() == (2, 0)


async def test_a_member_in_flight_is_not_queued_again_by_a_duplicate_schedule(queue: RedisRetryQueue) -> None:
    envelope = retry_envelope(7006, 3)
    await queue.schedule(envelope, delay_ms=0)
    [claimed] = await queue.claim_due(10)

    assert await queue.schedule(envelope, delay_ms=0) is False

    assert await queue.sizes() == (0, 1)
    assert await queue.claim_due(10) == []
    await queue.ack([claimed.member])
    assert await queue.sizes() == (0, 0)


async def test_due_items_are_claimed_earliest_first_up_to_the_limit(queue: RedisRetryQueue, redis: Redis) -> None:
    for order, delay in ((7011, 30), (7012, 10), (7013, 20)):
        await queue.schedule(retry_envelope(order, 1), delay_ms=delay)
    start = await _redis_ms(redis)

    async def all_due() -> bool:
        return await _redis_ms(redis) >= start + 40

    await wait_until(all_due, timeout=5, what="redis time to pass the last due time")

    first = await queue.claim_due(2)
    rest = await queue.claim_due(2)

    assert [c.member for c in first] == ["7012:1", "7013:1"]
    assert [c.member for c in rest] == ["7011:1"]


async def test_concurrent_claimers_never_receive_the_same_member(
    queue: RedisRetryQueue, redis_server: RedisServer, settings: RetrySettings
) -> None:
    for order in range(1_000):
        await queue.schedule(retry_envelope(100_000 + order, 1), delay_ms=0)
    clients = [Redis.from_url(redis_server.url) for _ in range(10)]
    claimers = [RedisRetryQueue.from_settings(client, settings) for client in clients]

    async def drain(claimer: RedisRetryQueue) -> list[str]:
        got: list[str] = []
        while batch := await claimer.claim_due(37):
            got.extend(c.member for c in batch)
        return got

    try:
        results = await asyncio.gather(*(drain(c) for c in claimers))
    finally:
        for client in clients:
            await client.aclose()

    every = [member for result in results for member in result]
    assert len(every) == 1_000
    assert len(set(every)) == 1_000
    assert sum(1 for result in results if result) > 1  # they really competed
    assert await queue.sizes() == (0, 1_000)


async def test_thousands_of_items_move_in_one_claim_and_one_ack(
    queue: RedisRetryQueue, redis: Redis, settings: RetrySettings
) -> None:
    for order in range(2_500):
        await queue.schedule(retry_envelope(200_000 + order, 1), delay_ms=0)

    claimed = await queue.claim_due(5_000)
    assert len(claimed) == 2_500
    assert {c.message.key for c in claimed} == {str(200_000 + o) for o in range(2_500)}
    await queue.ack([c.member for c in claimed])

    assert await queue.sizes() == (0, 0)
    assert await redis.hlen(settings.payloads_key) == 0


async def test_a_claim_that_is_never_acked_comes_back_after_the_visibility_timeout_and_only_then(
    queue: RedisRetryQueue,
) -> None:
    visibility_ms = 400
    await queue.schedule(retry_envelope(7020, 1), delay_ms=0)
    claimed_from = time.monotonic()
    [lost] = await queue.claim_due(10)  # ...and the dispatcher "crashes": no publish, no ack

    assert await queue.reclaim_expired(visibility_ms) == 0
    assert await queue.claim_due(10) == []
    assert await queue.sizes() == (0, 1)

    deadline = time.monotonic() + 10
    while (reclaimed := await queue.reclaim_expired(visibility_ms)) == 0:
        assert time.monotonic() < deadline, "the claim never expired"
        await asyncio.sleep(0.02)
    reclaimed_after = time.monotonic() - claimed_from

    assert reclaimed == 1
    assert reclaimed_after >= visibility_ms / 1000
    assert await queue.next_due_in_ms() == 0
    [again] = await queue.claim_due(10)
    assert again == lost


async def test_reclaim_moves_more_than_one_script_call_worth(queue: RedisRetryQueue) -> None:
    for order in range(2_300):
        await queue.schedule(retry_envelope(300_000 + order, 1), delay_ms=0)
    assert len(await queue.claim_due(5_000)) == 2_300

    total = 0
    deadline = time.monotonic() + 10
    while total < 2_300:
        assert time.monotonic() < deadline, f"reclaimed only {total}"
        total += await queue.reclaim_expired(0)

    assert total == 2_300
    assert await queue.sizes() == (2_300, 0)


async def test_ack_of_an_item_already_reclaimed_removes_the_queued_copy_and_payload(
    queue: RedisRetryQueue, redis: Redis, settings: RetrySettings
) -> None:
    await queue.schedule(retry_envelope(7030, 1), delay_ms=0)
    [slow] = await queue.claim_due(10)
    deadline = time.monotonic() + 5
    while await queue.reclaim_expired(0) == 0:
        assert time.monotonic() < deadline
    assert await queue.sizes() == (1, 0)

    await queue.ack([slow.member])  # the slow dispatcher did publish it after all

    assert await queue.sizes() == (0, 0)
    assert await redis.hexists(settings.payloads_key, slow.member) == 0


async def test_an_unreadable_payload_is_dropped_and_the_rest_of_the_batch_is_claimed(
    queue: RedisRetryQueue, redis: Redis, settings: RetrySettings
) -> None:
    await queue.schedule(retry_envelope(7040, 1), delay_ms=0)
    await redis.zadd(settings.queue_key, {"garbage:1": 0, "orphan:1": 0})
    await redis.hset(settings.payloads_key, "garbage:1", b"not json")

    claimed = await queue.claim_due(10)

    assert [c.member for c in claimed] == ["7040:1"]
    assert await queue.sizes() == (0, 1)
    assert await redis.hexists(settings.payloads_key, "garbage:1") == 0


async def test_next_due_reports_the_wait_for_the_earliest_item(queue: RedisRetryQueue) -> None:
    assert await queue.next_due_in_ms() is None

    await queue.schedule(retry_envelope(7050, 1), delay_ms=HOUR_MS)
    await queue.schedule(retry_envelope(7051, 1), delay_ms=60_000)
    wait = await queue.next_due_in_ms()
    assert wait is not None and 59_000 <= wait <= 60_000

    await queue.schedule(retry_envelope(7052, 1), delay_ms=0)
    assert await queue.next_due_in_ms() == 0


async def test_every_operation_reports_redis_down_as_dependency_unavailable(
    private_redis_server: RedisServer, settings: RetrySettings
) -> None:
    client = Redis.from_url(private_redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    queue = RedisRetryQueue.from_settings(client, settings)
    await queue.schedule(retry_envelope(7060, 1), delay_ms=0)
    private_redis_server.stop()
    try:
        calls = {
            "schedule": queue.schedule(retry_envelope(7061, 1), delay_ms=0),
            "claim_due": queue.claim_due(10),
            "ack": queue.ack(["7060:1"]),
            "reclaim_expired": queue.reclaim_expired(1_000),
            "next_due_in_ms": queue.next_due_in_ms(),
            "sizes": queue.sizes(),
        }
        for name, call in calls.items():
            with pytest.raises(DependencyUnavailable) as raised:
                await call
            assert raised.value.dependency == "redis", name
    finally:
        await client.aclose()
