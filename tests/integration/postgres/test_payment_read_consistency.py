"""GET /payments/{id} reads the payment and its orders from one snapshot: an order settling (and the payment
rolling up) while the read is under way never shows every order final beside a payment not yet rolled up."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from payment_domain.ids import PaymentId
from payment_domain.status import roll_up
from payment_infrastructure.postgres.payment_repository import PostgresPaymentRepository
from tests.integration.api.helpers import dsn
from tests.integration.postgres.order_rows import StoredOrder, insert_orders


class _InterruptedConnection:
    """Runs `between()` once, right after the first statement this checkout sends (before any next one)."""

    def __init__(self, inner: asyncpg.Connection, between: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._between: Callable[[], Awaitable[None]] | None = between

    async def _after_statement(self) -> None:
        if self._between is not None:
            between, self._between = self._between, None
            await between()

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        rows = await self._inner.fetch(*args, **kwargs)
        await self._after_statement()
        return rows

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        row = await self._inner.fetchrow(*args, **kwargs)
        await self._after_statement()
        return row


class _InterruptingPool:
    def __init__(self, inner: asyncpg.Pool, between: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._between = between

    async def acquire(self, *, timeout: float | None = None) -> _InterruptedConnection:
        return _InterruptedConnection(await self._inner.acquire(timeout=timeout), self._between)

    async def release(self, conn: _InterruptedConnection) -> None:
        await self._inner.release(conn._inner)


async def test_a_payment_read_while_its_last_order_settles_is_one_consistent_picture(database_url: str) -> None:
    payment_id = random.randrange(10**12, 10**13)
    first, last = payment_id, payment_id + 1
    now = datetime.now(UTC)
    admin = await asyncpg.connect(dsn(database_url))
    pool = await asyncpg.create_pool(dsn(database_url), min_size=1, max_size=2)
    try:
        await insert_orders(
            database_url,
            [
                StoredOrder(first, now, status="SUCCESSFUL_FINAL", payment_id=payment_id),
                StoredOrder(last, now, status="INITIATED_PENDING", payment_id=payment_id),
            ],
        )

        async def last_order_settles() -> None:  # what the result applier commits: the order and the roll-up
            async with admin.transaction():
                await admin.execute(
                    "UPDATE payment_orders SET status = 'SUCCESSFUL_FINAL' WHERE payment_order_id = $1", last
                )
                await admin.execute("UPDATE payments SET status = 'SUCCESS' WHERE payment_id = $1", payment_id)

        repository = PostgresPaymentRepository(
            _InterruptingPool(pool, last_order_settles),  # type: ignore[arg-type]
            acquire_timeout_seconds=5,
            writers=1,
            max_batch=1,
        )
        during = await repository.get(PaymentId(payment_id))
        after = await repository.get(PaymentId(payment_id))
    finally:
        await admin.execute("DELETE FROM payment_orders WHERE payment_id = $1", payment_id)
        await admin.execute("DELETE FROM payments WHERE payment_id = $1", payment_id)
        await pool.close()
        await admin.close()

    assert during is not None and after is not None
    assert during.status is roll_up(o.status for o in during.payment_orders)
    assert after.status.value == "SUCCESS"
    assert {o.status.value for o in after.payment_orders} == {"SUCCESSFUL_FINAL"}
