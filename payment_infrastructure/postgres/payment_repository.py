"""PostgresPaymentRepository: a create is ONE statement (data-modifying CTEs over `unnest` arrays) that writes the
idempotency claim, the payment, its orders and their outbox rows together or not at all, in one round trip
whatever the number of sellers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from payment_application.errors import IdempotencyKeyInFlight
from payment_application.ports.payments import IdempotencyRecord
from payment_domain.events import EventEnvelope
from payment_domain.ids import PaymentId
from payment_domain.money import Amount, Currency
from payment_domain.payment import Payment
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from payment_infrastructure.postgres.errors import LOCK_NOT_AVAILABLE, sqlstate_of, translated_errors
from payment_infrastructure.postgres.pool import acquire
from payment_infrastructure.postgres.rows import order_from_row
from payment_infrastructure.serialization import envelope_to_bytes

_PAYMENT_ROWS = """
p AS (
    INSERT INTO payments (payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency,
                          status, client_id, trace_id, created_at, updated_at)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10 FROM go
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
)"""

# One statement is one transaction: everything is written or nothing, in a single round trip.
_CREATE = (
    "WITH go AS (SELECT 1),"
    + _PAYMENT_ROWS
    + """
SELECT (SELECT count(*) FROM p) AS payments
"""
)

# With a key: the claim decides whether anything else is written. An expired key that is not purged yet is taken
# over as if it were new. A key committed before this statement began comes back in the same answer; one whose
# first request committed while we waited for it is read by a second statement.
_CREATE_KEYED = (
    """
WITH claim AS (
    INSERT INTO idempotency_keys (client_id, idempotency_key, request_hash, response_status, response_body,
                                  payment_id, created_at, expires_at)
    VALUES ($8, $21, $22, $23, $24, $1, $10, $25)
    ON CONFLICT (client_id, idempotency_key) DO UPDATE
        SET request_hash = EXCLUDED.request_hash, response_status = EXCLUDED.response_status,
            response_body = EXCLUDED.response_body, payment_id = EXCLUDED.payment_id,
            created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
        WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
    RETURNING 1
), go AS (SELECT 1 FROM claim),"""
    + _PAYMENT_ROWS
    + """
SELECT (SELECT count(*) FROM p) AS payments, k.client_id, k.idempotency_key, k.request_hash, k.response_status,
       k.response_body, k.payment_id, k.created_at, k.expires_at
FROM (SELECT 1) AS one
LEFT JOIN idempotency_keys k ON k.client_id = $8 AND k.idempotency_key = $21 AND NOT EXISTS (SELECT 1 FROM claim)
"""
)

_EXISTING_KEY = """
SELECT client_id, idempotency_key, request_hash, response_status, response_body, payment_id, created_at, expires_at
FROM idempotency_keys WHERE client_id = $1 AND idempotency_key = $2
"""

_GET_PAYMENT = "SELECT * FROM payments WHERE payment_id = $1"
_GET_ORDERS = "SELECT * FROM payment_orders WHERE payment_id = $1 ORDER BY payment_order_id"


class PostgresPaymentRepository:
    """Statement and lock timeouts are set on this pool's connections (see `pool.create_pool`), so they bound
    the one statement that is each create's whole transaction."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout_seconds: float) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout_seconds

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
            if idempotency is None:
                await conn.fetchval(_CREATE, *args)
                return None
            args += [
                idempotency.key,
                idempotency.request_hash,
                idempotency.response_status,
                idempotency.response_body,
                idempotency.expires_at,
            ]
            try:
                row = await conn.fetchrow(_CREATE_KEYED, *args)
            except asyncpg.PostgresError as error:
                if sqlstate_of(error) == LOCK_NOT_AVAILABLE:
                    raise IdempotencyKeyInFlight(
                        "a request with this Idempotency-Key is still being processed"
                    ) from error
                raise
            if row is None or row["payments"] == 1:
                return None
            if row["request_hash"] is not None:
                return _record(row)
            existing = await conn.fetchrow(_EXISTING_KEY, idempotency.client_id, idempotency.key)
            if existing is None:
                raise RuntimeError("idempotency key vanished between claim and read")
            return _record(existing)

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
            payment_orders=tuple(order_from_row(r) for r in order_rows),
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


def _record(row: asyncpg.Record) -> IdempotencyRecord:
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
