"""The highest ids Postgres already holds, so the Redis counters can be kept ahead of them."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.ids import IdNamespace
from payment_infrastructure.postgres.errors import translated_errors
from payment_infrastructure.postgres.tables import payment_orders, payments

_COLUMN = {
    IdNamespace.PAYMENT: payments.c.payment_id,
    IdNamespace.PAYMENT_ORDER: payment_orders.c.payment_order_id,
}


class PostgresIdFloor:
    """Read on the create path (when the Redis counters must be resynced): a database that cannot answer is
    `DependencyUnavailable` (503), as on the rest of that path, never an unhandled driver error (500)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def __call__(self, namespace: IdNamespace) -> int:
        async with translated_errors(), self._engine.connect() as conn:
            value = (await conn.execute(select(func.coalesce(func.max(_COLUMN[namespace]), 0)))).scalar_one()
        return int(value)
