"""RetryQueue: FakeRetryQueue and RedisRetryQueue (on the session's Redis, keys of its own per case) pass the same
cases. Due and claim times are the queue's clock: the fake's `now_ms`, Redis `TIME` for the real queue, which a
case lets pass by polling the server's clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

import pytest
from redis.asyncio import Redis

from payment_application.ports.retry_queue import ClaimedRetry, RetryQueue
from payment_domain.events import status_check_requested
from payment_infrastructure.redis.retry_queue import RedisRetryQueue
from payment_infrastructure.serialization import envelope_from_bytes
from tests.fakes_retry import FakeRetryQueue, message_of, retry_envelope
from tests.fixtures.ports import wait_until
from tests.fixtures.services import RedisEndpoint
from tests.integration.contracts.redis_backend import redis_backend_of

HOUR_MS = 3_600_000
SOON_MS = 300
"""Long enough that two round trips to Redis never take it, short enough to wait out."""
VISIBILITY_MS = 300


class RetryWorld(Protocol):
    queue: RetryQueue

    async def let_pass(self, ms: int) -> None:
        """Return once at least `ms` have passed on the queue's clock."""
        ...


class FakeWorld:
    def __init__(self) -> None:
        self.fake = FakeRetryQueue()
        self.queue: RetryQueue = self.fake

    async def let_pass(self, ms: int) -> None:
        self.fake.now_ms += ms


class RedisWorld:
    def __init__(self, redis: Redis, tag: str) -> None:
        self.redis = redis
        self.keys = [f"contract:{tag}:payment_retry_{name}" for name in ("queue", "inflight", "payloads")]
        queue_key, inflight_key, payloads_key = self.keys
        self.queue: RetryQueue = RedisRetryQueue(
            redis, queue_key=queue_key, inflight_key=inflight_key, payloads_key=payloads_key
        )

    async def _now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def let_pass(self, ms: int) -> None:
        target = await self._now_ms() + ms

        async def reached() -> bool:
            return await self._now_ms() >= target

        await wait_until(reached, timeout=10 + ms / 1000, interval=0.005, what=f"Redis TIME to move {ms} ms")


@pytest.fixture(params=["fake", "redis"])
def backend(request: pytest.FixtureRequest) -> RedisEndpoint | None:
    return redis_backend_of(request)


@pytest.fixture
async def world(backend: RedisEndpoint | None) -> AsyncIterator[RetryWorld]:
    if backend is None:
        yield FakeWorld()
        return
    redis = Redis.from_url(backend.url)
    real = RedisWorld(redis, uuid.uuid4().hex[:10])
    try:
        yield real
    finally:
        await redis.delete(*real.keys)
        await redis.aclose()


async def test_an_item_comes_due_only_after_its_delay_and_is_claimed_as_its_envelope_byte_for_byte(
    world: RetryWorld,
) -> None:
    later, soon = retry_envelope(8001, 1), retry_envelope(8002, 4)
    assert await world.queue.schedule(later, delay_ms=HOUR_MS) is True
    assert await world.queue.schedule(soon, delay_ms=SOON_MS) is True

    assert await world.queue.claim_due(10) == []
    await world.let_pass(SOON_MS)
    [claimed] = await world.queue.claim_due(10)

    assert claimed == ClaimedRetry(member="8002:4", message=message_of(soon))
    assert claimed.message.key == "8002"
    assert envelope_from_bytes(claimed.message.value) == soon
    assert await world.queue.sizes() == (1, 1)


async def test_scheduling_a_queued_attempt_again_keeps_its_due_time_and_payload(world: RetryWorld) -> None:
    first = retry_envelope(8010, 1, trace_id="first")
    again = retry_envelope(8010, 1, trace_id="again")
    assert await world.queue.schedule(first, delay_ms=SOON_MS) is True

    assert await world.queue.schedule(again, delay_ms=0) is False  # not pulled forward...
    assert await world.queue.claim_due(10) == []
    assert await world.queue.schedule(again, delay_ms=HOUR_MS) is False  # ...nor pushed back
    assert await world.queue.sizes() == (1, 0)
    await world.let_pass(SOON_MS)
    [claimed] = await world.queue.claim_due(10)

    assert claimed.message == message_of(first)
    assert await world.queue.schedule(retry_envelope(8010, 2), delay_ms=HOUR_MS) is True  # the next attempt
    assert await world.queue.sizes() == (1, 1)


async def test_an_attempt_in_flight_is_not_queued_again_and_once_acked_it_may_be(world: RetryWorld) -> None:
    envelope = retry_envelope(8020, 3)
    await world.queue.schedule(envelope, delay_ms=0)
    [claimed] = await world.queue.claim_due(10)

    assert await world.queue.schedule(envelope, delay_ms=0) is False
    assert await world.queue.sizes() == (0, 1)
    assert await world.queue.claim_due(10) == []

    await world.queue.ack([claimed.member])
    assert await world.queue.sizes() == (0, 0)
    assert await world.queue.schedule(envelope, delay_ms=0) is True


