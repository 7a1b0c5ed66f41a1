"""PostgresParkedOrders: orders in NEEDS_RECONCILIATION for the periodic re-query and the operator.

Served by `payment_orders_needs_reconciliation_idx` (migration 0002): there should be very few. The re-query's
claim stamps `reconcile_queried_at` with the database's now() and numbers the question by bumping
`status_check_number` (a parked order has no scheduled check left, so the number is free), giving each answer
its own event id.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.parked_orders import ParkedOrder
from payment_infrastructure.postgres.errors import translated_errors
from payment_infrastructure.postgres.rows import order_from_row

_CLAIM_DUE = text(
    """
    WITH due AS (
        SELECT payment_order_id FROM payment_orders
         WHERE status = 'NEEDS_RECONCILIATION'
           AND (reconcile_queried_at IS NULL OR reconcile_queried_at < now() - make_interval(secs => :every))
         ORDER BY payment_order_id
         LIMIT :limit
         FOR UPDATE SKIP LOCKED
    )
    UPDATE payment_orders o
       SET reconcile_queried_at = now(), status_check_number = o.status_check_number + 1
      FROM due, payments p
     WHERE o.payment_order_id = due.payment_order_id AND p.payment_id = o.payment_id
    RETURNING o.*, p.trace_id AS payment_trace_id
    """
)
_SELECT = """
    SELECT o.*, p.trace_id AS payment_trace_id FROM payment_orders o JOIN payments p USING (payment_id)
     WHERE o.status = 'NEEDS_RECONCILIATION'
"""
_LIST = text(_SELECT + " ORDER BY o.updated_at LIMIT :limit")
_GET = text(_SELECT + " AND o.payment_order_id = :id")
_COUNT = text("SELECT count(*) FROM payment_orders WHERE status = 'NEEDS_RECONCILIATION'")


def _parked(row: Any) -> ParkedOrder:
    mapping = row._mapping
    return ParkedOrder(
        order=order_from_row(mapping),
        query_number=mapping["status_check_number"],
        trace_id=mapping["payment_trace_id"],
        parked_since=mapping["updated_at"],
        reason=mapping["retry_reason"],
    )


class PostgresParkedOrders:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim_due(self, *, every: timedelta, limit: int) -> list[ParkedOrder]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        async with translated_errors(), self._engine.begin() as conn:
            rows = (await conn.execute(_CLAIM_DUE, {"every": every.total_seconds(), "limit": limit})).all()
        return sorted((_parked(r) for r in rows), key=lambda p: p.order.payment_order_id.value)

    async def list_parked(self, *, limit: int) -> list[ParkedOrder]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(_LIST, {"limit": limit})).all()
        return [_parked(r) for r in rows]

    async def count(self) -> int:
        async with translated_errors(), self._engine.connect() as conn:
            parked: int = (await conn.execute(_COUNT)).scalar_one()
        return parked

    async def get(self, payment_order_id: int) -> ParkedOrder | None:
        async with translated_errors(), self._engine.connect() as conn:
            row = (await conn.execute(_GET, {"id": payment_order_id})).first()
        return _parked(row) if row is not None else None
