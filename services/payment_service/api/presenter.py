"""JSON bodies of the payment resource. The create response carries every paymentOrderId and status (the
original's carried neither)."""

from __future__ import annotations

from typing import Any

import orjson

from payment_domain.events import iso_utc
from payment_domain.money import Amount
from payment_domain.payment import Payment


def _amount(amount: Amount) -> dict[str, Any]:
    return {"value": amount.value, "currency": amount.currency.value}


def payment_document(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.public_id,
        "paymentId": payment.public_id,
        "buyerId": payment.buyer_id,
        "orderId": payment.order_id,
        "totalAmount": _amount(payment.total_amount),
        "status": payment.status.value,
        "createdAt": iso_utc(payment.created_at),
        "paymentOrders": [
            {
                "paymentOrderId": order.public_id,
                "sellerId": order.seller_id,
                "amount": _amount(order.amount),
                "status": order.status.value,
                "retryCount": order.retry_count,
                "updatedAt": iso_utc(order.updated_at),
            }
            for order in payment.payment_orders
        ],
    }


class JsonPaymentPresenter:
    def created(self, payment: Payment) -> bytes:
        return orjson.dumps(payment_document(payment))
