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
from payment_infrastructure.postgres.driver import bounded_transaction, driver_connection
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
# Every order of the locked payments, in id order: the ones asked for, and their siblings, whose statuses the
# roll-up needs. An order's status changes only under its payment's lock, so what is read here stays true until
# commit, except for what this transaction itself writes.
_LOCK_ORDERS = "SELECT * FROM payment_orders WHERE payment_id = ANY($1::bigint[]) ORDER BY payment_order_id FOR UPDATE"
_LOCK_PAYMENT = (
    "SELECT payment_id FROM payments WHERE payment_id = (SELECT payment_id FROM payment_orders "
    "WHERE payment_order_id = $1) FOR UPDATE"
)
_SAVE_MANY = """
    UPDATE payment_orders AS o
       SET status = v.status, retry_count = v.attempt, retry_reason = v.reason, last_error_message = v.error,
           status_check_number = v.check_number, updated_at = v.now,
           psp_claim_token = NULL, psp_claim_expires_at = v.calls_until,
           psp_call_count = CASE WHEN o.retry_count = v.attempt THEN o.psp_call_count ELSE 0 END
      FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::int[], $7::timestamptz[],
                  $8::timestamptz[])
           AS v(id, status, attempt, reason, error, check_number, now, calls_until)
     WHERE o.payment_order_id = v.id
"""
_OUTBOX_MANY = """
    INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                              status, created_at)
    SELECT e, t, tp, a, tr, pe, pl, 'NEW', c
      FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::bytea[],
                  $8::timestamptz[]) AS v(e, t, tp, a, tr, pe, pl, c)
"""
_SCHEDULE_CHECKS = """
    INSERT INTO payment_order_status_checks (payment_order_id, attempt, check_number, scheduled_at, status,
                                             trace_id, created_at, updated_at)
    SELECT id, attempt, check_number, due_at, 'SCHEDULED', trace_id, now, now
      FROM unnest($1::bigint[], $2::int[], $3::int[], $4::timestamptz[], $5::text[], $6::timestamptz[])
           AS v(id, attempt, check_number, due_at, trace_id, now)
    ON CONFLICT (payment_order_id, attempt, check_number) DO NOTHING
"""
_AUDIT = """
    INSERT INTO reconciliation_audit (payment_order_id, attempt, from_status, to_status, source, actor, note,
                                      created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_ORDER_STATUSES = "SELECT payment_order_id, status FROM payment_orders WHERE payment_id = $1"
_SET_PAYMENT_STATUSES = """
    UPDATE payments AS p SET status = v.status, updated_at = v.now
      FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS v(id, status, now)
     WHERE p.payment_id = v.id AND p.status <> v.status
"""

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
    (`Batcher`: distinct orders per statement, two statements in flight); alone, a claim is the single statement.

    The statement is bounded by `statement_timeout_ms` and its row locks by `lock_timeout_ms`: one order locked
    elsewhere (by hand, by a long transaction) fails its batch with a lock timeout, and the batch's claims are
    then made one by one, so only that order's claim waits (retried in place as a dependency failure)."""

    def __init__(
        self, engine: AsyncEngine, *, statement_timeout_ms: int, lock_timeout_ms: int, max_batch: int = 32
    ) -> None:
        if statement_timeout_ms <= 0 or lock_timeout_ms <= 0:
            raise ValueError("the claim's statement and lock timeouts must be positive")
        self._engine = engine
        self._statement_timeout_ms = statement_timeout_ms
        self._lock_timeout_ms = lock_timeout_ms
        self._claims: Batcher[int, _Claim, ClaimedAttempt | None] = Batcher(
            self._claim_many, key=lambda claim: claim.payment_order_id, concurrency=2, max_batch=max_batch
        )

    async def claim_attempt(
        self, payment_order_id: int, *, attempt: int, claim_token: str, lease_seconds: float
    ) -> ClaimedAttempt | None:
        return await self._claims.submit(_Claim(payment_order_id, attempt, claim_token, float(lease_seconds)))

    async def drain(self, within: float) -> bool:
        """Wait up to `within` seconds for the claims being made (at shutdown, before the engine goes)."""
        return await self._claims.drain(within)

    async def _claim_many(self, claims: Sequence[_Claim]) -> list[ClaimedAttempt | None]:
        # One statement in a transaction that only carries its timeouts: the row locks and the updates commit together.
        bounded = bounded_transaction(
            self._engine, statement_timeout_ms=self._statement_timeout_ms, lock_timeout_ms=self._lock_timeout_ms
        )
        async with translated_errors(), bounded as conn:
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
        order=order_from_row(row),
        status_check_number=row["status_check_number"],
        psp_calls=row["psp_call_count"],
        calls_until=row["psp_claim_expires_at"],
    )


