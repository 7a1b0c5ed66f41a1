"""PostgresPipelineBacklog against the migrated schema: it counts the orders not yet answered by the PSP once
(INITIATED_PENDING) and nothing else, stops at its limit (keeping the oldest), says which of them are queued (not
under a live PSP-call claim) and how long the oldest 5 % of those waited, and is served by the partial index of
orders in flight however many settled orders the table holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.postgres.pipeline_backlog import _READ, PostgresPipelineBacklog
from payment_infrastructure.postgres.pool import create_pool
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fixtures.database import migrated_database
from tests.integration.api.helpers import dsn, fetch
from tests.integration.postgres.order_rows import StoredOrder, insert_orders

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def database() -> AsyncIterator[str]:
    async with migrated_database() as url:
        yield url


@pytest.fixture
async def backlog(database: str) -> AsyncIterator[PostgresPipelineBacklog]:
    pool = await create_pool(DatabaseSettings(url=database, pool_size=2), application_name="backlog-tests")
    yield PostgresPipelineBacklog(pool, acquire_timeout_seconds=1.0)
    await pool.close()


async def test_only_orders_awaiting_their_first_answer_are_read_up_to_the_limit_with_the_wait_of_the_oldest(
    database: str, backlog: PostgresPipelineBacklog
) -> None:
    now = datetime.now(UTC)
    long_ago = now - timedelta(hours=3)
    statuses = [s for s in PaymentOrderStatus if s is not PaymentOrderStatus.INITIATED_PENDING]
    others = [StoredOrder(1_000 + i, long_ago, status=s.value) for i, s in enumerate(statuses)]
    # 19 orders created a minute ago and one ten minutes ago (stuck): the 95th percentile of their waits is a minute.
    waiting = [StoredOrder(2_000 + i, now - timedelta(minutes=1)) for i in range(19)]
    waiting.append(StoredOrder(2_100, now - timedelta(minutes=10)))
    await insert_orders(database, [*others, *waiting])

    reading = await backlog.read(limit=100)
    assert reading.orders == reading.queued == 20
    assert 60 <= reading.wait_p95_seconds < 70
    oldest = await backlog.read(limit=5)  # the oldest five: the ten-minute one among them
    assert oldest.orders == 5 and oldest.wait_p95_seconds >= 600
    with pytest.raises(ValueError, match="at least 1"):
        await backlog.read(limit=0)


async def test_orders_in_a_psp_call_are_in_flight_but_not_queued_until_their_claim_runs_out(
    database: str, backlog: PostgresPipelineBacklog
) -> None:
    now = datetime.now(UTC)
    settled = "UPDATE payment_orders SET status = 'SUCCESSFUL_FINAL' WHERE status = 'INITIATED_PENDING'"
    claim = (
        "UPDATE payment_orders SET psp_claim_token = 'delivery', psp_claim_expires_at = now() + $2::interval"
        " WHERE payment_order_id = ANY($1::bigint[])"
    )
    queued = [StoredOrder(3_000 + i, now - timedelta(seconds=2)) for i in range(10)]
    calling = [StoredOrder(3_100 + i, now - timedelta(seconds=20)) for i in range(10)]
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute(settled)  # the other tests' orders out of the way
        await insert_orders(database, [*queued, *calling])
        # Ten in a PSP call for 20 s (a slow PSP): in flight, but their time is not the queue's.
        await conn.execute(claim, [o.payment_order_id for o in calling], timedelta(seconds=30))
        reading = await backlog.read(limit=1_000)
        assert (reading.orders, reading.queued) == (20, 10)
        assert 2 <= reading.wait_p95_seconds < 10
        # Their consumer died mid-call and the claims ran out: waiting to be taken again, queued since creation.
        await conn.execute(claim, [o.payment_order_id for o in calling], timedelta(seconds=-1))
        reading = await backlog.read(limit=1_000)
        assert (reading.orders, reading.queued) == (20, 20)
        assert 20 <= reading.wait_p95_seconds < 30
    finally:
        await conn.close()


async def test_the_count_is_served_by_the_partial_index_of_orders_in_flight(database: str) -> None:
    conn = await asyncpg.connect(dsn(database))
    try:
        await conn.execute(
            """
            INSERT INTO payments (payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency,
                                  status, client_id, trace_id, created_at, updated_at)
            SELECT i, 'payment-' || i, 'B', 'O-' || i, 100, 'EUR', 'SUCCESS', 'c', 't', now(), now()
              FROM generate_series(100000, 120000) i;
            INSERT INTO payment_orders (payment_order_id, public_payment_order_id, payment_id, public_payment_id,
                                        seller_id, amount_value, amount_currency, status, retry_count, created_at,
                                        updated_at)
            SELECT i, 'paymentorder-' || i, i, 'payment-' || i, 'S', 100, 'EUR', 'SUCCESSFUL_FINAL', 0, now(), now()
              FROM generate_series(100000, 120000) i;
            ANALYZE payment_orders;
            """
        )
    finally:
        await conn.close()
    rows = await fetch(database, "EXPLAIN " + _READ.replace("$1", "'INITIATED_PENDING'").replace("$2", "4000"))
    plan = "\n".join(r["QUERY PLAN"] for r in rows)
    assert "payment_orders_in_flight_idx" in plan, plan
