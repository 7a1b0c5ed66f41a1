"""The Payment aggregate and its PaymentOrders (one per seller line), built only through `create_payment`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from payment_domain.errors import FieldViolation, InvalidPayment
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.status import PaymentOrderStatus, PaymentStatus, roll_up

MAX_LINES = 100
MAX_TEXT = 255


@dataclass(frozen=True, slots=True)
class PaymentLine:
    """What a seller is owed in this payment, before ids exist."""

    seller_id: str
    amount: Amount


@dataclass(frozen=True, slots=True)
class PaymentOrder:
    payment_order_id: PaymentOrderId
    payment_id: PaymentId
    seller_id: str
    amount: Amount
    status: PaymentOrderStatus
    created_at: datetime
    updated_at: datetime
    retry_count: int = 0
    retry_reason: str | None = None
    last_error_message: str | None = None

    @property
    def public_id(self) -> str:
        return self.payment_order_id.public


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: PaymentId
    buyer_id: str
    order_id: str
    total_amount: Amount
    status: PaymentStatus
    created_at: datetime
    payment_orders: tuple[PaymentOrder, ...]

    @property
    def public_id(self) -> str:
        return self.payment_id.public

    def rolled_up(self) -> PaymentStatus:
        return roll_up(o.status for o in self.payment_orders)


def validate_request(buyer_id: str, order_id: str, total: Amount, lines: Sequence[PaymentLine]) -> None:
    """Every invariant of the original, all checked, all reported together."""
    bad: list[FieldViolation] = []
    for name, text in (("buyerId", buyer_id), ("orderId", order_id)):
        if not text.strip():
            bad.append(FieldViolation(name, "must not be blank"))
        elif len(text) > MAX_TEXT:
            bad.append(FieldViolation(name, f"must be at most {MAX_TEXT} characters"))
    if total.value <= 0:
        bad.append(FieldViolation("totalAmount.value", "must be greater than zero"))
    if not lines:
        bad.append(FieldViolation("paymentOrders", "must contain at least one line"))
    elif len(lines) > MAX_LINES:
        bad.append(FieldViolation("paymentOrders", f"must contain at most {MAX_LINES} lines"))
    for i, line in enumerate(lines):
        where = f"paymentOrders[{i}]"
        if not line.seller_id.strip():
            bad.append(FieldViolation(f"{where}.sellerId", "must not be blank"))
        elif len(line.seller_id) > MAX_TEXT:
            bad.append(FieldViolation(f"{where}.sellerId", f"must be at most {MAX_TEXT} characters"))
        if line.amount.value <= 0:
            bad.append(FieldViolation(f"{where}.amount.value", "must be greater than zero"))
        if line.amount.currency is not total.currency:
            bad.append(
                FieldViolation(
                    f"{where}.amount.currency",
                    f"must equal the total's currency {total.currency.value}, got {line.amount.currency.value}",
                )
            )
    if lines and all(line.amount.currency is total.currency for line in lines):
        line_sum = sum(line.amount.value for line in lines)
        if line_sum != total.value:
            bad.append(
                FieldViolation(
                    "totalAmount.value",
                    f"must equal the sum of the payment order amounts ({line_sum}), got {total.value}",
                )
            )
    if bad:
        raise InvalidPayment(bad)


def create_payment(
    *,
    payment_id: PaymentId,
    payment_order_ids: Sequence[PaymentOrderId],
    buyer_id: str,
    order_id: str,
    total: Amount,
    lines: Sequence[PaymentLine],
    now: datetime,
) -> Payment:
    """Validate, then build the aggregate: one INITIATED_PENDING order per line, in line order."""
    validate_request(buyer_id, order_id, total, lines)
    if len(payment_order_ids) != len(lines):
        raise ValueError("one payment order id per line is required")
    orders = tuple(
        PaymentOrder(
            payment_order_id=po_id,
            payment_id=payment_id,
            seller_id=line.seller_id,
            amount=line.amount,
            status=PaymentOrderStatus.INITIATED_PENDING,
            created_at=now,
            updated_at=now,
        )
        for po_id, line in zip(payment_order_ids, lines, strict=True)
    )
    return Payment(
        payment_id=payment_id,
        buyer_id=buyer_id,
        order_id=order_id,
        total_amount=total,
        status=PaymentStatus.INITIATED,
        created_at=now,
        payment_orders=orders,
    )


__all__ = [
    "Amount",
    "Currency",
    "Payment",
    "PaymentLine",
    "PaymentOrder",
    "create_payment",
    "validate_request",
]