class PostgresResultTransaction:
    """Reads go to the database at once; writes are kept and sent at commit (`flush`), one statement per kind for
    the whole transaction, so a batch of results costs a handful of round trips instead of several per order. The
    roll-up needs no statement of its own: the statuses of every order of a locked payment are read when it is
    locked, and what this transaction saved is laid over them."""

    def __init__(self, conn: asyncpg.Connection, now: datetime) -> None:
        self._conn = conn
        self.now = now
        self._saves: dict[int, tuple[int, str, int, str | None, str | None, int, datetime, datetime | None]] = {}
        self._events: list[AnyEnvelope] = []
        self._checks: list[tuple[int, int, int, datetime, str, datetime]] = []
        self._payment_statuses: dict[int, tuple[str, datetime]] = {}
        self._orders_of: dict[int, dict[int, PaymentOrderStatus]] = {}
        """Every order of each payment locked here, with its status as this transaction leaves it."""

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
        await self._flush_saves()  # a read after a write of this transaction sees it
        payments = [row["payment_id"] for row in await self._conn.fetch(_LOCK_PAYMENTS, ids)]
        wanted = set(ids)
        return {
            row["payment_order_id"]: _locked(row)
            for row in self._remember(await self._conn.fetch(_LOCK_ORDERS, payments))
            if row["payment_order_id"] in wanted
        }

    async def lock(self, payment_order_id: int) -> LockedOrder | None:
        # Payment first, then its orders: every applier locks in this order, so sibling orders cannot deadlock.
        await self._flush_saves()
        payment_id = await self._conn.fetchval(_LOCK_PAYMENT, payment_order_id)
        if payment_id is None:
            return None
        rows = self._remember(await self._conn.fetch(_LOCK_ORDERS, [payment_id]))
        return next((_locked(row) for row in rows if row["payment_order_id"] == payment_order_id), None)

    def _remember(self, rows: list[asyncpg.Record]) -> list[asyncpg.Record]:
        for row in rows:
            self._orders_of.setdefault(row["payment_id"], {})[row["payment_order_id"]] = PaymentOrderStatus(
                row["status"]
            )
        return rows

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
        calls_until: datetime | None = None,
    ) -> None:
        if payment_order_id in self._saves:
            await self._flush_saves()  # a second save of one order in one transaction: both, in order
        self._saves[payment_order_id] = (
            payment_order_id,
            status.value,
            attempt,
            reason,
            error[:2000] if error else None,
            status_check_number,
            now,
            calls_until,
        )
        for orders in self._orders_of.values():
            if payment_order_id in orders:
                orders[payment_order_id] = status

    async def add_events(self, envelopes: Sequence[AnyEnvelope]) -> None:
        self._events.extend(envelopes)

    async def schedule_status_check(
        self, payment_order_id: int, *, attempt: int, check_number: int, due_at: datetime, trace_id: str, now: datetime
    ) -> None:
        self._checks.append((payment_order_id, attempt, check_number, due_at, trace_id[:64], now))

    async def roll_up(self, payment_id: int, now: datetime) -> PaymentStatus:
        orders = self._orders_of.get(payment_id)
        if orders is None:  # not locked here: read what the database holds, with this transaction's writes
            await self._flush_saves()
            rows = await self._conn.fetch(_ORDER_STATUSES, payment_id)
            orders = {row["payment_order_id"]: PaymentOrderStatus(row["status"]) for row in rows}
        status = roll_up(orders.values())
        self._payment_statuses[payment_id] = (status.value, now)
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

    async def flush(self) -> None:
        """Send every kept write; called before commit (a failure here rolls the whole transaction back)."""
        await self._flush_saves()
        if self._events:
            events, self._events = self._events, []
            await self._conn.execute(
                _OUTBOX_MANY,
                [e.event_id for e in events],
                [e.event_type.value for e in events],
                [e.topic.value for e in events],
                [e.aggregate_id for e in events],
                [e.trace_id for e in events],
                [e.parent_event_id for e in events],
                [envelope_to_bytes(e) for e in events],
                [e.timestamp for e in events],
            )
        if self._checks:
            checks, self._checks = self._checks, []
            await self._conn.execute(_SCHEDULE_CHECKS, *(list(column) for column in zip(*checks, strict=True)))
        if self._payment_statuses:
            statuses, self._payment_statuses = self._payment_statuses, {}
            await self._conn.execute(
                _SET_PAYMENT_STATUSES,
                list(statuses),
                [status for status, _ in statuses.values()],
                [at for _, at in statuses.values()],
            )

    async def _flush_saves(self) -> None:
        if self._saves:
            saves, self._saves = list(self._saves.values()), {}
            await self._conn.execute(_SAVE_MANY, *(list(column) for column in zip(*saves, strict=True)))


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
            txn = PostgresResultTransaction(conn, now)
            yield txn
            await txn.flush()


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
