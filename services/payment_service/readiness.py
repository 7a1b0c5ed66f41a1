"""Readiness checks of the API process: it can serve only when Postgres and Redis answer."""

from __future__ import annotations

from payment_infrastructure.observability.management import ReadinessCheck
from payment_infrastructure.postgres.pool import acquire
from services.payment_service.bootstrap import Container


def readiness_checks(container: Container) -> dict[str, ReadinessCheck]:
    async def postgres() -> None:
        async with acquire(container.pool, container.settings.db.pool_timeout_seconds) as conn:
            await conn.fetchval("SELECT 1")

    async def redis() -> None:
        await container.redis.ping()

    return {"postgres": postgres, "redis": redis}
