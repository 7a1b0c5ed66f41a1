"""What may be done, safely, for a payment order that stopped moving because a message about it was lost.

A re-drive repeats what the order already waits for, never more. Rule 3 holds: no new charge attempt is opened
here; the attempt in play was licensed when it was decided (`psp_result.decide`), and repeating it reuses its
idempotency key, so the PSP charges it at most once. Asking the PSP about an attempt never charges at all.
"""

from __future__ import annotations

from enum import StrEnum

from payment_domain.psp_result import OrderState
from payment_domain.status import AWAITING_STATUS_CHECK, RETRYABLE, PaymentOrderStatus


class Redrive(StrEnum):
    CHARGE = "charge"  # request the PSP call of the attempt in play again (same key)
    RETRY = "retry"  # put the attempt's retry back on the retry queue, due now (same key)
    STATUS_CHECK = "status_check"  # ask the PSP again about the attempt, under the same check number


def safe_redrive(state: OrderState) -> Redrive | None:
    """The one safe re-drive for an order in `state`, or None when none applies: settled, parked for a human in
    NEEDS_RECONCILIATION, or awaiting a check with no number (a state `decide` never produces)."""
    if state.status is PaymentOrderStatus.INITIATED_PENDING:
        return Redrive.CHARGE
    if state.status in RETRYABLE:
        return Redrive.RETRY
    if state.status in AWAITING_STATUS_CHECK and state.status_check_number >= 1:
        return Redrive.STATUS_CHECK
    return None
