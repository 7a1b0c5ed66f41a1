"""Request builders and database peeks shared by the API tests."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import asyncpg
from hypothesis import HealthCheck, settings
from sqlalchemy.engine import make_url


def valid_payment(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "buyerId": "BUYER-123",
        "orderId": f"ORDER-{uuid.uuid4().hex[:10]}",
        "totalAmount": {"value": 19949, "currency": "EUR"},
        "paymentOrders": [
            {"sellerId": "SELLER-111", "amount": {"value": 4999, "currency": "EUR"}},
            {"sellerId": "SELLER-222", "amount": {"value": 2950, "currency": "EUR"}},
            {"sellerId": "SELLER-333", "amount": {"value": 12000, "currency": "EUR"}},
        ],
    }
    body.update(copy.deepcopy(overrides))
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def row_counts(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn(database_url))
    try:
        return {
            table: int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            for table in ("payments", "payment_orders", "outbox_event", "idempotency_keys")
        }
    finally:
        await conn.close()


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(database_url))
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def bounded(max_examples: int) -> settings:
    """Hypothesis settings for a fuzz run inside `make test`: the same examples every run, no example database."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
