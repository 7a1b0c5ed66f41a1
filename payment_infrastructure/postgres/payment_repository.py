"""PostgresPaymentRepository: one short transaction with local timeouts writes the idempotency claim (when a key is
given), then the payment, its orders and their outbox rows in ONE statement (data-modifying CTEs), so everything
is written together or not at all, in the same few round trips whatever the number of sellers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payment_application.errors import IdempotencyKeyInFlight
from payment_application.ports.payments import IdempotencyRecord
from payment_domain.events import EventEnvelope
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import Payment, PaymentOrder
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from payment_infrastructure.postgres.errors import LOCK_NOT_AVAILABLE, sqlstate_of, translated_errors
from payment_infrastructure.postgres.tables import idempotency_keys, payment_orders, payments
from payment_infrastructure.serialization import envelope_to_bytes

_INSERT_PAYMENT_TAIL = """
, p AS (
    INSERT INTO payments (payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency,
                          status, client_id, trace_id, created_at, updated_at)
    SELECT :payment_id, :public_payment_id, :buyer_id, :order_id, :amount_value, :currency,
           :status, :client_id, :trace_id, :created_at, :created_at
    FROM go
    RETURNING payment_id
), o AS (
    INSERT INTO payment_orders (payment_order_id, public_payment_order_id, payment_id, public_payment_id, seller_id,
                                amount_value, amount_currency, status, retry_count, created_at, updated_at)
    SELECT u.id, 'paymentorder-' || u.id, p.payment_id, :public_payment_id, u.seller_id,
           u.amount_value, :currency, :order_status, 0, :created_at, :created_at
    FROM p, unnest(CAST(:po_ids AS bigint[]), CAST(:po_sellers AS text[]), CAST(:po_amounts AS bigint[]))
             AS u(id, seller_id, amount_value)
    RETURNING 1
), e AS (
    INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                              status, created_at)
    SELECT u.event_id, u.event_type, u.topic, u.aggregate_id, :trace_id, u.parent_event_id, u.payload,
           'NEW', :created_at
    FROM p, unnest(CAST(:ev_ids AS uuid[]), CAST(:ev_types AS text[]), CAST(:ev_topics AS text[]),
                   CAST(:ev_aggregates AS text[]), CAST(:ev_parents AS uuid[]), CAST(:ev_payloads AS bytea[]))
             AS u(event_id, event_type, topic, aggregate_id, parent_event_id, payload)
    RETURNING 1
)
SELECT (SELECT count(*) FROM p) AS payments, (SELECT count(*) FROM o) AS orders, (SELECT count(*) FROM e) AS events
"""

_CREATE = text("WITH go AS (SELECT 1)" + _INSERT_PAYMENT_TAIL)

# A separate first statement, so a lock wait here (the key's first request has not committed) is told apart from
# any other lock wait. An expired key that is not purged yet is taken over as if it were new.
_CLAIM_KEY = text(
    """
INSERT INTO idempotency_keys (client_id, idempotency_key, request_hash, response_status, response_body,
                              payment_id, created_at, expires_at)
