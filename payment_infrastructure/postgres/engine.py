"""The async engine (SQLAlchemy Core over asyncpg) every Postgres adapter shares."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from payment_infrastructure.postgres.settings import DatabaseSettings


def create_engine(settings: DatabaseSettings, *, application_name: str = "payments") -> AsyncEngine:
    """Bounded pool with a short checkout timeout: a saturated pool answers 503 quickly instead of queueing."""
    return create_async_engine(
        settings.url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_seconds,
        pool_pre_ping=False,
        connect_args={
            "timeout": settings.connect_timeout_seconds,
            "ssl": settings.ssl,
            "server_settings": {
                "application_name": application_name,
                "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
                "timezone": "UTC",
            },
        },
    )
