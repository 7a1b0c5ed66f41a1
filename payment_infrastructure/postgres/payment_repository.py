"""PostgresPaymentRepository: one short transaction with local timeouts writes the idempotency claim (when a key is
given), then the payment, its orders and their outbox rows in ONE statement (data-modifying CTEs), so everything
is written together or not at all, in the same three or four round trips whatever the number of sellers."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg

from payment_application.errors import IdempotencyKeyInFlight
from payment_application.ports.payments import IdempotencyRecord
from payment_domain.events import EventEnvelope
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import Payment, PaymentOrder
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from payment_infrastructure.postgres.errors import LOCK_NOT_AVAILABLE, sqlstate_of, translated_errors
from payment_infrastructure.postgres.pool import acquire
from payment_infrastructure.serialization import envelope_to_bytes

_CREATE = """
WITH p AS (
    INSERT INTO payments (payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency,
                          status, client_id, trace_id, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
    RETURNING payment_id
), o AS (
    INSERT INTO payment_orders (payment_order_id, public_payment_order_id, payment_id, public_payment_id, seller_id,
                                amount_value, amount_currency, status, retry_count, created_at, updated_at)
    SELECT u.id, 'paymentorder-' || u.id, p.payment_id, $2, u.seller_id, u.amount_value, $6, $11, 0, $10, $10
    FROM p, unnest($12::bigint[], $13::text[], $14::bigint[]) AS u(id, seller_id, amount_value)
    RETURNING 1
), e AS (
    INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                              status, created_at)
    SELECT u.event_id, u.event_type, u.topic, u.aggregate_id, $9, u.parent_event_id, u.payload, 'NEW', $10
    FROM p, unnest($15::uuid[], $16::text[], $17::text[], $18::text[], $19::uuid[], $20::bytea[])
             AS u(event_id, event_type, topic, aggregate_id, parent_event_id, payload)
    RETURNING 1
)
SELECT (SELECT count(*) FROM p) AS payments, (SELECT count(*) FROM o) AS orders, (SELECT count(*) FROM e) AS events
"""

# A separate first statement, so a lock wait here (the key's first request has not committed) is told apart from
# any other lock wait. An expired key that is not purged yet is taken over as if it were new.
_CLAIM_KEY = """
INSERT INTO idempotency_keys (client_id, idempotency_key, request_hash, response_status, response_body,
                              payment_id, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (client_id, idempotency_key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, response_status = EXCLUDED.response_status,
        response_body = EXCLUDED.response_body, payment_id = EXCLUDED.payment_id,
        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
    WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
RETURNING 1
"""

_EXISTING_KEY = """
SELECT client_id, idempotency_key, request_hash, response_status, response_body, payment_id, created_at, expires_at
FROM idempotency_keys WHERE client_id = $1 AND idempotency_key = $2
"""

_GET_PAYMENT = "SELECT * FROM payments WHERE payment_id = $1"
_GET_ORDERS = "SELECT * FROM payment_orders WHERE payment_id = $1 ORDER BY payment_order_id"


class PostgresPaymentRepository:
    def __init__(
        self, pool: asyncpg.Pool, *, statement_timeout_ms: int, lock_timeout_ms: int, acquire_timeout_seconds: float
    ) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout_seconds
        # Simple-query protocol: BEGIN and both SET LOCALs in one round trip. Values are ints from settings.
        self._begin = (
            f"BEGIN; SET LOCAL statement_timeout = {int(statement_timeout_ms)}; "
            f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"
        )

    async def create(
        self,
        payment: Payment,
        outbox: Sequence[EventEnvelope],
        *,
        client_id: str,
        trace_id: str,
        idempotency: IdempotencyRecord | None,
    ) -> IdempotencyRecord | None:
        args = _create_args(payment, outbox, client_id=client_id, trace_id=trace_id)
        async with translated_errors(), acquire(self._pool, self._acquire_timeout) as conn:
            await conn.execute(self._begin)
            try:
                if idempotency is not None and not await _claim_key(conn, idempotency):
                    existing = await _existing_record(conn, idempotency.client_id, idempotency.key)
                    await conn.execute("COMMIT")
                    return existing
                counts = await conn.fetchrow(_CREATE, *args)
                expected = (1, len(payment.payment_orders), len(outbox))
                if counts is None or tuple(counts) != expected:
                    raise RuntimeError(f"partial create detected ({counts}); rolling back")
                await conn.execute("COMMIT")
                return None
            except BaseException:
                # Best effort: a dead connection is discarded by the pool anyway, and the original error matters.
                with contextlib.suppress(Exception):
                    if not conn.is_closed():
                        await conn.execute("ROLLBACK")
                raise

    async def get(self, payment_id: PaymentId) -> Payment | None:
        async with translated_errors(), acquire(self._pool, self._acquire_timeout) as conn:
            row = await conn.fetchrow(_GET_PAYMENT, payment_id.value)
            if row is None:
                return None
            order_rows = await conn.fetch(_GET_ORDERS, payment_id.value)
        return Payment(
            payment_id=payment_id,
            buyer_id=row["buyer_id"],
            order_id=row["order_id"],
            total_amount=Amount(row["amount_value"], Currency(row["amount_currency"])),
            status=PaymentStatus(row["status"]),
            created_at=row["created_at"],
            payment_orders=tuple(_order_from_row(r) for r in order_rows),
        )


def _create_args(payment: Payment, outbox: Sequence[EventEnvelope], *, client_id: str, trace_id: str) -> list[Any]:
    orders = payment.payment_orders
    return [
        payment.payment_id.value,
        payment.public_id,
        payment.buyer_id,
        payment.order_id,
        payment.total_amount.value,
        payment.total_amount.currency.value,
        payment.status.value,
        client_id,
        trace_id,
        payment.created_at,
        PaymentOrderStatus.INITIATED_PENDING.value,
        [o.payment_order_id.value for o in orders],
        [o.seller_id for o in orders],
        [o.amount.value for o in orders],
        [e.event_id for e in outbox],
        [e.event_type.value for e in outbox],
        [e.topic.value for e in outbox],
        [e.aggregate_id for e in outbox],
        [e.parent_event_id for e in outbox],
        [envelope_to_bytes(e) for e in outbox],
    ]


async def _claim_key(conn: asyncpg.Connection, record: IdempotencyRecord) -> bool:
    try:
        claimed = await conn.fetchval(
            _CLAIM_KEY,
            record.client_id,
            record.key,
            record.request_hash,
            record.response_status,
            record.response_body,
            record.payment_id,
            record.created_at,
            record.expires_at,
        )
    except asyncpg.PostgresError as error:
        if sqlstate_of(error) == LOCK_NOT_AVAILABLE:
            raise IdempotencyKeyInFlight("a request with this Idempotency-Key is still being processed") from error
        raise
    return claimed is not None


async def _existing_record(conn: asyncpg.Connection, client_id: str, key: str) -> IdempotencyRecord:
    row = await conn.fetchrow(_EXISTING_KEY, client_id, key)
    if row is None:
        raise RuntimeError("idempotency key vanished between claim and read")
    return IdempotencyRecord(
        client_id=row["client_id"],
        key=row["idempotency_key"],
        request_hash=row["request_hash"],
        response_status=row["response_status"],
        response_body=bytes(row["response_body"]),
        payment_id=row["payment_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def _order_from_row(row: asyncpg.Record) -> PaymentOrder:
    return PaymentOrder(
        payment_order_id=PaymentOrderId(row["payment_order_id"]),
        payment_id=PaymentId(row["payment_id"]),
        seller_id=row["seller_id"],
        amount=Amount(row["amount_value"], Currency(row["amount_currency"])),
        status=PaymentOrderStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        retry_count=row["retry_count"],
        retry_reason=row["retry_reason"],
        last_error_message=row["last_error_message"],
    )
