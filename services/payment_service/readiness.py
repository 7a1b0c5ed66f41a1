"""Readiness checks of the API process: it can serve only when Postgres and Redis answer."""

from __future__ import annotations

from sqlalchemy import text

from payment_infrastructure.observability.management import ReadinessCheck
from services.payment_service.bootstrap import Container


def readiness_checks(container: Container) -> dict[str, ReadinessCheck]:
    async def postgres() -> None:
        async with container.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await container.redis.ping()

    return {"postgres": postgres, "redis": redis}
