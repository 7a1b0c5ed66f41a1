"""Postgres adapters of the consumers: the attempt claim, the result transaction (with its ledger entries), the
status-check queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.payment_orders import ClaimedAttempt, DueStatusCheck, LockedOrder, ReconciliationEntry
from payment_domain.events import AnyEnvelope
from payment_domain.ledger import JournalEntry
from payment_domain.status import RETRYABLE, PaymentOrderStatus, PaymentStatus, roll_up
from payment_infrastructure.postgres.driver import driver_connection
from payment_infrastructure.postgres.errors import translated_errors
from payment_infrastructure.postgres.ledger_entries import insert_entries
from payment_infrastructure.postgres.rows import order_from_row
from payment_infrastructure.runtime.batcher import Batcher
from payment_infrastructure.serialization import envelope_to_bytes

_CHARGEABLE = sorted({PaymentOrderStatus.INITIATED_PENDING.value, *(s.value for s in RETRYABLE)})

# The claim and the result transaction run on the pooled connection's own asyncpg driver: they are the consumers'
# hot path, and SQLAlchemy's execution layer (a greenlet hop and result wrapping per statement) cost more CPU than
# the statements. asyncpg prepares each one once per connection. Everything else here stays on SQLAlchemy Core.
_CLAIM = """
    WITH previous AS (
        SELECT payment_order_id, psp_claim_token FROM payment_orders WHERE payment_order_id = $1 FOR UPDATE
    )
    UPDATE payment_orders o
       SET psp_claim_token = $3, psp_claim_expires_at = now() + make_interval(secs => $4),
           psp_call_count = o.psp_call_count + 1
      FROM previous
     WHERE o.payment_order_id = previous.payment_order_id
       AND o.retry_count = $2
       AND o.status = ANY($5::text[])
       AND (o.psp_claim_token IS NULL OR o.psp_claim_token = $3 OR o.psp_claim_expires_at < now())
    RETURNING o.*
"""

# The same claim for many orders at once (concurrent calls coalesced): each row is judged by exactly the single
# claim's rules, against its own attempt and token; rows are locked in id order, so two batches cannot deadlock.
_CLAIM_MANY = """
    WITH wanted AS (
        SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[]) AS w(id, attempt, token, lease)
    ), previous AS (
        SELECT o.payment_order_id FROM payment_orders o
         WHERE o.payment_order_id = ANY($1::bigint[])
         ORDER BY o.payment_order_id
           FOR UPDATE
    )
    UPDATE payment_orders o
       SET psp_claim_token = w.token, psp_claim_expires_at = now() + make_interval(secs => w.lease),
           psp_call_count = o.psp_call_count + 1
      FROM previous, wanted w
     WHERE o.payment_order_id = previous.payment_order_id
       AND w.id = o.payment_order_id
       AND o.retry_count = w.attempt
       AND o.status = ANY($5::text[])
       AND (o.psp_claim_token IS NULL OR o.psp_claim_token = w.token OR o.psp_claim_expires_at < now())
    RETURNING o.*
"""

_INBOX = """
    INSERT INTO processed_events (consumer_group, event_id, processed_at) VALUES ($1, $2, $3)
    ON CONFLICT DO NOTHING RETURNING 1
"""
_INBOX_MANY = """
    INSERT INTO processed_events (consumer_group, event_id, processed_at)
    SELECT DISTINCT $1::text, e, $3::timestamptz FROM unnest($2::uuid[]) AS e
    ON CONFLICT DO NOTHING RETURNING event_id
"""
_LOCK_PAYMENTS = """
    SELECT payment_id FROM payments
     WHERE payment_id IN (SELECT payment_id FROM payment_orders WHERE payment_order_id = ANY($1::bigint[]))
     ORDER BY payment_id FOR UPDATE
"""
_LOCK_ORDERS = (
    "SELECT * FROM payment_orders WHERE payment_order_id = ANY($1::bigint[]) ORDER BY payment_order_id FOR UPDATE"
)
_LOCK_PAYMENT = (
    "SELECT payment_id FROM payments WHERE payment_id = (SELECT payment_id FROM payment_orders "
    "WHERE payment_order_id = $1) FOR UPDATE"
)
_LOCK_ORDER = "SELECT * FROM payment_orders WHERE payment_order_id = $1 FOR UPDATE"
_SAVE = """
    UPDATE payment_orders
       SET status = $2, retry_count = $3, retry_reason = $4, last_error_message = $5,
           status_check_number = $6, updated_at = $7,
           psp_claim_token = NULL, psp_claim_expires_at = NULL,
           psp_call_count = CASE WHEN retry_count = $3 THEN psp_call_count ELSE 0 END
     WHERE payment_order_id = $1
"""
_OUTBOX = """
    INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                              status, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'NEW', $8)
