"""PostgresStaleOrderClaims: the sweeper's claim on payment orders that stopped moving.

One statement: pick the oldest in-flight orders with no sign of progress (FOR UPDATE SKIP LOCKED, so concurrent
sweepers and the result applier's locks are passed over, never waited for) and stamp them `swept_at`, which is the
claim: no sweeper takes them again until the threshold passes it. Both the threshold and the stamp are the
database's `now()`, the clock that writes every time the statement compares. Served by
`payment_orders_in_flight_idx`, whose predicate is the first condition below word for word (migration 0004); the
threshold is a stable expression, so it bounds the index scan on `updated_at`.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.stale_orders import StaleOrder
from payment_domain.status import IN_FLIGHT, PaymentOrderStatus
from payment_infrastructure.postgres.errors import translated_errors
from payment_infrastructure.postgres.rows import order_from_row

# Terminal, or parked for a human on purpose: never swept. Literal (not a parameter) so the planner can match the
# partial index's predicate.
NOT_IN_FLIGHT = tuple(sorted(s.value for s in PaymentOrderStatus if s not in IN_FLIGHT))
_NOT_IN_FLIGHT_SQL = ", ".join(f"'{status}'" for status in NOT_IN_FLIGHT)

_STALE_BEFORE = "now() - CAST(:stale_after AS interval)"

CLAIM_STALE_SQL = f"""
    WITH stale AS (
        SELECT o.payment_order_id
          FROM payment_orders o
         WHERE o.status NOT IN ({_NOT_IN_FLIGHT_SQL})
           AND o.updated_at < {_STALE_BEFORE}
           AND (o.swept_at IS NULL OR o.swept_at < {_STALE_BEFORE})
           AND (o.psp_claim_expires_at IS NULL OR o.psp_claim_expires_at < {_STALE_BEFORE})
           -- the status check it waits for is still to be sent, or was sent lately
           AND NOT EXISTS (
               SELECT 1 FROM payment_order_status_checks c
                WHERE c.payment_order_id = o.payment_order_id
                  AND c.attempt = o.retry_count
                  AND c.check_number = o.status_check_number
                  AND (c.status = 'SCHEDULED' OR c.updated_at >= {_STALE_BEFORE}))
           -- its payment_order_created event has not been published yet: the outbox dispatcher owns it
           AND NOT EXISTS (
               SELECT 1 FROM outbox_event e
                WHERE e.aggregate_id = o.payment_order_id::text AND e.status = 'NEW')
         ORDER BY o.updated_at
         LIMIT :limit
         FOR UPDATE OF o SKIP LOCKED
    )
    UPDATE payment_orders o
       SET swept_at = now()
      FROM stale, payments p
     WHERE o.payment_order_id = stale.payment_order_id AND p.payment_id = o.payment_id
    RETURNING o.*, p.trace_id AS payment_trace_id
"""
_CLAIM_STALE = text(CLAIM_STALE_SQL)


class PostgresStaleOrderClaims:
    def __init__(self, engine: AsyncEngine, *, statement_timeout_ms: int) -> None:
        self._engine = engine
        self._set_timeout = text(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")

    async def claim_stale(self, *, stale_after: timedelta, limit: int) -> list[StaleOrder]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if stale_after <= timedelta(0):
            raise ValueError("stale_after must be positive")
        async with translated_errors(), self._engine.begin() as conn:
            await conn.execute(self._set_timeout)
            rows = (await conn.execute(_CLAIM_STALE, {"stale_after": stale_after, "limit": limit})).all()
        claimed = [
            StaleOrder(
                order=order_from_row(row._mapping),
                status_check_number=row.status_check_number,
                trace_id=row.payment_trace_id,
            )
            for row in rows
        ]
        # RETURNING gives no order of its own: oldest first, as claimed.
        return sorted(claimed, key=lambda s: s.order.updated_at)
