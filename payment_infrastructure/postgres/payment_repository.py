"""PostgresPaymentRepository: creates are ONE statement (data-modifying CTEs over `unnest` arrays) that writes
the idempotency claims, the payments, their orders and their outbox rows together or not at all, in one round trip
whatever the number of payments or sellers; concurrent creates share it through a group commit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from payment_application.errors import DependencyUnavailable, IdempotencyKeyInFlight, OrderAlreadyHasPayment
from payment_application.ports.payments import IdempotencyRecord
from payment_domain.events import AnyEnvelope
from payment_domain.ids import PaymentId
from payment_domain.money import Amount, Currency
from payment_domain.payment import Payment
from payment_domain.status import PaymentStatus
from payment_infrastructure.observability import tracing
from payment_infrastructure.postgres.errors import (
    DRIVER_OWN_ERRORS,
    lock_timeout_on_row,
    order_already_paid,
    rolled_back,
    translate,
    translate_sent,
    translated_errors,
)
from payment_infrastructure.postgres.group_commit import GroupCommit
from payment_infrastructure.postgres.pool import acquire
from payment_infrastructure.postgres.rows import order_from_row
from payment_infrastructure.serialization import envelope_to_bytes

_KEY_RECORD = ("request_hash", "response_status", "response_body", "payment_id", "created_at", "expires_at")
# A live key keeps its record (the update writes back what is there, so RETURNING can hand it to us without a read
# of the table); an expired key that is not purged yet is taken over as if it were new.
_TAKE_OVER_IF_EXPIRED = ",\n            ".join(
    f"{column} = CASE WHEN k.expires_at <= EXCLUDED.created_at THEN EXCLUDED.{column} ELSE k.{column} END"
    for column in _KEY_RECORD
)

# Many payments in one statement, so in one transaction: every item's idempotency claim first (in key order, so
# two concurrent batches take their locks in the same order), then the payments that own their key (its record
# names their payment id) or carry none (in order-id order, for the same reason: a payment waits for another
# transaction's payment for the same order, then is refused by the one-payment-per-order index), with their orders
# and outbox rows. The answer has one row per item:
# written, or the key's record, as committed by its first request even if that committed while we waited for its
# lock. The statement reads no table: a plan made while a table was small can never turn into a scan of it.
_CREATE_MANY = f"""
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[],
                         $8::text[], $9::text[], $10::timestamptz[], $11::text[], $12::text[], $13::int[],
                         $14::bytea[], $15::timestamptz[], $29::text[]) WITH ORDINALITY
        AS i(payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency, status, client_id,
             trace_id, created_at, idempotency_key, request_hash, response_status, response_body, expires_at,
             traceparent, position)
), claim AS (
    INSERT INTO idempotency_keys AS k (client_id, idempotency_key, request_hash, response_status, response_body,
                                       payment_id, created_at, expires_at)
    SELECT client_id, idempotency_key, request_hash, response_status, response_body, payment_id, created_at,
           expires_at
    FROM input WHERE idempotency_key IS NOT NULL
    ORDER BY client_id, idempotency_key
    ON CONFLICT (client_id, idempotency_key) DO UPDATE
        SET {_TAKE_OVER_IF_EXPIRED}
    RETURNING client_id, idempotency_key, {", ".join(_KEY_RECORD)}
), go AS (
    SELECT * FROM input WHERE idempotency_key IS NULL OR payment_id IN (SELECT payment_id FROM claim)
), p AS (
    INSERT INTO payments (payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency,
                          status, client_id, trace_id, created_at, updated_at)
    SELECT payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency, status,
           client_id, trace_id, created_at, created_at
    FROM go
    ORDER BY client_id, order_id
), o AS (
    INSERT INTO payment_orders (payment_order_id, public_payment_order_id, payment_id, public_payment_id, seller_id,
                                amount_value, amount_currency, status, retry_count, created_at, updated_at)
    SELECT u.id, u.public_id, u.payment_id, go.public_payment_id, u.seller_id, u.amount_value, go.amount_currency,
           u.status, 0, go.created_at, go.created_at
    FROM unnest($16::bigint[], $17::text[], $18::bigint[], $19::text[], $20::bigint[], $21::text[])
             AS u(id, public_id, payment_id, seller_id, amount_value, status)
    JOIN go USING (payment_id)
), e AS (
    INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                              status, created_at, traceparent)
    SELECT u.event_id, u.event_type, u.topic, u.aggregate_id, go.trace_id, u.parent_event_id, u.payload, 'NEW',
           go.created_at, go.traceparent
    FROM unnest($22::bigint[], $23::uuid[], $24::text[], $25::text[], $26::text[], $27::uuid[], $28::bytea[])
             AS u(payment_id, event_id, event_type, topic, aggregate_id, parent_event_id, payload)
    JOIN go USING (payment_id)
)
SELECT go.payment_id IS NOT NULL AS written, c.client_id, c.idempotency_key, c.request_hash, c.response_status,
       c.response_body, c.payment_id, c.created_at, c.expires_at
