"""A plain asyncpg pool for the API's hot path: one payment is one short transaction of three or four statements,
and SQLAlchemy's execution layer (greenlet hops, result wrapping) cost more CPU than the database work itself.
Everything off the hot path uses the SQLAlchemy engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url

from payment_application.errors import DependencyUnavailable
from payment_infrastructure.postgres.settings import DatabaseSettings


def plain_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset query (one more round trip per request). Safe because this
    pool's users never change session state (no SET, LISTEN, cursors or advisory locks); an open
    transaction is still rolled back by asyncpg before this hook runs."""


async def create_pool(settings: DatabaseSettings, *, application_name: str) -> asyncpg.Pool:
    """Connections are opened lazily (min_size 0), so the process starts even while Postgres is briefly away."""
    return await asyncpg.create_pool(
        plain_dsn(settings.url),
        min_size=0,
        max_size=settings.pool_size,
        timeout=settings.connect_timeout_seconds,
        ssl=settings.ssl,
        max_inactive_connection_lifetime=300,
        reset=_keep_session,
        server_settings={
            "application_name": application_name,
            "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
            # Every statement on these connections is a whole transaction: these bound exactly that.
            "statement_timeout": str(settings.statement_timeout_ms),
            "lock_timeout": str(settings.lock_timeout_ms),
            "timezone": "UTC",
            # The create statement's custom plans cost more to make (about 0.3 ms of CPU, every time: the planner
            # keeps preferring them over the generic one) than they save; these statements' plans never depend on
            # the values.
            "plan_cache_mode": "force_generic_plan",
        },
    )


@asynccontextmanager
async def acquire(pool: asyncpg.Pool, timeout_seconds: float) -> AsyncIterator[asyncpg.Connection]:
    """Check a connection out, answering "pool exhausted" (503) instead of queueing forever."""
    try:
        conn = await pool.acquire(timeout=timeout_seconds)
    except TimeoutError as error:
        raise DependencyUnavailable("database", "connection pool exhausted") from error
    try:
        yield conn
    finally:
        await pool.release(conn)


__all__ = ["acquire", "create_pool", "plain_dsn"]
