"""Use case: give a refund the PSP's confirmed outcome, with its ledger entry, in one transaction.

Under the order's row lock (so refunds of one order settle one after another and the commission given back is
computed on a settled total, from the commission the charge entry took), then the refund's: a SUCCEEDED refund
posts its REFUND entry (docs/ledger.md); a
FAILED one gives its amount back to the order's refunded total; an answer that is not final changes nothing (or
parks the refund, when the caller gives up). A
refund already final is left as it is (a repeated answer is a no-op), so an entry is never posted twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from payment_application.ports.clock import Clock
from payment_application.ports.refunds import RefundStore
from payment_domain.ids import PaymentOrderId, RefundId
from payment_domain.ledger import refund_entry
from payment_domain.psp_answer import PspAnswer, refund_status_for
from payment_domain.refund import REFUND_TRANSITIONS, Refund, RefundStatus, refund_transition


class UnknownRefund(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class RefundAnswer:
    """`give_up`: the caller has asked all it will; a refund this answer leaves unsettled is parked in
    NEEDS_RECONCILIATION for an operator (who settles it with the PSP's word)."""

    payment_order_id: PaymentOrderId
    refund_id: RefundId
    answer: PspAnswer
    give_up: bool = False


class SettleRefund:
    def __init__(self, *, refunds: RefundStore, clock: Clock) -> None:
        self._refunds = refunds
        self._clock = clock

    async def __call__(self, cmd: RefundAnswer) -> Refund:
        """The refund as it stands after the answer (unchanged when the answer is not final or it was final)."""
        target = refund_status_for(cmd.answer)
        async with self._refunds.transaction() as tx:
            refund = await tx.lock_refund(cmd.refund_id)
            if refund is None or refund.payment_order_id != cmd.payment_order_id:
                raise UnknownRefund(f"{cmd.refund_id.public} of {cmd.payment_order_id.public}")
            if target is None and cmd.give_up and refund.status is RefundStatus.REQUESTED:
                target = RefundStatus.NEEDS_RECONCILIATION
            if target is None or not REFUND_TRANSITIONS[refund.status]:
                return refund
            locked = await tx.lock_order(refund.payment_id, refund.payment_order_id)
            if locked is None:
                raise UnknownRefund(f"the order of {cmd.refund_id.public} is gone")
            now = self._clock.now()
            settled = dataclasses.replace(refund, status=refund_transition(refund.status, target), updated_at=now)
            if target is RefundStatus.SUCCEEDED:
                entry = refund_entry(
                    refund.refund_id.value,
                    locked.order,
                    refund.amount.value,
                    refunded_before=await tx.confirmed_refunded(refund.payment_order_id),
                    charge_commission=await tx.charge_commission(refund.payment_order_id),
                )
                await tx.settle(settled, release=False)
                await tx.post_entries([entry], now)
            else:  # FAILED gives its amount back; a parked refund keeps it until it is settled
                await tx.settle(settled, release=target is RefundStatus.FAILED)
            return settled
