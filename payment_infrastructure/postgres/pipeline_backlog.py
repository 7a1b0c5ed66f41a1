"""`PipelineBacklog` over Postgres: the orders not yet answered by the PSP, counted from the source of truth.

The count walks the partial index of orders in flight (`payment_orders_in_flight_idx`) and stops at `limit`, so a
reading costs well under a millisecond at the budgets admission uses, whatever the size of the table."""

from __future__ import annotations

import asyncpg

from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.postgres.errors import translated_errors
from payment_infrastructure.postgres.pool import acquire

_COUNT = """
SELECT count(*) FROM (
    SELECT 1 FROM payment_orders WHERE status = $1 LIMIT $2
) AS waiting
"""


class PostgresPipelineBacklog:
    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout_seconds: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout_seconds

    async def orders_awaiting_first_answer(self, *, limit: int) -> int:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with translated_errors(), acquire(self._pool, self._acquire_timeout) as conn:
            count = await conn.fetchval(_COUNT, PaymentOrderStatus.INITIATED_PENDING.value, limit)
        return int(count)
