"""Expired idempotency keys are deleted in bounded batches so a purge never holds long locks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

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
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = (await conn.execute(_PURGE, {"now": now, "batch": batch})).rowcount
        total += deleted
        if deleted < batch:
            return total
