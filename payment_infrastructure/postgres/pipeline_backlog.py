"""`PipelineBacklog` over Postgres: the orders not yet answered by the PSP, read from the source of truth.

It also says how many of them are queued (not in a PSP call) and how long those waited. The read walks the partial
index of orders in flight (`payment_orders_in_flight_idx`, on `updated_at`, which for an order still
INITIATED_PENDING is its creation time) and stops at `limit`, so it costs about a millisecond at the
sizes admission uses, whatever the size of the table. Waits are on the database's clock against the API hosts'
creation stamps: a host clock off by a second shifts them by that second."""

from __future__ import annotations

import asyncpg

from payment_application.ports.pipeline import BacklogReading
from payment_domain.status import PaymentOrderStatus
from payment_infrastructure.postgres.errors import translated_errors
from payment_infrastructure.postgres.pool import acquire

# An order is in a PSP call while a consumer's claim on it is live (the claim is taken just before the call and
# cleared when its answer is applied); a claim past its lease is an order waiting to be taken again.
_READ = """
SELECT count(*) AS orders,
       count(*) FILTER (WHERE queued) AS queued,
       coalesce(extract(epoch FROM now() - percentile_disc(0.95) WITHIN GROUP (ORDER BY updated_at DESC)
                                           FILTER (WHERE queued)), 0) AS wait_p95
  FROM (SELECT updated_at, (psp_claim_token IS NULL OR psp_claim_expires_at < now()) AS queued
          FROM payment_orders WHERE status = $1 ORDER BY updated_at LIMIT $2) AS waiting
"""


class PostgresPipelineBacklog:
    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout_seconds: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout_seconds

    async def read(self, *, limit: int) -> BacklogReading:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        async with translated_errors(), acquire(self._pool, self._acquire_timeout) as conn:
            row = await conn.fetchrow(_READ, PaymentOrderStatus.INITIATED_PENDING.value, limit)
        assert row is not None
        return BacklogReading(
            orders=int(row["orders"]), queued=int(row["queued"]), wait_p95_seconds=max(float(row["wait_p95"]), 0.0)
        )
