"""Rows back into domain objects, shared by every adapter that reads payment orders."""

from __future__ import annotations

from typing import Any, Protocol

from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus


class Row(Protocol):
    """What asyncpg's Record and SQLAlchemy's RowMapping have in common."""

    def __getitem__(self, key: str, /) -> Any: ...


def order_from_row(row: Row) -> PaymentOrder:
    return PaymentOrder(
        payment_order_id=PaymentOrderId(row["payment_order_id"]),
        payment_id=PaymentId(row["payment_id"]),
        seller_id=row["seller_id"],
        amount=Amount(row["amount_value"], Currency(row["amount_currency"])),
        status=PaymentOrderStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        retry_count=row["retry_count"],
        retry_reason=row["retry_reason"],
        last_error_message=row["last_error_message"],
    )
