"""Refunds of one seller's payment order: the limit (never more in total than was charged), the refund's states
with their transition table, and what a PSP answer does to a refund.

A refund is accepted only for a SUCCESSFUL_FINAL order, in the order's currency, for a positive amount that keeps
the total of the order's refunds not failed (`refunded`, kept on the order row and checked in the same
transaction) within the amount charged. A refund that fails for good gives its amount back to that total. The
PSP's answer becomes a refund state only in `refund_status_for` (payment_domain.psp_answer). docs/ledger.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from payment_domain.errors import DomainError, IllegalTransition
from payment_domain.ids import PaymentId, PaymentOrderId, RefundId
from payment_domain.money import Amount
from payment_domain.status import PaymentOrderStatus


class RefundStatus(StrEnum):
    REQUESTED = "REQUESTED"  # accepted and written with its outbox row; the PSP has not confirmed it yet
    SUCCEEDED = "SUCCEEDED"  # the PSP paid it back: final, posted to the ledger in the same transaction
    FAILED = "FAILED"  # the PSP refused it for good: final, its amount no longer counts against the order
    NEEDS_RECONCILIATION = "NEEDS_RECONCILIATION"  # the outcome stayed unknown: parked for an operator


R = RefundStatus
REFUND_TRANSITIONS: Mapping[RefundStatus, frozenset[RefundStatus]] = {
    R.REQUESTED: frozenset({R.SUCCEEDED, R.FAILED, R.NEEDS_RECONCILIATION}),
    R.NEEDS_RECONCILIATION: frozenset({R.SUCCEEDED, R.FAILED}),
    R.SUCCEEDED: frozenset(),
    R.FAILED: frozenset(),
}


def refund_transition(current: RefundStatus, target: RefundStatus) -> RefundStatus:
    if target not in REFUND_TRANSITIONS[current]:
        raise IllegalTransition(f"{current} -> {target} is not a legal refund transition")
    return target


@dataclass(frozen=True, slots=True)
class Refund:
    refund_id: RefundId
    payment_id: PaymentId
    payment_order_id: PaymentOrderId
    seller_id: str
    amount: Amount
    status: RefundStatus
    created_at: datetime
    updated_at: datetime

    @property
    def public_id(self) -> str:
        return self.refund_id.public

    @property
    def psp_key(self) -> str:
        """The refund's own idempotency key at the PSP: one refund is paid back at most once."""
        return self.public_id


class RefundRefused(DomainError):
    """A refund the order cannot take; nothing is written. `status` is the HTTP answer the API gives."""

    code = "refund_refused"
    status = 409
    title = "Refund refused"


class OrderNotRefundable(RefundRefused):
    code = "order-not-refundable"
    title = "Payment order cannot be refunded"


class RefundExceedsCharge(RefundRefused):
    code = "refund-exceeds-charge"
    title = "Refund exceeds the amount charged"

    def __init__(self, detail: str, *, remaining: int) -> None:
        super().__init__(detail)
        self.remaining = remaining


class RefundCurrencyMismatch(RefundRefused):
    code = "refund-currency-mismatch"
    status = 422
    title = "Refund currency differs from the order's"


class InvalidRefundAmount(RefundRefused):
    code = "invalid-refund-amount"
    status = 422
    title = "Invalid refund amount"


def check_refund(
    *, order_status: PaymentOrderStatus, charged: Amount, refunded: int, amount: Amount, order_public_id: str
) -> None:
    """Raise the reason a refund of `amount` cannot be taken by an order that has `refunded` (minor units, refunds
    not failed) against `charged`; return if it can."""
    if amount.value <= 0:
        raise InvalidRefundAmount("a refund amount must be a positive number of minor units")
    if amount.currency is not charged.currency:
        raise RefundCurrencyMismatch(
            f"payment order {order_public_id} was charged in {charged.currency.value}, not {amount.currency.value}"
        )
    if order_status is not PaymentOrderStatus.SUCCESSFUL_FINAL:
        raise OrderNotRefundable(
            f"payment order {order_public_id} is {order_status.value}; only a SUCCESSFUL_FINAL order can be refunded"
        )
    remaining = charged.value - refunded
    if amount.value > remaining:
        raise RefundExceedsCharge(
            f"payment order {order_public_id} was charged {charged.value} and has {refunded} refunded or being "
            f"refunded: at most {remaining} more can be refunded",
            remaining=remaining,
        )


__all__ = [
    "REFUND_TRANSITIONS",
    "InvalidRefundAmount",
    "OrderNotRefundable",
    "Refund",
    "RefundCurrencyMismatch",
    "RefundExceedsCharge",
    "RefundId",
    "RefundRefused",
    "RefundStatus",
    "check_refund",
    "refund_transition",
]
