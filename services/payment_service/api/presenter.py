"""JSON bodies of the payment resource. The create response carries every paymentOrderId and status (the
original's carried neither)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from payment_domain.events import iso_utc
from payment_domain.ids import PaymentOrderId
from payment_domain.money import Amount
from payment_domain.payment import Payment


def _amount(amount: Amount) -> dict[str, Any]:
    return {"value": amount.value, "currency": amount.currency.value}


def payment_document(payment: Payment, refunded: Mapping[PaymentOrderId, int] | None = None) -> dict[str, Any]:
    """`refunded`: per order, the total of its refunds not failed (read documents only; a new payment has none)."""
    lines: list[dict[str, Any]] = [
        {
            "paymentOrderId": order.public_id,
            "sellerId": order.seller_id,
            "amount": _amount(order.amount),
            "status": order.status.value,
            "retryCount": order.retry_count,
            "updatedAt": iso_utc(order.updated_at),
        }
        for order in payment.payment_orders
    ]
    if refunded is not None:
        for line, order in zip(lines, payment.payment_orders, strict=True):
            line["refunded"] = _amount(Amount(refunded.get(order.payment_order_id, 0), order.amount.currency))
    return {
        "id": payment.public_id,
        "paymentId": payment.public_id,
        "buyerId": payment.buyer_id,
        "orderId": payment.order_id,
        "totalAmount": _amount(payment.total_amount),
        "status": payment.status.value,
        "createdAt": iso_utc(payment.created_at),
        "paymentOrders": lines,
    }


class JsonPaymentPresenter:
    def created(self, payment: Payment) -> bytes:
        return orjson.dumps(payment_document(payment))