FROM input i
LEFT JOIN go USING (payment_id)
LEFT JOIN claim c ON go.payment_id IS NULL AND c.client_id = i.client_id AND c.idempotency_key = i.idempotency_key
ORDER BY i.position
"""

# Served by the unique index that enforces one payment per (client, order).
_PAYMENT_OF_ORDER = "SELECT payment_id FROM payments WHERE client_id = $1 AND order_id = $2"

# One statement, so the payment's status and its orders' statuses come from one snapshot: read in two, a GET could
# see every order final and the payment not yet rolled up (the order's commit landing between the two reads).
_GET_PAYMENT = """
    SELECT p.buyer_id AS p_buyer_id, p.order_id AS p_order_id, p.amount_value AS p_amount_value,
           p.amount_currency AS p_amount_currency, p.status AS p_status, p.created_at AS p_created_at, o.*
      FROM payments p LEFT JOIN payment_orders o ON o.payment_id = p.payment_id
     WHERE p.payment_id = $1
     ORDER BY o.payment_order_id
"""


@dataclass(frozen=True, slots=True)
class PaymentWrite:
    """One create: what the use case handed the repository."""

    payment: Payment
    outbox: Sequence[AnyEnvelope]
    client_id: str
    trace_id: str
    idempotency: IdempotencyRecord | None
    traceparent: str | None = None  # the create's span, stored with the outbox rows for the dispatcher to go on

    def conflict_key(self) -> tuple[str, str] | None:
        return None if self.idempotency is None else (self.client_id, self.idempotency.key)


WriteResult = IdempotencyRecord | None


class PostgresPaymentRepository:
    """Creates go through a group commit (`group_commit.GroupCommit`): concurrent creates share a transaction.
    Statement and lock timeouts are set on this pool's connections (see `pool.create_pool`), so they bound
    each transaction, which is one statement."""

    def __init__(self, pool: asyncpg.Pool, *, acquire_timeout_seconds: float, writers: int, max_batch: int) -> None:
        self._pool = pool
        self._acquire_timeout = acquire_timeout_seconds
        self._writes: GroupCommit[PaymentWrite, WriteResult, asyncpg.Connection] = GroupCommit(
            connect=self._connection,
            write=write_payments,
            writers=writers,
            max_batch=max_batch,
            queue_timeout_seconds=acquire_timeout_seconds,
            conflict_key=PaymentWrite.conflict_key,
        )

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with translated_errors(), acquire(self._pool, self._acquire_timeout) as conn:
            yield conn

    async def create(
        self,
        payment: Payment,
        outbox: Sequence[AnyEnvelope],
        *,
        client_id: str,
        trace_id: str,
        idempotency: IdempotencyRecord | None,
    ) -> IdempotencyRecord | None:
        with tracing.span(
            "payment create transaction", attributes={"payment.id": str(payment.payment_id.value)}
        ) as created:
            write = PaymentWrite(payment, outbox, client_id, trace_id, idempotency, tracing.traceparent_of(created))
            return await self._writes.submit(write)

    @property
    def queued_creates(self) -> int:
        return self._writes.queued

    async def close(self) -> None:
        """Finish the creates already queued (the pool must still be open)."""
        await self._writes.close()

    async def get(self, payment_id: PaymentId) -> Payment | None:
        async with translated_errors(), acquire(self._pool, self._acquire_timeout) as conn:
            rows = await conn.fetch(_GET_PAYMENT, payment_id.value)
        if not rows:
            return None
        row = rows[0]
        return Payment(
            payment_id=payment_id,
            buyer_id=row["p_buyer_id"],
            order_id=row["p_order_id"],
            total_amount=Amount(row["p_amount_value"], Currency(row["p_amount_currency"])),
            status=PaymentStatus(row["p_status"]),
            created_at=row["p_created_at"],
            payment_orders=tuple(order_from_row(r) for r in rows if r["payment_order_id"] is not None),
        )


async def write_payments(
    conn: asyncpg.Connection, writes: Sequence[PaymentWrite]
) -> Sequence[WriteResult | BaseException]:
    """Write a batch in one transaction. If the database refuses it for something one item may have caused (a
    key another transaction holds, an order already paid, a constraint), each item is written again on its own,
    so only that item fails. Timeouts and lost connections fail the batch: they are the database's state, not an
    item's; a connection lost once the statement was sent leaves every item's outcome unknown."""
    if conn.is_closed():
        raise _not_sent()
    try:
        return await _write(conn, writes)
    except _DRIVER_ERRORS as error:
        if len(writes) == 1:
            failure = await _failure(conn, error, writes[0])
        elif not _item_may_have_caused(error):
            failure = translate_sent(error)
        else:
            failure = None
        if failure is error:
            raise
        if failure is not None:
            raise failure from error
    # One by one, each with its own answer: a failure from here on must not be reported for an item written before.
    results: list[WriteResult | BaseException] = []
    for write in writes:
        if conn.is_closed():  # lost under an earlier item: this one was never sent
            results.append(_not_sent())
            continue
        try:
            results.extend(await _write(conn, [write]))
        except _DRIVER_ERRORS as error:
            results.append(await _failure(conn, error, write))
    return results


# What a statement on an open connection can raise: the server's errors (asyncpg counts a connection that dies
# under the statement among them), the socket's, and the driver's own when a server crash left the connection's
# protocol mid-exchange ("cannot switch to state 12; another operation (2) is in progress").
_DRIVER_ERRORS = (asyncpg.PostgresError, OSError, TimeoutError, *DRIVER_OWN_ERRORS)


def _not_sent() -> DependencyUnavailable:
    return DependencyUnavailable("database", "the connection was lost before the payment was sent")


def _item_may_have_caused(error: BaseException) -> bool:
    """A lock timeout on a row (a key another request holds) may be one item's doing; one on a whole table (DDL or
    maintenance holding it) is the database's state, like any timeout."""
    return rolled_back(error) and (
        lock_timeout_on_row(error) is not None or order_already_paid(error) or translate(error) is error
    )


