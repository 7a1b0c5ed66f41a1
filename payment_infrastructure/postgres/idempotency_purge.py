"""Expired idempotency keys are deleted in bounded batches so a purge never holds long locks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_infrastructure.postgres.batched_delete import delete_in_batches

_PURGE = text(
    """
    DELETE FROM idempotency_keys
    WHERE (client_id, idempotency_key) IN (
        SELECT client_id, idempotency_key FROM idempotency_keys
        WHERE expires_at <= :now
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    """
)


async def purge_expired_idempotency_keys(engine: AsyncEngine, *, now: datetime, batch: int) -> int:
    """Delete up to `batch` expired keys per transaction until none are left; return how many went."""
    return await delete_in_batches(engine, _PURGE, {"now": now}, batch=batch)