"""
_SCHEDULE_CHECK = """
    INSERT INTO payment_order_status_checks (payment_order_id, attempt, check_number, scheduled_at, status,
                                             trace_id, created_at, updated_at)
    VALUES ($1, $2, $3, $4, 'SCHEDULED', $5, $6, $6)
    ON CONFLICT (payment_order_id, attempt, check_number) DO NOTHING
"""
_AUDIT = """
    INSERT INTO reconciliation_audit (payment_order_id, attempt, from_status, to_status, source, actor, note,
                                      created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_ORDER_STATUSES = "SELECT status FROM payment_orders WHERE payment_id = $1"
_SET_PAYMENT_STATUS = "UPDATE payments SET status = $1, updated_at = $2 WHERE payment_id = $3 AND status <> $1"

_CLAIM_CHECKS = text(
    """
    UPDATE payment_order_status_checks c
       SET lease_token = :token, lease_expires_at = now() + make_interval(secs => :lease), updated_at = now()
      FROM (SELECT id FROM payment_order_status_checks
             WHERE status = 'SCHEDULED' AND scheduled_at <= now()
               AND (lease_expires_at IS NULL OR lease_expires_at < now())
             ORDER BY scheduled_at
             LIMIT :limit
             FOR UPDATE SKIP LOCKED) due
     WHERE c.id = due.id
    RETURNING c.id, c.attempt, c.check_number, c.trace_id, c.payment_order_id
    """
)
_ORDERS_BY_ID = text("SELECT * FROM payment_orders WHERE payment_order_id = ANY(CAST(:ids AS bigint[]))")
_MARK_PUBLISHED = text(
    """
    UPDATE payment_order_status_checks SET status = 'PUBLISHED', lease_token = NULL, lease_expires_at = NULL,
           updated_at = now()
     WHERE id = ANY(CAST(:ids AS bigint[])) AND lease_token = :token
    """
)


@dataclass(frozen=True, slots=True)
class _Claim:
    payment_order_id: int
    attempt: int
    token: str
    lease_seconds: float


class PostgresPaymentOrderClaims:
    """Concurrent claims (a consumer batch's PSP calls) are coalesced into one statement for many orders
    (`Batcher`: distinct orders per statement, two statements in flight); alone, a claim is the single statement."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 32) -> None:
        self._engine = engine
        self._claims: Batcher[int, _Claim, ClaimedAttempt | None] = Batcher(
            self._claim_many, key=lambda claim: claim.payment_order_id, concurrency=2, max_batch=max_batch
        )

    async def claim_attempt(
        self, payment_order_id: int, *, attempt: int, claim_token: str, lease_seconds: float
    ) -> ClaimedAttempt | None:
        return await self._claims.submit(_Claim(payment_order_id, attempt, claim_token, float(lease_seconds)))

    async def drain(self) -> None:
        """Wait for the claims being made (at shutdown, before the engine goes)."""
        await self._claims.drain()

    async def _claim_many(self, claims: Sequence[_Claim]) -> list[ClaimedAttempt | None]:
        # One statement, so no transaction of our own: the row locks and the updates commit together.
        async with translated_errors(), driver_connection(self._engine) as conn:
            if len(claims) == 1:
                (one,) = claims
                row = await conn.fetchrow(
                    _CLAIM, one.payment_order_id, one.attempt, one.token, one.lease_seconds, _CHARGEABLE
                )
                rows = [] if row is None else [row]
            else:
                rows = await conn.fetch(
                    _CLAIM_MANY,
                    [claim.payment_order_id for claim in claims],
                    [claim.attempt for claim in claims],
                    [claim.token for claim in claims],
                    [claim.lease_seconds for claim in claims],
                    _CHARGEABLE,
                )
        claimed = {row["payment_order_id"]: row for row in rows}
        return [
            None
            if (row := claimed.get(claim.payment_order_id)) is None
            else ClaimedAttempt(order=order_from_row(row), call_number=row["psp_call_count"])
            for claim in claims
        ]


def _locked(row: asyncpg.Record) -> LockedOrder:
    return LockedOrder(
        order=order_from_row(row), status_check_number=row["status_check_number"], psp_calls=row["psp_call_count"]
    )


class PostgresResultTransaction:
    def __init__(self, conn: asyncpg.Connection, now: datetime) -> None:
        self._conn = conn
        self.now = now

    async def first_time(self, consumer: str, event_id: str, now: datetime) -> bool:
        return await self._conn.fetchval(_INBOX, consumer, event_id, now) is not None

    async def first_times(self, consumer: str, event_ids: Sequence[str], now: datetime) -> set[str]:
        if not event_ids:
            return set()
        rows = await self._conn.fetch(_INBOX_MANY, consumer, list(event_ids), now)
        recorded = {row["event_id"] for row in rows}
        return {e for e in event_ids if uuid.UUID(e) in recorded}

    async def lock_many(self, payment_order_ids: Sequence[int]) -> dict[int, LockedOrder]:
        # Both sets in id order (the ORDER BY runs below the row locks): two batches meet in the same order.
        ids = sorted(set(payment_order_ids))
        await self._conn.execute(_LOCK_PAYMENTS, ids)
        return {row["payment_order_id"]: _locked(row) for row in await self._conn.fetch(_LOCK_ORDERS, ids)}

    async def lock(self, payment_order_id: int) -> LockedOrder | None:
        # Payment first, then order: every applier locks in this order, so sibling orders cannot deadlock.
        await self._conn.execute(_LOCK_PAYMENT, payment_order_id)
        row = await self._conn.fetchrow(_LOCK_ORDER, payment_order_id)
        return _locked(row) if row is not None else None

    async def save(
        self,
        payment_order_id: int,
        *,
        status: PaymentOrderStatus,
        attempt: int,
        reason: str | None,
        error: str | None,
        status_check_number: int,
        now: datetime,
    ) -> None:
        await self._conn.execute(
            _SAVE,
            payment_order_id,
            status.value,
            attempt,
            reason,
            error[:2000] if error else None,
            status_check_number,
            now,
        )

    async def add_events(self, envelopes: Sequence[AnyEnvelope]) -> None:
        for envelope in envelopes:
            await self._conn.execute(
                _OUTBOX,
                envelope.event_id,
                envelope.event_type.value,
                envelope.topic.value,
                envelope.aggregate_id,
                envelope.trace_id,
                envelope.parent_event_id,
                envelope_to_bytes(envelope),
                envelope.timestamp,
            )

    async def schedule_status_check(
        self, payment_order_id: int, *, attempt: int, check_number: int, due_at: datetime, trace_id: str, now: datetime
    ) -> None:
        await self._conn.execute(_SCHEDULE_CHECK, payment_order_id, attempt, check_number, due_at, trace_id[:64], now)

    async def roll_up(self, payment_id: int, now: datetime) -> PaymentStatus:
        rows = await self._conn.fetch(_ORDER_STATUSES, payment_id)
        status = roll_up(PaymentOrderStatus(r["status"]) for r in rows)
        await self._conn.execute(_SET_PAYMENT_STATUS, status.value, now, payment_id)
        return status

    async def record_reconciliation(self, entry: ReconciliationEntry) -> None:
        await self._conn.execute(
            _AUDIT,
            entry.payment_order_id,
            entry.attempt,
            entry.from_status.value,
            entry.to_status.value,
            entry.source,
            entry.actor[:255],
            entry.note,
            entry.at,
        )

    async def post_entries(self, entries: Sequence[JournalEntry], now: datetime) -> None:
        await insert_entries(self._conn, entries, now)


class PostgresResultStore:
    def __init__(self, engine: AsyncEngine, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
        self._engine = engine
        # One round trip: both timeouts for this transaction only, and the database's clock for everything it writes.
        self._begin = (
            f"SELECT set_config('statement_timeout', '{int(statement_timeout_ms)}', true), "
            f"set_config('lock_timeout', '{int(lock_timeout_ms)}', true), now() AS now"
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresResultTransaction]:
        async with translated_errors(), driver_connection(self._engine) as conn, conn.transaction():
            now = (await conn.fetchrow(self._begin))["now"]
            yield PostgresResultTransaction(conn, now)


class PostgresStatusCheckQueue:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[DueStatusCheck]:
        token = str(uuid.uuid4())
        async with translated_errors(), self._engine.begin() as conn:
            claimed = (
                await conn.execute(_CLAIM_CHECKS, {"token": token, "lease": lease_seconds, "limit": limit})
            ).all()
            if not claimed:
                return []
            orders = {
                row.payment_order_id: order_from_row(row._mapping)
                for row in (await conn.execute(_ORDERS_BY_ID, {"ids": [c.payment_order_id for c in claimed]})).all()
            }
        return [
            DueStatusCheck(
                check_id=c.id,
                lease_token=token,
                order=orders[c.payment_order_id],
                attempt=c.attempt,
                check_number=c.check_number,
                trace_id=c.trace_id,
            )
            for c in claimed
        ]

    async def mark_published(self, checks: Sequence[DueStatusCheck]) -> int:
        marked = 0
        by_token: dict[str, list[int]] = {}
        for check in checks:
            by_token.setdefault(check.lease_token, []).append(check.check_id)
        async with translated_errors(), self._engine.begin() as conn:
            for token, ids in by_token.items():
                marked += (await conn.execute(_MARK_PUBLISHED, {"ids": ids, "token": token})).rowcount
        return marked


__all__ = [
    "PostgresPaymentOrderClaims",
    "PostgresResultStore",
    "PostgresResultTransaction",
    "PostgresStatusCheckQueue",
    "order_from_row",
]
