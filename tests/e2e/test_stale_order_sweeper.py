"""The stale-order sweeper end to end, in the consumers process over the real broker, Postgres, Redis and PSP
simulator: orders whose messages were lost are noticed and settle, orders legitimately waiting are left alone, and
nothing is ever charged twice. Staleness comes from `updated_at` set in the past, never from sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from devstack.keycloak import Keycloak
from payment_infrastructure.redis.client import create_redis
from tests.e2e.helpers import create_payments
from tests.fixtures.pipeline import Pipeline, running_pipeline
from tests.fixtures.ports import wait_until
from tests.fixtures.psp import PspSimulatorHandle
from tests.integration.api.helpers import fetch
from tests.integration.postgres.order_rows import StoredOrder, insert_orders, order_row

pytestmark = pytest.mark.asyncio(loop_scope="session")

HOUR = timedelta(hours=1)
# Ids far above what the API hands out here, for orders written straight into the database.
LOST = 9_000_000_000
SWEEPING: dict[str, Any] = {
    "sweeper": {"interval_seconds": 0.1},
    # A queued retry waits minutes and a status check ten, so an order left waiting stays so during a test; the
    # sweeper's threshold keeps its default (10 minutes).
    "retry": {"base_delay_ms": 240_000, "max_delay_ms": 240_000},
    "status_checks": {"delays_seconds": (600, 1_200)},
}


@pytest.fixture(scope="module")
async def sweeping(
    psp_simulator: PspSimulatorHandle, keycloak: Keycloak, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    data_dir = tmp_path_factory.mktemp("sweeping-kafka")
    async with running_pipeline(
        psp=psp_simulator, issuer_url=keycloak.issuer_url, data_dir=data_dir, **SWEEPING
    ) as running:
        yield running


async def execute(pipeline: Pipeline, statement: str, *args: object) -> None:
    await fetch(pipeline.database_url, statement, *args)


async def wait_for_status(pipeline: Pipeline, order_id: int, status: str, *, within: float = 20) -> None:
    async def reached() -> bool:
        return bool((await order_row(pipeline.database_url, order_id))["status"] == status)

    await wait_until(reached, timeout=within, what=f"order {order_id} {status}")


async def order_of(pipeline: Pipeline, public_payment_id: str) -> int:
    (row,) = await fetch(
        pipeline.database_url,
        "SELECT payment_order_id FROM payment_orders WHERE public_payment_id = $1",
        public_payment_id,
    )
    return int(row["payment_order_id"])


def redriven_so_far(status: str) -> float:
    return REGISTRY.get_sample_value("payment_orders_stale_redriven_total", {"status": status}) or 0.0


async def swept(pipeline: Pipeline, order_id: int) -> bool:
    return (await order_row(pipeline.database_url, order_id))["swept_at"] is not None


async def a_whole_sweep_passed(pipeline: Pipeline, sentinel_id: int) -> None:
    """Make a sentinel order stale now and wait until the sweeper claims it: the loop runs one round at a time, so
    every round that began before this call, re-drives included, is over."""
    await insert_orders(pipeline.database_url, [StoredOrder(sentinel_id, datetime.now(UTC) - HOUR)])
    await wait_until(lambda: swept(pipeline, sentinel_id), timeout=10, what="a sweep over the sentinel")


async def test_an_order_whose_first_psp_call_was_lost_is_charged_once_and_settles(
    sweeping: Pipeline,
) -> None:
    await sweeping.psp.reset()
    await sweeping.psp.set_scenario("BEST_PSP_EVER")
    before = redriven_so_far("INITIATED_PENDING")
    lost = StoredOrder(LOST + 1, datetime.now(UTC) - HOUR)

    await insert_orders(sweeping.database_url, [lost])  # created, but no event will ever say so

    await wait_for_status(sweeping, lost.payment_order_id, "SUCCESSFUL_FINAL")
    (payment,) = await fetch(sweeping.database_url, "SELECT status FROM payments WHERE payment_id = $1", LOST + 1)
    assert payment["status"] == "SUCCESS"
    assert (await order_row(sweeping.database_url, lost.payment_order_id))["retry_count"] == 0
    summary = await sweeping.psp.summary()
    assert (summary["executions"], summary["orders_charged"], summary["orders_charged_more_than_once"]) == (1, 1, 0)
    assert summary["idempotency_mismatches"] == 0
    assert redriven_so_far("INITIATED_PENDING") - before == 1


@pytest.fixture
async def consumers_redis(sweeping: Pipeline) -> AsyncIterator[Redis]:
    """The consumers' Redis, through a client of the test's own."""
    client = create_redis(sweeping.consumers.settings.redis)
    yield client
    await client.aclose()


async def test_a_queued_retry_is_left_alone_and_one_dropped_from_redis_is_redriven_under_the_same_key(
    sweeping: Pipeline, consumers_redis: Redis, tokens: dict[str, str]
) -> None:
    psp, redis, keys = sweeping.psp, consumers_redis, sweeping.consumers.settings.retry
    await psp.reset()
    await psp.set_scenario("BEST_PSP_EVER", success_percent=0, declined_percent=0, retryable_percent=100)
    (payment_id,) = await create_payments(sweeping, tokens["order-service"], 1, sellers=1)
    order_id = await order_of(sweeping, payment_id)
    member = f"{order_id}:1"

    async def retry_queued() -> bool:
        row = await order_row(sweeping.database_url, order_id)
        return row["retry_count"] == 1 and await redis.zscore(keys.queue_key, member) is not None

    await wait_until(retry_queued, timeout=20, what="attempt 1 queued")
    await psp.set_scenario("BEST_PSP_EVER")
    due = await redis.zscore(keys.queue_key, member)
    before = redriven_so_far("FAILED_TRANSIENT_ERROR")
    await execute(
        sweeping,
        "UPDATE payment_orders SET updated_at = now() - interval '1 hour' WHERE payment_order_id = $1",
        order_id,
    )

    await wait_until(lambda: swept(sweeping, order_id), timeout=10, what="a sweep over the order")
    await a_whole_sweep_passed(sweeping, LOST + 3)
    waiting = await order_row(sweeping.database_url, order_id)
    assert (waiting["status"], waiting["retry_count"]) == ("FAILED_TRANSIENT_ERROR", 1)
    assert redriven_so_far("FAILED_TRANSIENT_ERROR") == before, "looked at, not re-driven"
    assert await redis.zscore(keys.queue_key, member) == due, "the queued retry keeps its due time"

    # Redis loses the retry; a threshold later the sweeper looks again.
    await redis.zrem(keys.queue_key, member)
    await redis.hdel(keys.payloads_key, member)
    await execute(
        sweeping, "UPDATE payment_orders SET swept_at = now() - interval '1 hour' WHERE payment_order_id = $1", order_id
    )

    await wait_for_status(sweeping, order_id, "SUCCESSFUL_FINAL")
    assert (await order_row(sweeping.database_url, order_id))["retry_count"] == 1
    assert redriven_so_far("FAILED_TRANSIENT_ERROR") == before + 1
    await wait_for_status(sweeping, LOST + 3, "SUCCESSFUL_FINAL")
    summary = await psp.summary()
    # The order's refused first attempt and its retry, and the sentinel's charge.
    assert (summary["executions"], summary["orders_charged"], summary["orders_charged_more_than_once"]) == (3, 2, 0)
    assert await redis.zscore(keys.queue_key, member) is None
    assert await redis.zscore(keys.inflight_key, member) is None


async def test_an_order_waiting_for_its_status_check_is_left_alone_and_a_lost_check_is_asked_again(
    sweeping: Pipeline, tokens: dict[str, str]
) -> None:
    psp = sweeping.psp
    await psp.reset()
    # The call outlives our 500 ms wait, then succeeds at the PSP: an unknown outcome, checked in 10 minutes.
    await psp.set_scenario("BEST_PSP_EVER", timeout_percent=100, timeout_duration_ms=700)
    (payment_id,) = await create_payments(sweeping, tokens["order-service"], 1, sellers=1)
    order_id = await order_of(sweeping, payment_id)
    await wait_for_status(sweeping, order_id, "PENDING_STATUS_CHECK_LATER")
    await wait_until(lambda: _charged(psp, 1), timeout=10, what="the timed-out charge completing at the PSP")
    await psp.set_scenario("BEST_PSP_EVER")
    (check,) = await fetch(
        sweeping.database_url, "SELECT * FROM payment_order_status_checks WHERE payment_order_id = $1", order_id
    )

    # Quiet for an hour, its check still ahead.
    await execute(
        sweeping,
        "UPDATE payment_orders SET updated_at = now() - interval '1 hour' WHERE payment_order_id = $1",
        order_id,
    )
    await a_whole_sweep_passed(sweeping, LOST + 2)

    waiting = await order_row(sweeping.database_url, order_id)
    assert (waiting["status"], waiting["swept_at"]) == ("PENDING_STATUS_CHECK_LATER", None)
    (unchanged,) = await fetch(
        sweeping.database_url, "SELECT * FROM payment_order_status_checks WHERE payment_order_id = $1", order_id
    )
    assert (unchanged["status"], unchanged["scheduled_at"]) == ("SCHEDULED", check["scheduled_at"])
    assert (await psp.summary())["status_queries"] == 0

    # The scheduler sent the check an hour ago and the message was lost.
    await execute(
        sweeping,
        "UPDATE payment_order_status_checks SET status = 'PUBLISHED', updated_at = now() - interval '1 hour' "
        "WHERE payment_order_id = $1",
        order_id,
    )

    await wait_for_status(sweeping, order_id, "SUCCESSFUL_FINAL")
    await wait_for_status(sweeping, LOST + 2, "SUCCESSFUL_FINAL")
    summary = await psp.summary()
    assert summary["status_queries"] >= 1
    # One execution each (the timed-out one and the sentinel's): the lost check was asked again, never re-charged.
    assert (summary["executions"], summary["orders_charged"], summary["orders_charged_more_than_once"]) == (2, 2, 0)


async def test_sweepers_side_by_side_redrive_each_lost_order_exactly_once(sweeping: Pipeline) -> None:
    await sweeping.psp.reset()
    await sweeping.psp.set_scenario("BEST_PSP_EVER")
    now = datetime.now(UTC)
    lost = [StoredOrder(LOST + 100 + i, now - HOUR - timedelta(milliseconds=i)) for i in range(40)]
    by_the_loop_before = redriven_so_far("INITIATED_PENDING")
    sweeper = sweeping.consumers.sweep_stale_orders

    async def sweep_until_dry() -> list[int]:
        redriven: list[int] = []
        while (report := await sweeper.sweep_once(limit=4)).found:
            redriven += [r.stale.order.payment_order_id.value for r in report.redriven]
        return redriven

    await insert_orders(sweeping.database_url, lost)
    # Three more sweepers beside the process's own loop.
    shares = await asyncio.gather(*(sweep_until_dry() for _ in range(3)))

    for order in lost:
        await wait_for_status(sweeping, order.payment_order_id, "SUCCESSFUL_FINAL")
    by_hand = [order_id for share in shares for order_id in share]

    async def loop_rounds_counted() -> bool:  # the loop counts a round once all its re-drives went out
        return len(by_hand) + redriven_so_far("INITIATED_PENDING") - by_the_loop_before >= len(lost)

    await wait_until(loop_rounds_counted, timeout=5, what="the loop's rounds counted")
    by_the_loop = redriven_so_far("INITIATED_PENDING") - by_the_loop_before
    assert len(by_hand) == len(set(by_hand))
    assert len(by_hand) + by_the_loop == len(lost), "every lost order re-driven exactly once in all"
    summary = await sweeping.psp.summary()
    assert (summary["executions"], summary["orders_charged"], summary["orders_charged_more_than_once"]) == (40, 40, 0)


async def _charged(psp: PspSimulatorHandle, orders: int) -> bool:
    return bool((await psp.summary())["orders_charged"] == orders)