VALUES (:client_id, :idem_key, :request_hash, :response_status, :response_body, :payment_id, :created_at, :expires_at)
ON CONFLICT (client_id, idempotency_key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, response_status = EXCLUDED.response_status,
        response_body = EXCLUDED.response_body, payment_id = EXCLUDED.payment_id,
        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
    WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
RETURNING 1
"""
)

_SET_LOCAL_TIMEOUTS = text(
    "SELECT set_config('statement_timeout', :statement_ms, true), set_config('lock_timeout', :lock_ms, true)"
)


class PostgresPaymentRepository:
    def __init__(self, engine: AsyncEngine, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
        self._engine = engine
        self._timeouts = {"statement_ms": f"{statement_timeout_ms}ms", "lock_ms": f"{lock_timeout_ms}ms"}

    async def create(
        self,
        payment: Payment,
        outbox: Sequence[EventEnvelope],
        *,
        client_id: str,
        trace_id: str,
        idempotency: IdempotencyRecord | None,
    ) -> IdempotencyRecord | None:
        params = _create_params(payment, outbox, client_id=client_id, trace_id=trace_id)
        async with translated_errors(), self._engine.begin() as conn:
            await conn.execute(_SET_LOCAL_TIMEOUTS, self._timeouts)
            if idempotency is not None and not await _claim_key(conn, idempotency):
                return await _existing_record(conn, idempotency.client_id, idempotency.key)
            counts = (await conn.execute(_CREATE, params)).one()
            expected = (1, len(payment.payment_orders), len(outbox))
            if (counts.payments, counts.orders, counts.events) != expected:
                raise RuntimeError(f"partial create detected ({counts}); rolling back")
            return None

    async def get(self, payment_id: PaymentId) -> Payment | None:
        async with translated_errors(), self._engine.connect() as conn:
            await conn.execute(_SET_LOCAL_TIMEOUTS, self._timeouts)
            row = (await conn.execute(select(payments).where(payments.c.payment_id == payment_id.value))).first()
            if row is None:
                return None
            order_rows = (
                await conn.execute(
                    select(payment_orders)
                    .where(payment_orders.c.payment_id == payment_id.value)
                    .order_by(payment_orders.c.payment_order_id)
                )
            ).all()
        orders = tuple(_order_from_row(r._mapping) for r in order_rows)
        return Payment(
            payment_id=payment_id,
            buyer_id=row.buyer_id,
            order_id=row.order_id,
            total_amount=Amount(row.amount_value, Currency(row.amount_currency)),
            status=PaymentStatus(row.status),
            created_at=row.created_at,
            payment_orders=orders,
        )


def _create_params(
    payment: Payment, outbox: Sequence[EventEnvelope], *, client_id: str, trace_id: str
) -> dict[str, Any]:
    orders = payment.payment_orders
    return {
        "payment_id": payment.payment_id.value,
        "public_payment_id": payment.public_id,
        "buyer_id": payment.buyer_id,
        "order_id": payment.order_id,
        "amount_value": payment.total_amount.value,
        "currency": payment.total_amount.currency.value,
        "status": payment.status.value,
        "order_status": PaymentOrderStatus.INITIATED_PENDING.value,
        "client_id": client_id,
        "trace_id": trace_id,
        "created_at": payment.created_at,
        "po_ids": [o.payment_order_id.value for o in orders],
        "po_sellers": [o.seller_id for o in orders],
        "po_amounts": [o.amount.value for o in orders],
        "ev_ids": [e.event_id for e in outbox],
        "ev_types": [e.event_type.value for e in outbox],
        "ev_topics": [e.topic.value for e in outbox],
        "ev_aggregates": [e.aggregate_id for e in outbox],
        "ev_parents": [e.parent_event_id for e in outbox],
        "ev_payloads": [envelope_to_bytes(e) for e in outbox],
    }


async def _claim_key(conn: AsyncConnection, record: IdempotencyRecord) -> bool:
    try:
        claimed = await conn.execute(
            _CLAIM_KEY,
            {
                "client_id": record.client_id,
                "idem_key": record.key,
                "request_hash": record.request_hash,
                "response_status": record.response_status,
                "response_body": record.response_body,
                "payment_id": record.payment_id,
                "created_at": record.created_at,
                "expires_at": record.expires_at,
            },
        )
    except Exception as error:
        if sqlstate_of(error) == LOCK_NOT_AVAILABLE:
            raise IdempotencyKeyInFlight("a request with this Idempotency-Key is still being processed") from error
        raise
    return claimed.first() is not None


async def _existing_record(conn: AsyncConnection, client_id: str, key: str) -> IdempotencyRecord:
    row = (
        await conn.execute(
            select(idempotency_keys).where(
                idempotency_keys.c.client_id == client_id, idempotency_keys.c.idempotency_key == key
            )
        )
    ).one()
    return IdempotencyRecord(
        client_id=row.client_id,
        key=row.idempotency_key,
        request_hash=row.request_hash,
        response_status=row.response_status,
        response_body=bytes(row.response_body),
        payment_id=row.payment_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def _order_from_row(row: Any) -> PaymentOrder:
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
