"""Payment orders written straight into Postgres in any state, as if the messages that should have moved them on
had been lost (the sweeper's tests); reading back what the sweeper left; and letting time pass for them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from tests.integration.api.helpers import dsn, fetch

_INSERT_PAYMENT = """
    INSERT INTO payments (payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency, status,
                          client_id, trace_id, created_at, updated_at)
    VALUES ($1::bigint, 'payment-' || $1::bigint, 'BUYER-SWEEP', 'ORDER-' || $1::bigint, $2, 'EUR', 'INITIATED',
            'sweeper-tests', 'trace-' || $1::bigint, $3, $3)
"""
_INSERT_ORDER = """
    INSERT INTO payment_orders (payment_order_id, public_payment_order_id, payment_id, public_payment_id, seller_id,
                                amount_value, amount_currency, status, retry_count, status_check_number,
                                created_at, updated_at)
    VALUES ($1::bigint, 'paymentorder-' || $1::bigint, $7::bigint, 'payment-' || $7::bigint, 'SELLER-' || $1::bigint,
            $2, 'EUR', $3, $4, $5, $6, $6)
"""


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """One order of its own payment (same id, traced `trace-<id>`) unless it names a shared `payment_id`."""

    payment_order_id: int
    updated_at: datetime
    status: str = "INITIATED_PENDING"
    retry_count: int = 0
    status_check_number: int = 0
    amount: int = 1_000
    payment_id: int | None = None

    @property
    def payment(self) -> int:
        return self.payment_id if self.payment_id is not None else self.payment_order_id

    @property
    def public_id(self) -> str:
        return f"paymentorder-{self.payment_order_id}"


async def insert_orders(database_url: str, orders: Sequence[StoredOrder]) -> None:
    """Orders and their payments in one transaction, with no outbox row: nothing will ever move them but a sweeper
    (or the test)."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        async with conn.transaction():
            payments: dict[int, tuple[int, int, datetime]] = {}
            for o in orders:
                total = payments.get(o.payment, (o.payment, 0, o.updated_at))[1] + o.amount
                payments[o.payment] = (o.payment, total, o.updated_at)
            await conn.executemany(_INSERT_PAYMENT, list(payments.values()))
            await conn.executemany(
                _INSERT_ORDER,
                [
                    (
                        o.payment_order_id, o.amount, o.status, o.retry_count, o.status_check_number, o.updated_at,
                        o.payment,
                    )
                    for o in orders
                ],
            )  # fmt: skip
    finally:
        await conn.close()


async def order_row(database_url: str, payment_order_id: int) -> asyncpg.Record:
    (row,) = await fetch(database_url, "SELECT * FROM payment_orders WHERE payment_order_id = $1", payment_order_id)
    return row


_SHIFT_BACK = (
    """
    UPDATE payment_orders
       SET created_at = created_at - $1::interval, updated_at = updated_at - $1::interval,
           swept_at = swept_at - $1::interval, psp_claim_expires_at = psp_claim_expires_at - $1::interval
    """,
    """
    UPDATE payment_order_status_checks
       SET scheduled_at = scheduled_at - $1::interval, lease_expires_at = lease_expires_at - $1::interval,
           created_at = created_at - $1::interval, updated_at = updated_at - $1::interval
    """,
)


async def shift_back(database_url: str, delta: timedelta) -> None:
    """Move every time the sweeper reads (orders, their claims and sweeps, status checks) `delta` into the past: as
    if that much time had passed on the database's clock, which no test can move."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        async with conn.transaction():
            for statement in _SHIFT_BACK:
                await conn.execute(statement, delta)
    finally:
        await conn.close()
