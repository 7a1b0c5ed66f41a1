"""The result transaction runs on the pooled connection's own asyncpg driver: a transaction cut short, even by a
cancellation, must never hand its connection back to the pool still open (the next user would write into it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.payment_order_store import PostgresResultStore
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fixtures.database import migrated_database
from tests.integration.postgres.order_rows import StoredOrder, insert_orders

ORDER_ID = 7


@pytest.fixture(scope="module")
async def own_database() -> AsyncIterator[str]:
    async with migrated_database() as url:
        await insert_orders(url, [StoredOrder(ORDER_ID, datetime.now(UTC) - timedelta(minutes=1))])
        yield url


async def test_a_cancelled_transaction_leaves_no_open_transaction_or_lock_behind(own_database: str) -> None:
    # One connection: whatever the cancelled transaction leaves behind, the next one gets.
    engine = create_engine(DatabaseSettings(url=own_database, pool_size=1), application_name="cancel-tests")
    store = PostgresResultStore(engine, statement_timeout_ms=2_000, lock_timeout_ms=200)
    locked = asyncio.Event()

    async def hold_the_lock() -> None:
        async with store.transaction() as tx:
            assert await tx.lock(ORDER_ID) is not None
            locked.set()
            await asyncio.Event().wait()

    try:
        holder = asyncio.create_task(hold_the_lock())
        async with asyncio.timeout(10):
            await locked.wait()
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder

        async with asyncio.timeout(10), store.transaction() as tx:
            # Within the lock timeout: the row is free, and this is a transaction of its own (its clock moved on).
            assert await tx.lock(ORDER_ID) is not None
            first = tx.now
        async with store.transaction() as tx:
            assert tx.now > first
    finally:
        await engine.dispose()


async def test_a_failed_transaction_returns_its_connection_ready_for_the_next(own_database: str) -> None:
    engine = create_engine(DatabaseSettings(url=own_database, pool_size=1), application_name="cancel-tests")
    store = PostgresResultStore(engine, statement_timeout_ms=2_000, lock_timeout_ms=200)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            async with store.transaction() as tx:
                await tx.lock(ORDER_ID)
                raise RuntimeError("boom")
        async with store.transaction() as tx:
            assert await tx.lock(ORDER_ID) is not None
    finally:
        await engine.dispose()
