"""IdGenerator: FakeIdGenerator and RedisIdGenerator (on the session's Redis, a database of its own) pass the same
cases. Each case builds its generators on one shared store, as API processes share Redis, and decides what the
database holds (the floor a re-sync reads)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import pytest
from redis.asyncio import Redis

from payment_application.ports.ids import IdGenerator, IdNamespace
from payment_infrastructure.redis.id_generator import RedisIdGenerator
from tests.fakes import FakeIdGenerator
from tests.fixtures.services import RedisEndpoint
from tests.integration.contracts.redis_backend import redis_backend_of

BLOCK = 10
MARGIN = 25
ID_DB = 3
"""Not db 0, where the API tests' generators keep the same keys."""

ORDER = IdNamespace.PAYMENT_ORDER
PAYMENT = IdNamespace.PAYMENT


class IdWorld(Protocol):
    floor: dict[IdNamespace, int]
    """The highest id the database holds, per namespace (what a re-sync reads)."""

    def generator(self) -> IdGenerator:
        """A new generator (a new process) on the shared store."""
        ...

    async def lose_counters(self) -> None:
        """The store forgets every counter (a Redis restart without persistence)."""
        ...


class FakeWorld:
    def __init__(self) -> None:
        self.floor: dict[IdNamespace, int] = {}
        self._counters: dict[IdNamespace, int] = {}

    async def _floor_of(self, namespace: IdNamespace) -> int:
        return self.floor.get(namespace, 0)

    def generator(self) -> IdGenerator:
        return FakeIdGenerator(counters=self._counters, floor=self._floor_of, resync_jump=MARGIN)

    async def lose_counters(self) -> None:
        self._counters.clear()


class RedisWorld:
    def __init__(self, redis: Redis) -> None:
        self.floor: dict[IdNamespace, int] = {}
        self._redis = redis

    async def _floor_of(self, namespace: IdNamespace) -> int:
        return self.floor.get(namespace, 0)

    def generator(self) -> IdGenerator:
        return RedisIdGenerator(self._redis, block_size=BLOCK, floor_provider=self._floor_of, resync_margin=MARGIN)

    async def lose_counters(self) -> None:
        await self._redis.flushdb()


def _on_db(url: str, db: int) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"


@pytest.fixture(params=["fake", "redis"])
def backend(request: pytest.FixtureRequest) -> RedisEndpoint | None:
    return redis_backend_of(request)


@pytest.fixture
async def world(backend: RedisEndpoint | None) -> AsyncIterator[IdWorld]:
    if backend is None:
        yield FakeWorld()
        return
    redis = Redis.from_url(_on_db(backend.url, ID_DB))
    await redis.flushdb()
    try:
        yield RedisWorld(redis)
    finally:
        await redis.flushdb()
        await redis.aclose()


def _increasing(ids: Iterable[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(ids))


async def test_each_call_returns_the_ids_asked_for_each_above_every_earlier_one(world: IdWorld) -> None:
    ids = world.generator()
    counts = [1, 3, 2 * BLOCK + 3, 1, BLOCK, BLOCK - 1, 2]
    got: dict[IdNamespace, list[list[int]]] = {PAYMENT: [], ORDER: []}

    for count in counts:
        for namespace in (ORDER, PAYMENT):
            got[namespace].append(await ids.next_ids(namespace, count))

    for namespace, calls in got.items():
        assert [len(call) for call in calls] == counts, namespace
        assert _increasing(i for call in calls for i in call), namespace


async def test_a_count_below_one_is_refused(world: IdWorld) -> None:
    ids = world.generator()

    for count in (0, -1):
        with pytest.raises(ValueError):
            await ids.next_ids(ORDER, count)


async def test_generators_sharing_the_store_never_hand_out_the_same_id(world: IdWorld) -> None:
    generators = [world.generator() for _ in range(3)]
    calls = [(ids, count) for count in (1, 4, BLOCK + 2, 2, 7, 1, 3 * BLOCK) for ids in generators]

    results = await asyncio.gather(*(ids.next_ids(ORDER, count) for ids, count in calls))
    later = await asyncio.gather(*(ids.next_ids(ORDER, 5) for ids in generators))

    every = [i for batch in [*results, *later] for i in batch]
    assert len(every) == len(set(every))
    assert all(_increasing(batch) for batch in results)


async def test_concurrent_calls_on_one_generator_never_overlap(world: IdWorld) -> None:
    ids = world.generator()

    results = await asyncio.gather(*(ids.next_ids(PAYMENT, count) for count in [3, 1, BLOCK, 6, 2 * BLOCK, 1] * 4))

    every = [i for batch in results for i in batch]
    assert len(every) == len(set(every))
    assert all(_increasing(batch) for batch in results)


async def test_after_a_collision_every_namespace_allocates_above_what_the_database_holds(world: IdWorld) -> None:
    ids = world.generator()
    await ids.next_ids(PAYMENT, 1)  # the real adapter now holds the rest of a block below the floor
    await ids.next_ids(ORDER, 3)
    world.floor = {PAYMENT: 10_000, ORDER: 50_000}  # another process stored ids this generator was about to use

    await ids.recover_from_collision()

    assert min(await ids.next_ids(PAYMENT, 2)) > 10_000
    assert min(await ids.next_ids(ORDER, 2 * BLOCK)) > 50_000
    started_after = world.generator()  # the shared counters moved, not just this generator's
    assert min(await started_after.next_ids(PAYMENT, 1)) > 10_000
    assert min(await started_after.next_ids(ORDER, 1)) > 50_000


async def test_a_recovery_never_moves_a_generator_back_onto_ids_it_handed_out(world: IdWorld) -> None:
    ids = world.generator()
    before = await ids.next_ids(ORDER, 2 * BLOCK + 5)  # none of them written yet: the database holds nothing

    await ids.recover_from_collision()
    after = await ids.next_ids(ORDER, 2 * BLOCK)

    assert min(after) > max(before)


async def test_a_generator_never_repeats_an_id_after_the_store_lost_its_counters(world: IdWorld) -> None:
    ids = world.generator()
    before = {ns: await ids.next_ids(ns, BLOCK + 3) for ns in (PAYMENT, ORDER)}

    await world.lose_counters()
    after = {ns: [i for _ in range(4) for i in await ids.next_ids(ns, BLOCK)] for ns in (PAYMENT, ORDER)}

    for namespace in (PAYMENT, ORDER):
        assert min(after[namespace]) > max(before[namespace]), namespace
        assert _increasing(after[namespace]), namespace
