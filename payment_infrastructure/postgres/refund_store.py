"""PostgresRefundStore: refunds, their order's refunded total, their outbox rows and their ledger entries.

Every transaction is bounded by the database settings' statement and lock timeouts. A refund is accepted under
its order's row lock (`SELECT ... FOR UPDATE`), and `payment_orders_refunds_within_charge` refuses, at the
database, any refunded total above the amount charged (migration 0008).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.refunds import KeyedRefund, RefundableOrder, RefundKey
from payment_domain.events import EventEnvelope, RefundRequested
from payment_domain.ids import PaymentId, PaymentOrderId, RefundId
from payment_domain.ledger import JournalEntry
from payment_domain.money import Amount, Currency
from payment_domain.refund import Refund, RefundStatus
from payment_infrastructure.postgres.driver import bounded_transaction, driver_connection
from payment_infrastructure.postgres.errors import translated_errors
from payment_infrastructure.postgres.ledger_entries import insert_entries
from payment_infrastructure.postgres.rows import Row, order_from_row
from payment_infrastructure.serialization import envelope_to_bytes

COLUMNS = (
    "refund_id",
    "payment_order_id",
    "payment_id",
    "seller_id",
    "amount_value",
    "amount_currency",
    "status",
    "created_at",
    "updated_at",
)
_SELECT = ", ".join(COLUMNS)

_OF_KEY = f"SELECT {_SELECT}, request_hash FROM refunds WHERE client_id = $1 AND idempotency_key = $2"
_LOCK_ORDER = "SELECT * FROM payment_orders WHERE payment_order_id = $1 AND payment_id = $2 FOR UPDATE"
_NEXT_ID = "SELECT nextval(pg_get_serial_sequence('refunds', 'refund_id'))"
_ADD = f"""
    WITH r AS (
        INSERT INTO refunds ({_SELECT}, client_id, idempotency_key, request_hash, trace_id)
        OVERRIDING SYSTEM VALUE
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12)
        ON CONFLICT ON CONSTRAINT refunds_one_per_key DO NOTHING
        RETURNING refund_id, payment_order_id, amount_value, created_at
    ), o AS (
        UPDATE payment_orders p SET refunded_value = p.refunded_value + r.amount_value
          FROM r WHERE p.payment_order_id = r.payment_order_id
        RETURNING p.payment_order_id
    ), e AS (
        INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                                  status, created_at)
        SELECT $13, $14, $15, $16, $12, $17, $18, 'NEW', r.created_at FROM r
    )
    SELECT count(*) FROM o
"""
_LOCK_REFUND = f"SELECT {_SELECT} FROM refunds WHERE refund_id = $1 FOR UPDATE"
_CONFIRMED = "SELECT coalesce(sum(amount_value), 0) FROM refunds WHERE payment_order_id = $1 AND status = 'SUCCEEDED'"
_CHARGE_COMMISSION = """
    SELECT coalesce(sum(p.amount), 0) FROM journal_entries e JOIN postings p USING (entry_id)
     WHERE e.kind = 'CHARGE' AND e.payment_order_id = $1 AND p.account_kind = 'COMMISSION_REVENUE'
       AND p.side = 'CREDIT'
"""
_SETTLE = """
    WITH r AS (UPDATE refunds SET status = $2, updated_at = $3 WHERE refund_id = $1
               RETURNING payment_order_id, amount_value)
    UPDATE payment_orders p SET refunded_value = p.refunded_value - r.amount_value
      FROM r WHERE p.payment_order_id = r.payment_order_id AND $4
"""
_GET = f"SELECT {_SELECT} FROM refunds WHERE refund_id = $1 AND payment_order_id = $2"
_MARK_SENT = """
    WITH before AS (SELECT refund_id, psp_sent_at FROM refunds WHERE refund_id = $1 FOR UPDATE)
    UPDATE refunds r SET psp_sent_at = now() FROM before WHERE r.refund_id = before.refund_id
    RETURNING before.psp_sent_at IS NOT NULL
