"""The inbox of processed event ids only needs to outlive any redelivery; old entries go in bounded batches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_infrastructure.postgres.batched_delete import delete_in_batches

_PURGE = text(
    """
    DELETE FROM processed_events WHERE (consumer_group, event_id) IN (
        SELECT consumer_group, event_id FROM processed_events WHERE processed_at < :before LIMIT :batch
    )
    """
)


async def purge_processed_events(engine: AsyncEngine, *, before: datetime, batch: int = 5_000) -> int:
    return await delete_in_batches(engine, _PURGE, {"before": before}, batch=batch)