async def _failure(conn: asyncpg.Connection, error: BaseException, write: PaymentWrite) -> BaseException:
    """What one write's failure means to its caller: its key is taken by a request still in flight, its order
    already has a payment, the database is unavailable or slow (nothing written), the outcome is unknown (the
    answer was lost), or (a bug) the error itself."""
    if not rolled_back(error):
        return translate_sent(error)
    if write.idempotency is not None and lock_timeout_on_row(error) == "idempotency_keys":
        return IdempotencyKeyInFlight("a request with this Idempotency-Key is still being processed")
    if order_already_paid(error):
        return await _order_already_paid(conn, write)
    return translate(error)


async def _order_already_paid(conn: asyncpg.Connection, write: PaymentWrite) -> BaseException:
    """The refusal names the payment that has the order (committed: the unique check waits for its writer)."""
    try:
        payment_id = await conn.fetchval(_PAYMENT_OF_ORDER, write.client_id, write.payment.order_id)
    except _DRIVER_ERRORS as error:
        # A read: whatever became of it, this create was refused and wrote nothing.
        return translate(error)
    if payment_id is None:
        return RuntimeError(f"order {write.payment.order_id} was refused as paid, but has no payment")
    return OrderAlreadyHasPayment(write.payment.order_id, PaymentId(payment_id))


async def _write(conn: asyncpg.Connection, writes: Sequence[PaymentWrite]) -> list[WriteResult]:
    rows = await conn.fetch(_CREATE_MANY, *_create_args(writes))
    results: list[WriteResult] = []
    for row in rows:
        if row["written"]:
            results.append(None)
        elif row["request_hash"] is not None:
            results.append(_record(row))
        else:
            raise RuntimeError("a payment was neither written nor given its idempotency key's record")
    return results


def _create_args(writes: Sequence[PaymentWrite]) -> list[Any]:
    payments = [w.payment for w in writes]
    keys = [w.idempotency for w in writes]
    orders = [(o, w.payment) for w in writes for o in w.payment.payment_orders]
    events = [(e, w.payment) for w in writes for e in w.outbox]
    return [
        [p.payment_id.value for p in payments],
        [p.public_id for p in payments],
        [p.buyer_id for p in payments],
        [p.order_id for p in payments],
        [p.total_amount.value for p in payments],
        [p.total_amount.currency.value for p in payments],
        [p.status.value for p in payments],
        [w.client_id for w in writes],
        [w.trace_id for w in writes],
        [p.created_at for p in payments],
        [k.key if k else None for k in keys],
        [k.request_hash if k else None for k in keys],
        [k.response_status if k else None for k in keys],
        [k.response_body if k else None for k in keys],
        [k.expires_at if k else None for k in keys],
        [o.payment_order_id.value for o, _ in orders],
        [o.public_id for o, _ in orders],
        [p.payment_id.value for _, p in orders],
        [o.seller_id for o, _ in orders],
        [o.amount.value for o, _ in orders],
        [o.status.value for o, _ in orders],
        [p.payment_id.value for _, p in events],
        [e.event_id for e, _ in events],
        [e.event_type.value for e, _ in events],
        [e.topic.value for e, _ in events],
        [e.aggregate_id for e, _ in events],
        [e.parent_event_id for e, _ in events],
        [envelope_to_bytes(e) for e, _ in events],
        [w.traceparent for w in writes],
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
