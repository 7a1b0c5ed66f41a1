"""Redis loses the id counters (a restart without persistence) while API processes run: no create reuses a stored
id, and none is answered 500. One process's counters are guarded by the floor it synced at start-up; one that
synced an empty database meets the stored ids, re-syncs and writes with fresh ones."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from tests.e2e.helpers import payment_body
from tests.fixtures.database import migrated_database
from tests.fixtures.payment_api import ApiFactory, RunningApi
from tests.fixtures.redis import RedisServer
from tests.integration.api.helpers import bearer, fetch


async def create(api: RunningApi, token: str, count: int = 1) -> list[dict[str, Any]]:
    created = []
    async with api.client() as client:
        for _ in range(count):
            response = await client.post("/payments", json=payment_body(sellers=2), headers=bearer(token))
            assert response.status_code == 202, response.text
            created.append(response.json())
    return created


async def lose_every_counter(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushall()
    finally:
        await redis.aclose()


async def stored_ids(database_url: str) -> tuple[list[int], list[int]]:
    payments = [r["payment_id"] for r in await fetch(database_url, "SELECT payment_id FROM payments")]
    orders = [r["payment_order_id"] for r in await fetch(database_url, "SELECT payment_order_id FROM payment_orders")]
    return payments, orders


async def test_a_process_that_synced_stored_ids_never_hands_them_out_after_redis_lost_its_counters(
    api_factory: ApiFactory, private_redis_server: RedisServer, tokens: dict[str, str]
) -> None:
    async with migrated_database() as url:
        redis = {"url": private_redis_server.url}
        writer = await api_factory(database_url=url, redis=redis)
        before = await create(writer, tokens["order-service"], 3)
        late_starter = await api_factory(database_url=url, redis=redis)  # syncs above the three payments
        await lose_every_counter(private_redis_server.url)

        after = await create(late_starter, tokens["order-service"], 2)
        payments, orders = await stored_ids(url)

    assert len(payments) == len(set(payments)) == 5
    assert len(orders) == len(set(orders)) == 10
    assert {p["paymentId"] for p in after}.isdisjoint({p["paymentId"] for p in before})


async def test_a_process_that_synced_an_empty_database_meets_the_stored_ids_and_writes_with_fresh_ones(
    api_factory: ApiFactory, private_redis_server: RedisServer, tokens: dict[str, str]
) -> None:
    async with migrated_database() as url:
        redis = {"url": private_redis_server.url}
        early = await api_factory(database_url=url, redis=redis)  # synced while nothing was stored
        writer = await api_factory(database_url=url, redis=redis)
        before = await create(writer, tokens["order-service"], 3)
        await lose_every_counter(private_redis_server.url)

        after = await create(early, tokens["order-service"], 2)  # its first block starts at 1 again
        payments, orders = await stored_ids(url)

    assert len(payments) == len(set(payments)) == 5
    assert len(orders) == len(set(orders)) == 10
    assert {p["paymentId"] for p in after}.isdisjoint({p["paymentId"] for p in before})
