"""Postgres adapters of the consumers: the attempt claim, the result transaction, the status-check queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payment_application.ports.payment_orders import ClaimedAttempt, DueStatusCheck, LockedOrder, ReconciliationEntry
from payment_domain.events import AnyEnvelope
from payment_domain.status import RETRYABLE, PaymentOrderStatus, PaymentStatus, roll_up
from payment_infrastructure.postgres.errors import translated_errors
from payment_infrastructure.postgres.rows import order_from_row
from payment_infrastructure.serialization import envelope_to_bytes

_CHARGEABLE = sorted({PaymentOrderStatus.INITIATED_PENDING.value, *(s.value for s in RETRYABLE)})

_CLAIM = text(
    """
    WITH previous AS (
        SELECT payment_order_id, psp_claim_token FROM payment_orders WHERE payment_order_id = :id FOR UPDATE
    )
    UPDATE payment_orders o
       SET psp_claim_token = :token, psp_claim_expires_at = now() + make_interval(secs => :lease),
           psp_call_count = o.psp_call_count + 1
      FROM previous
     WHERE o.payment_order_id = previous.payment_order_id
       AND o.retry_count = :attempt
       AND o.status = ANY(CAST(:chargeable AS text[]))
       AND (o.psp_claim_token IS NULL OR o.psp_claim_token = :token OR o.psp_claim_expires_at < now())
    RETURNING o.*
    """
)

_INBOX = text(
    """
    INSERT INTO processed_events (consumer_group, event_id, processed_at) VALUES (:consumer, :event_id, :now)
    ON CONFLICT DO NOTHING RETURNING 1
    """
)
_LOCK_PAYMENT = text(
    "SELECT payment_id FROM payments WHERE payment_id = (SELECT payment_id FROM payment_orders "
    "WHERE payment_order_id = :id) FOR UPDATE"
)
_LOCK_ORDER = text("SELECT * FROM payment_orders WHERE payment_order_id = :id FOR UPDATE")
_SAVE = text(
    """
    UPDATE payment_orders
       SET status = :status, retry_count = :attempt, retry_reason = :reason, last_error_message = :error,
           status_check_number = :check_number, updated_at = :now,
           psp_claim_token = NULL, psp_claim_expires_at = NULL,
           psp_call_count = CASE WHEN retry_count = :attempt THEN psp_call_count ELSE 0 END
     WHERE payment_order_id = :id
    """
)
_OUTBOX = text(
    """
    INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                              status, created_at)
    VALUES (:event_id, :event_type, :topic, :aggregate_id, :trace_id, :parent_event_id, :payload, 'NEW', :created_at)
    """
)
_SCHEDULE_CHECK = text(
    """
    INSERT INTO payment_order_status_checks (payment_order_id, attempt, check_number, scheduled_at, status,
                                             trace_id, created_at, updated_at)
    VALUES (:id, :attempt, :check_number, :due_at, 'SCHEDULED', :trace_id, :now, :now)
    ON CONFLICT (payment_order_id, attempt, check_number) DO NOTHING
    """
)
_AUDIT = text(
    """
    INSERT INTO reconciliation_audit (payment_order_id, attempt, from_status, to_status, source, actor, note,
                                      created_at)
    VALUES (:id, :attempt, :from_status, :to_status, :source, :actor, :note, :at)
    """
)
_ORDER_STATUSES = text("SELECT status FROM payment_orders WHERE payment_id = :payment_id")
_SET_PAYMENT_STATUS = text(
    "UPDATE payments SET status = :status, updated_at = :now WHERE payment_id = :payment_id AND status <> :status"
)

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


class PostgresPaymentOrderClaims:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim_attempt(
        self, payment_order_id: int, *, attempt: int, claim_token: str, lease_seconds: float
    ) -> ClaimedAttempt | None:
        async with translated_errors(), self._engine.begin() as conn:
            row = (
                await conn.execute(
                    _CLAIM,
                    {
                        "id": payment_order_id,
                        "attempt": attempt,
                        "token": claim_token,
                        "lease": lease_seconds,
                        "chargeable": _CHARGEABLE,
                    },
                )
            ).first()
        if row is None:
            return None
        return ClaimedAttempt(order=order_from_row(row._mapping), call_number=row.psp_call_count)


class PostgresResultTransaction:
    def __init__(self, conn: AsyncConnection, now: datetime) -> None:
        self._conn = conn
        self.now = now

    async def first_time(self, consumer: str, event_id: str, now: datetime) -> bool:
        inserted = await self._conn.execute(_INBOX, {"consumer": consumer, "event_id": event_id, "now": now})
        return inserted.first() is not None

    async def lock(self, payment_order_id: int) -> LockedOrder | None:
        # Payment first, then order: every applier locks in this order, so sibling orders cannot deadlock.
        await self._conn.execute(_LOCK_PAYMENT, {"id": payment_order_id})
        row = (await self._conn.execute(_LOCK_ORDER, {"id": payment_order_id})).first()
        if row is None:
            return None
        return LockedOrder(
            order=order_from_row(row._mapping),
            status_check_number=row.status_check_number,
            psp_calls=row.psp_call_count,
        )

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
            {
                "id": payment_order_id,
                "status": status.value,
                "attempt": attempt,
                "reason": reason,
                "error": error[:2000] if error else None,
                "check_number": status_check_number,
                "now": now,
            },
        )

    async def add_events(self, envelopes: Sequence[AnyEnvelope]) -> None:
        for envelope in envelopes:
            await self._conn.execute(
                _OUTBOX,
                {
                    "event_id": envelope.event_id,
                    "event_type": envelope.event_type.value,
                    "topic": envelope.topic.value,
                    "aggregate_id": envelope.aggregate_id,
                    "trace_id": envelope.trace_id,
                    "parent_event_id": envelope.parent_event_id,
                    "payload": envelope_to_bytes(envelope),
                    "created_at": envelope.timestamp,
                },
            )

    async def schedule_status_check(
        self, payment_order_id: int, *, attempt: int, check_number: int, due_at: datetime, trace_id: str, now: datetime
    ) -> None:
        await self._conn.execute(
            _SCHEDULE_CHECK,
            {
                "id": payment_order_id,
                "attempt": attempt,
                "check_number": check_number,
                "due_at": due_at,
                "trace_id": trace_id[:64],
                "now": now,
            },
        )

    async def roll_up(self, payment_id: int, now: datetime) -> PaymentStatus:
        rows = (await self._conn.execute(_ORDER_STATUSES, {"payment_id": payment_id})).all()
        status = roll_up(PaymentOrderStatus(r.status) for r in rows)
        await self._conn.execute(_SET_PAYMENT_STATUS, {"status": status.value, "now": now, "payment_id": payment_id})
        return status

    async def record_reconciliation(self, entry: ReconciliationEntry) -> None:
        await self._conn.execute(
            _AUDIT,
            {
                "id": entry.payment_order_id,
                "attempt": entry.attempt,
                "from_status": entry.from_status.value,
                "to_status": entry.to_status.value,
                "source": entry.source,
                "actor": entry.actor[:255],
                "note": entry.note,
                "at": entry.at,
            },
        )


class PostgresResultStore:
    def __init__(self, engine: AsyncEngine, *, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
        self._engine = engine
        # One round trip: both timeouts for this transaction only, and the database's clock for everything it writes.
        self._begin = text(
            f"SELECT set_config('statement_timeout', '{int(statement_timeout_ms)}', true), "
            f"set_config('lock_timeout', '{int(lock_timeout_ms)}', true), now() AS now"
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresResultTransaction]:
        async with translated_errors(), self._engine.begin() as conn:
            started = (await conn.execute(self._begin)).one()
            yield PostgresResultTransaction(conn, started.now)


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