"""
_REFUNDED_BY_ORDER = (
    "SELECT payment_order_id, refunded_value FROM payment_orders WHERE payment_id = $1 AND refunded_value > 0"
)


def refund_from_row(row: Row) -> Refund:
    return Refund(
        refund_id=RefundId(row["refund_id"]),
        payment_id=PaymentId(row["payment_id"]),
        payment_order_id=PaymentOrderId(row["payment_order_id"]),
        seller_id=row["seller_id"],
        amount=Amount(row["amount_value"], Currency(row["amount_currency"].strip())),
        status=RefundStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresRefundTransaction:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def refund_of_key(self, client_id: str, key: str) -> KeyedRefund | None:
        row = await self._conn.fetchrow(_OF_KEY, client_id, key)
        return None if row is None else KeyedRefund(refund_from_row(row), row["request_hash"])

    async def lock_order(self, payment_id: PaymentId, payment_order_id: PaymentOrderId) -> RefundableOrder | None:
        row = await self._conn.fetchrow(_LOCK_ORDER, payment_order_id.value, payment_id.value)
        return None if row is None else RefundableOrder(order_from_row(row), row["refunded_value"])

    async def next_refund_id(self) -> RefundId:
        return RefundId(await self._conn.fetchval(_NEXT_ID))

    async def add(self, refund: Refund, key: RefundKey, event: EventEnvelope[RefundRequested]) -> bool:
        written = await self._conn.fetchval(
            _ADD,
            refund.refund_id.value,
            refund.payment_order_id.value,
            refund.payment_id.value,
            refund.seller_id,
            refund.amount.value,
            refund.amount.currency.value,
            refund.status.value,
            refund.created_at,
            key.client_id,
            key.key,
            key.request_hash,
            event.trace_id,
            event.event_id,
            event.event_type.value,
            event.topic.value,
            event.aggregate_id,
            event.parent_event_id,
            envelope_to_bytes(event),
        )
        return bool(written)

    async def lock_refund(self, refund_id: RefundId) -> Refund | None:
        row = await self._conn.fetchrow(_LOCK_REFUND, refund_id.value)
        return None if row is None else refund_from_row(row)

    async def confirmed_refunded(self, payment_order_id: PaymentOrderId) -> int:
        return int(await self._conn.fetchval(_CONFIRMED, payment_order_id.value))

    async def charge_commission(self, payment_order_id: PaymentOrderId) -> int:
        return int(await self._conn.fetchval(_CHARGE_COMMISSION, payment_order_id.value))

    async def settle(self, refund: Refund, *, release: bool) -> None:
        await self._conn.execute(_SETTLE, refund.refund_id.value, refund.status.value, refund.updated_at, release)

    async def post_entries(self, entries: Sequence[JournalEntry], now: datetime) -> None:
        await insert_entries(self._conn, entries, now)

    async def mark_sent(self, refund_id: RefundId) -> bool:
        return bool(await self._conn.fetchval(_MARK_SENT, refund_id.value))


class PostgresRefundStore:
    def __init__(self, engine: AsyncEngine, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
        self._engine = engine
        self._statement_timeout_ms = statement_timeout_ms
        self._lock_timeout_ms = lock_timeout_ms

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresRefundTransaction]:
        async with (
            translated_errors(),
            bounded_transaction(
                self._engine, statement_timeout_ms=self._statement_timeout_ms, lock_timeout_ms=self._lock_timeout_ms
            ) as conn,
        ):
            yield PostgresRefundTransaction(conn)

    async def get(self, payment_order_id: PaymentOrderId, refund_id: RefundId) -> Refund | None:
        async with translated_errors(), driver_connection(self._engine) as conn:
            row = await conn.fetchrow(_GET, refund_id.value, payment_order_id.value)
        return None if row is None else refund_from_row(row)

    async def mark_sent(self, refund_id: RefundId) -> bool:
        async with self.transaction() as tx:
            return await tx.mark_sent(refund_id)

    async def refunded_by_order(self, payment_id: PaymentId) -> Mapping[PaymentOrderId, int]:
        async with translated_errors(), driver_connection(self._engine) as conn:
            rows = await conn.fetch(_REFUNDED_BY_ORDER, payment_id.value)
        return {PaymentOrderId(r["payment_order_id"]): r["refunded_value"] for r in rows}


__all__ = ["COLUMNS", "PostgresRefundStore", "PostgresRefundTransaction", "refund_from_row"]
