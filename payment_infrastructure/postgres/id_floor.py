"""The highest ids Postgres already holds, so the Redis counters can be kept ahead of them."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.ids import IdNamespace
from payment_infrastructure.postgres.tables import payment_orders, payments

_COLUMN = {
    IdNamespace.PAYMENT: payments.c.payment_id,
    IdNamespace.PAYMENT_ORDER: payment_orders.c.payment_order_id,
}


class PostgresIdFloor:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def __call__(self, namespace: IdNamespace) -> int:
        async with self._engine.connect() as conn:
            value = (await conn.execute(select(func.coalesce(func.max(_COLUMN[namespace]), 0)))).scalar_one()
        return int(value)