async def test_due_items_come_out_earliest_first_up_to_the_limit(world: RetryWorld) -> None:
    for order, delay in ((8031, 90), (8032, 30), (8033, 60)):
        await world.queue.schedule(retry_envelope(order, 1), delay_ms=delay)
    await world.let_pass(100)

    first = await world.queue.claim_due(2)
    rest = await world.queue.claim_due(2)

    assert [c.member for c in first] == ["8032:1", "8033:1"]
    assert [c.member for c in rest] == ["8031:1"]
    assert await world.queue.claim_due(2) == []


async def test_an_item_claimed_and_never_acked_comes_back_after_the_visibility_timeout_and_only_then(
    world: RetryWorld,
) -> None:
    await world.queue.schedule(retry_envelope(8040, 2), delay_ms=0)
    [lost] = await world.queue.claim_due(10)  # ...and the dispatcher dies: no publish, no ack

    assert await world.queue.reclaim_expired(VISIBILITY_MS) == 0
    assert await world.queue.claim_due(10) == []
    assert await world.queue.sizes() == (0, 1)
    await world.let_pass(VISIBILITY_MS + 1)
    assert await world.queue.reclaim_expired(HOUR_MS) == 0

    assert await world.queue.reclaim_expired(VISIBILITY_MS) == 1
    assert await world.queue.sizes() == (1, 0)
    assert await world.queue.next_due_in_ms() == 0
    assert await world.queue.claim_due(10) == [lost]


async def test_ack_forgets_an_item_wherever_it_is(world: RetryWorld) -> None:
    for order in (8051, 8052, 8053):
        await world.queue.schedule(retry_envelope(order, 1), delay_ms=0)
    [in_flight, reclaimed] = await world.queue.claim_due(2)
    await world.let_pass(VISIBILITY_MS + 1)
    await world.queue.schedule(retry_envelope(8054, 1), delay_ms=HOUR_MS)
    await world.queue.ack([in_flight.member])
    assert await world.queue.reclaim_expired(VISIBILITY_MS) == 1  # `reclaimed` is queued again
    assert await world.queue.sizes() == (3, 0)

    await world.queue.ack([reclaimed.member, "8053:1", "8054:1", "9999:1"])  # a slow publisher, queued, unknown

    assert await world.queue.sizes() == (0, 0)
    assert await world.queue.next_due_in_ms() is None
    assert await world.queue.claim_due(10) == []
    assert await world.queue.reclaim_expired(0) == 0


async def test_next_due_is_the_wait_for_the_earliest_queued_item(world: RetryWorld) -> None:
    assert await world.queue.next_due_in_ms() is None

    await world.queue.schedule(retry_envelope(8061, 1), delay_ms=HOUR_MS)
    wait = await world.queue.next_due_in_ms()
    assert wait is not None and HOUR_MS - 5_000 <= wait <= HOUR_MS
    await world.queue.schedule(retry_envelope(8062, 1), delay_ms=60_000)
    wait = await world.queue.next_due_in_ms()
    assert wait is not None and 55_000 <= wait <= 60_000
    await world.queue.schedule(retry_envelope(8063, 1), delay_ms=0)
    assert await world.queue.next_due_in_ms() == 0

    await world.queue.claim_due(10)  # in flight items are not waited for
    wait = await world.queue.next_due_in_ms()
    assert wait is not None and 55_000 <= wait <= 60_000


async def test_concurrent_claims_never_hand_out_one_item_twice(world: RetryWorld) -> None:
    for order in range(40):
        await world.queue.schedule(retry_envelope(81_000 + order, 1), delay_ms=0)

    async def drain() -> list[str]:
        got: list[str] = []
        while batch := await world.queue.claim_due(7):
            got.extend(c.member for c in batch)
        return got

    results = await asyncio.gather(*(drain() for _ in range(6)))

    every = [member for result in results for member in result]
    assert sorted(every) == sorted(f"{81_000 + order}:1" for order in range(40))
    assert await world.queue.sizes() == (0, 40)


async def test_invalid_arguments_are_refused(world: RetryWorld) -> None:
    envelope = retry_envelope(8070, 1)
    order = envelope.payload.order
    now = envelope.timestamp
    not_a_call = status_check_requested(order, attempt=1, check_number=1, trace_id="t", parent_event_id="", now=now)

    with pytest.raises(ValueError):
        await world.queue.schedule(envelope, delay_ms=-1)
    with pytest.raises(ValueError):
        await world.queue.schedule(not_a_call, delay_ms=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await world.queue.claim_due(0)
    with pytest.raises(ValueError):
        await world.queue.reclaim_expired(-1)
    assert await world.queue.sizes() == (0, 0)
