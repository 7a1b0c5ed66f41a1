"""Use case: accept a refund of one seller's payment order (POST .../orders/{paymentOrderId}/refunds).

Under the order's row lock, in one transaction: the caller's key is looked up (same key and body: the refund it
made is answered again; another body: refused), the domain's limit is checked against the order's refunded total,
and the refund, its outbox row and the raised total are written together. The PSP is asked later, by the refund's
own event (docs/ledger.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from payment_application.errors import IdempotencyKeyMismatch
from payment_application.ports.clock import Clock
from payment_application.ports.refunds import KeyedRefund, RefundKey, RefundStore
from payment_domain.events import refund_requested
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount
from payment_domain.refund import Refund, RefundStatus, check_refund


class PaymentOrderNotFound(LookupError):
    """No such payment order under that payment."""


@dataclass(frozen=True, slots=True)
class RefundCommand:
    payment_id: PaymentId
    payment_order_id: PaymentOrderId
    amount: Amount
    key: RefundKey
    trace_id: str


@dataclass(frozen=True, slots=True)
class RefundAccepted:
    refund: Refund
    replayed: bool


class _KeyTakenMeanwhile(Exception):
    """Another request with the same key committed first: this transaction is rolled back and answered with it."""


class RefundPaymentOrder:
    def __init__(self, *, refunds: RefundStore, clock: Clock) -> None:
        self._refunds = refunds
        self._clock = clock

    async def __call__(self, cmd: RefundCommand) -> RefundAccepted:
        try:
            return await self._accept(cmd)
        except _KeyTakenMeanwhile:
            async with self._refunds.transaction() as tx:
                existing = await tx.refund_of_key(cmd.key.client_id, cmd.key.key)
            if existing is None:
                raise RuntimeError("an idempotency key was taken by a refund that cannot be read") from None
            return _replay(existing, cmd)

    async def _accept(self, cmd: RefundCommand) -> RefundAccepted:
        async with self._refunds.transaction() as tx:
            existing = await tx.refund_of_key(cmd.key.client_id, cmd.key.key)
            if existing is not None:
                return _replay(existing, cmd)
            locked = await tx.lock_order(cmd.payment_id, cmd.payment_order_id)
            if locked is None:
                raise PaymentOrderNotFound(f"payment order {cmd.payment_order_id.public} of {cmd.payment_id.public}")
            order = locked.order
            check_refund(
                order_status=order.status,
                charged=order.amount,
                refunded=locked.refunded,
                amount=cmd.amount,
                order_public_id=order.public_id,
            )
            now = self._clock.now()
            refund = Refund(
                refund_id=await tx.next_refund_id(),
                payment_id=order.payment_id,
                payment_order_id=order.payment_order_id,
                seller_id=order.seller_id,
                amount=cmd.amount,
                status=RefundStatus.REQUESTED,
                created_at=now,
                updated_at=now,
            )
            event = refund_requested(
                order, refund_id=refund.refund_id, amount=cmd.amount, trace_id=cmd.trace_id, now=now
            )
            if not await tx.add(refund, cmd.key, event):
                raise _KeyTakenMeanwhile
            return RefundAccepted(refund, replayed=False)


def _replay(existing: KeyedRefund, cmd: RefundCommand) -> RefundAccepted:
    if existing.request_hash != cmd.key.request_hash:
        raise IdempotencyKeyMismatch("this Idempotency-Key was already used with a different request body")
    return RefundAccepted(existing.refund, replayed=True)
