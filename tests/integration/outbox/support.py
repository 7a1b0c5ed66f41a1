"""Writing and inspecting outbox rows directly, as the API's transaction would leave them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from payment_domain.events import EventType, iso_utc

_INSERT = text(
    """
    INSERT INTO outbox_event (event_id, event_type, topic, aggregate_id, trace_id, parent_event_id, payload,
                              created_at)
    SELECT u.event_id, :event_type, u.topic, u.aggregate_id, u.trace_id, u.event_id, u.payload, u.created_at
    FROM unnest(CAST(:event_ids AS uuid[]), CAST(:topics AS text[]), CAST(:aggregates AS text[]),
                CAST(:traces AS text[]), CAST(:payloads AS bytea[]), CAST(:created AS timestamptz[]))
         AS u(event_id, topic, aggregate_id, trace_id, payload, created_at)
    RETURNING id
    """
)


@dataclass(frozen=True, slots=True)
class NewRow:
    topic: str
    aggregate_id: str
    seq: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def trace_id(self) -> str:
        return f"trace-{self.aggregate_id}"

    @property
    def payload(self) -> bytes:
        return envelope_json(self.event_id, self.aggregate_id, self.seq, self.created_at, self.trace_id)


def envelope_json(event_id: str, aggregate_id: str, seq: int, created_at: datetime, trace_id: str) -> bytes:
    """An envelope shaped like the API's payment_order_created, with `seq` to check per-key order."""
    return orjson.dumps(
        {
            "eventId": event_id,
            "eventType": EventType.PAYMENT_ORDER_CREATED.value,
            "aggregateId": aggregate_id,
            "data": {
                "paymentOrderId": aggregate_id,
                "publicPaymentOrderId": f"paymentorder-{aggregate_id}",
                "paymentId": "1",
                "publicPaymentId": "payment-1",
                "sellerId": "seller-1",
                "amountValue": 1999,
                "currency": "EUR",
                "status": "INITIATED_PENDING",
                "createdAt": iso_utc(created_at),
                "updatedAt": iso_utc(created_at),
                "retryCount": 0,
                "retryReason": None,
                "lastErrorMessage": None,
                "seq": seq,
            },
            "timestamp": iso_utc(created_at),
            "traceId": trace_id,
            "parentEventId": event_id,
        }
    )


async def insert_rows(target: AsyncEngine | AsyncConnection, rows: Sequence[NewRow]) -> list[int]:
    """Insert in one statement (one NOTIFY); with an engine, in its own committed transaction."""
    params = {
        "event_type": EventType.PAYMENT_ORDER_CREATED.value,
        "event_ids": [r.event_id for r in rows],
        "topics": [r.topic for r in rows],
        "aggregates": [r.aggregate_id for r in rows],
        "traces": [r.trace_id for r in rows],
        "payloads": [r.payload for r in rows],
        "created": [r.created_at for r in rows],
    }
    if isinstance(target, AsyncConnection):
        return [row[0] for row in (await target.execute(_INSERT, params)).all()]
    async with target.begin() as conn:
        return [row[0] for row in (await conn.execute(_INSERT, params)).all()]


@dataclass(frozen=True, slots=True)
class RowState:
    id: int
    status: str
    lease_token: str | None
    publish_attempts: int


async def row_states(engine: AsyncEngine) -> dict[str, RowState]:
    """Every outbox row by event_id."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT event_id::text, id, status, lease_token::text, publish_attempts FROM outbox_event")
        )
        return {r[0]: RowState(id=r[1], status=r[2], lease_token=r[3], publish_attempts=r[4]) for r in result.all()}


async def expire_leases(engine: AsyncEngine) -> int:
    """Time travel for leases: every live lease ends now (as if its holder had died long ago)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text(
                "UPDATE outbox_event SET lease_expires_at = now() - interval '1 second' "
                "WHERE lease_token IS NOT NULL AND status = 'NEW'"
            )
        )
        return int(result.rowcount)


async def partition_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'outbox_event'::regclass"
            )
        )
        return {r[0] for r in result.all()}


async def reset_outbox(engine: AsyncEngine) -> None:
    """Empty table, no windows but DEFAULT (and no window left detached): every test starts from the migration's
    state."""
    async with engine.begin() as conn:
        result = await conn.execute(
            text(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^outbox_event_[0-9]{8}_[0-9]{4}$' "
                "AND relnamespace = CAST(current_schema() AS regnamespace)"
            )
        )
        for name in sorted(row[0] for row in result.all()):
            await conn.execute(text(f"DROP TABLE {name}"))
        await conn.execute(text("TRUNCATE outbox_event"))
