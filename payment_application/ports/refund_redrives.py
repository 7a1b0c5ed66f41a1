"""Refunds that have not settled, as the stale-refund sweeper, the parked-refund re-query and the operator see
them. Every time compared here is the store's (the database's) clock, the one that wrote them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from payment_domain.events import EventEnvelope, RefundRequested, refund_requested
from payment_domain.ids import RefundId
from payment_domain.payment import PaymentOrder
from payment_domain.refund import Refund


@dataclass(frozen=True, slots=True)
class UnsettledRefund:
    """A REQUESTED or NEEDS_RECONCILIATION refund with its order and trace: enough to send its request again."""

    refund: Refund
    order: PaymentOrder
    trace_id: str  # the refund's own, written with it

    def request(self) -> EventEnvelope[RefundRequested]:
        """The refund's request event as it was written with the refund (same deterministic id): a re-drive and a
        late original collapse into one at the executor, which checks the refund's status and the PSP's."""
        refund = self.refund
        return refund_requested(
            self.order, refund_id=refund.refund_id, amount=refund.amount, trace_id=self.trace_id, now=refund.created_at
        )


class RefundRedriveClaims(Protocol):
    async def claim_stale(self, *, stale_after: timedelta, limit: int) -> list[UnsettledRefund]:
        """Claim up to `limit` REQUESTED refunds with no sign of progress for `stale_after`, oldest first, in one
        short transaction that skips rows others hold. Signs of progress: a state change (`updated_at`), a PSP call
        or status query by the executor, a claim by a sweeper, and the refund's request still unsent in the
        outbox (the outbox dispatcher owns it)."""
        ...

    async def claim_parked(self, *, every: timedelta, limit: int) -> list[UnsettledRefund]:
        """Claim up to `limit` NEEDS_RECONCILIATION refunds neither parked, asked about nor claimed for `every`."""
        ...

    async def list_parked(self, *, limit: int) -> list[UnsettledRefund]:
        """The parked refunds, longest parked first (for the operator); claims nothing."""
        ...

    async def get_parked(self, refund_id: RefundId) -> UnsettledRefund | None:
        """The refund if it is parked in NEEDS_RECONCILIATION; claims nothing."""
        ...

    async def count_stale(self, *, stale_after: timedelta) -> int:
        """REQUESTED refunds with no sign of progress for `stale_after`, claimed or not (the alerting gauge)."""
        ...
