"""The asyncpg connection under a pooled SQLAlchemy connection, for the hot statements of the consumers and the
outbox relay: SQLAlchemy's execution layer (a greenlet hop and result wrapping per statement) cost more CPU than
the statements themselves, while the engine's pool, settings and error translation stay shared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's asyncpg connection. SQLAlchemy never sees a transaction on it (its reset on return
    is then a no-op), so one the block leaves open (a cancellation mid-rollback) costs the connection instead of
    going back to the pool."""
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        try:
            yield raw
        finally:
            if raw.is_in_transaction():
                await conn.invalidate()


__all__ = ["driver_connection"]
