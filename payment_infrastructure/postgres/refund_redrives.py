"""PostgresRefundRedriveClaims: the unsettled refunds, for the stale-refund sweeper, the parked-refund re-query
and `payments reconcile refunds`.

A claim is one statement: pick the oldest matching refunds (FOR UPDATE SKIP LOCKED, so concurrent rounds and the
executor's settling transaction are passed over, never waited for) and stamp `redriven_at`; no round takes them
again until their interval passes it. Thresholds and stamps are the database's now(). Served by
`refunds_unsettled_idx` (migration 0010), which holds the unsettled refunds only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.refund_redrives import UnsettledRefund
from payment_domain.events import EventType
from payment_domain.ids import RefundId
from payment_infrastructure.postgres.driver import bounded_transaction, driver_connection
from payment_infrastructure.postgres.errors import translated_errors
from payment_infrastructure.postgres.refund_store import COLUMNS, refund_from_row
from payment_infrastructure.postgres.rows import order_from_row

_ORDER_COLUMNS = (
    "payment_order_id",
    "payment_id",
    "seller_id",
    "amount_value",
    "amount_currency",
    "status",
    "created_at",
    "updated_at",
    "retry_count",
    "retry_reason",
    "last_error_message",
)
_RETURNED = ", ".join(
    [f"r.{c}" for c in COLUMNS] + [f"o.{c} AS o_{c}" for c in _ORDER_COLUMNS] + ["r.trace_id AS refund_trace_id"]
)


def _untouched(status: str) -> str:
    """Refunds in `status` whose state and PSP stamp have not moved for $1."""
    return (
        f"r.status = '{status}' AND r.updated_at < now() - $1::interval"
        " AND (r.psp_sent_at IS NULL OR r.psp_sent_at < now() - $1::interval)"
    )


_STALE = _untouched("REQUESTED")
_NOT_IN_OUTBOX = f"""
    NOT EXISTS (
        SELECT 1 FROM outbox_event e
         WHERE e.aggregate_id = r.payment_order_id::text AND e.status = 'NEW'
           AND e.event_type = '{EventType.REFUND_REQUESTED.value}')
"""


def _claim(status: str, *conditions: str) -> str:
    """Claim refunds in `status` untouched (state, PSP stamp, claim) for $1, oldest first, at most $2."""
    where = " AND ".join(
        (_untouched(status), "(r.redriven_at IS NULL OR r.redriven_at < now() - $1::interval)", *conditions)
    )
    return f"""
        WITH due AS (
            SELECT r.refund_id FROM refunds r WHERE {where} ORDER BY r.updated_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED
        )
        UPDATE refunds r SET redriven_at = now()
          FROM due, payment_orders o
         WHERE r.refund_id = due.refund_id AND o.payment_order_id = r.payment_order_id
        RETURNING {_RETURNED}
    """


_CLAIM_STALE = _claim("REQUESTED", _NOT_IN_OUTBOX)
_CLAIM_PARKED = _claim("NEEDS_RECONCILIATION")
_PARKED = f"""
    SELECT {_RETURNED} FROM refunds r JOIN payment_orders o USING (payment_order_id)
     WHERE r.status = 'NEEDS_RECONCILIATION'
"""
_LIST_PARKED = _PARKED + " ORDER BY r.updated_at LIMIT $1"
_GET_PARKED = _PARKED + " AND r.refund_id = $1"
_COUNT_STALE = f"SELECT count(*) FROM refunds r WHERE {_STALE}"


class _OrderColumns:
    """The order's half of a joined row, under its own names."""

    def __init__(self, row: asyncpg.Record) -> None:
        self._row = row

    def __getitem__(self, key: str, /) -> Any:
        return self._row[f"o_{key}"]


def _unsettled(row: asyncpg.Record) -> UnsettledRefund:
    return UnsettledRefund(refund_from_row(row), order_from_row(_OrderColumns(row)), row["refund_trace_id"])


class PostgresRefundRedriveClaims:
    def __init__(self, engine: AsyncEngine, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
        self._engine = engine
        self._statement_timeout_ms = statement_timeout_ms
        self._lock_timeout_ms = lock_timeout_ms

    async def claim_stale(self, *, stale_after: timedelta, limit: int) -> list[UnsettledRefund]:
        return await self._claim(_CLAIM_STALE, stale_after, limit)

    async def claim_parked(self, *, every: timedelta, limit: int) -> list[UnsettledRefund]:
        return await self._claim(_CLAIM_PARKED, every, limit)

    async def list_parked(self, *, limit: int) -> list[UnsettledRefund]:
        async with translated_errors(), driver_connection(self._engine) as conn:
            rows = await conn.fetch(_LIST_PARKED, limit)
        return [_unsettled(r) for r in rows]

    async def get_parked(self, refund_id: RefundId) -> UnsettledRefund | None:
        async with translated_errors(), driver_connection(self._engine) as conn:
            row = await conn.fetchrow(_GET_PARKED, refund_id.value)
        return None if row is None else _unsettled(row)

    async def count_stale(self, *, stale_after: timedelta) -> int:
        async with translated_errors(), driver_connection(self._engine) as conn:
            return int(await conn.fetchval(_COUNT_STALE, stale_after))

    async def _claim(self, statement: str, age: timedelta, limit: int) -> list[UnsettledRefund]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if age <= timedelta(0):
            raise ValueError("the age must be positive")
        async with (
            translated_errors(),
            bounded_transaction(
                self._engine, statement_timeout_ms=self._statement_timeout_ms, lock_timeout_ms=self._lock_timeout_ms
            ) as conn,
        ):
            rows = await conn.fetch(statement, age, limit)
        # RETURNING gives no order of its own: oldest first, as claimed.
        return sorted((_unsettled(r) for r in rows), key=lambda u: u.refund.updated_at)


__all__ = ["PostgresRefundRedriveClaims"]
