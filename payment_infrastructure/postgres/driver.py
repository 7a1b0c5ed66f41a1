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


@asynccontextmanager
async def bounded_transaction(
    engine: AsyncEngine, *, statement_timeout_ms: int, lock_timeout_ms: int
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on a pooled connection's asyncpg connection whose every statement gives up after
    `statement_timeout_ms`, and every wait for a lock after `lock_timeout_ms` (the server rolls it back and says
    so: nothing was written). BEGIN and both timeouts go in one round trip; commits when the block exits cleanly."""
    setup = (
        f"BEGIN; SET LOCAL statement_timeout = {int(statement_timeout_ms)}; "
        f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}"
    )
    async with driver_connection(engine) as conn:
        await conn.execute(setup)
        try:
            yield conn
        except BaseException:
            if conn.is_in_transaction() and not conn.is_closed():
                await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


__all__ = ["bounded_transaction", "driver_connection"]
