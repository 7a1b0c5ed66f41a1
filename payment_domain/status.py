"""Payment order and payment statuses, with the transition table as data.

Names are the original's (including its `STAUS` typo, kept for wire compatibility). The table is the only
authority on what may follow what: a state with no outgoing moves is terminal, and `transition` raises for
anything not listed. NEEDS_RECONCILIATION is ours: an outcome that stayed unknown after the whole status-check
schedule is parked there for a human, loudly, instead of staying silently pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from payment_domain.errors import IllegalTransition


class PaymentOrderStatus(StrEnum):
    INITIATED_PENDING = "INITIATED_PENDING"
    SUCCESSFUL_FINAL = "SUCCESSFUL_FINAL"
    FAILED_FINAL = "FAILED_FINAL"
    DECLINED_FINAL = "DECLINED_FINAL"
    UNKNOWN_FINAL = "UNKNOWN_FINAL"
    FAILED_TRANSIENT_ERROR = "FAILED_TRANSIENT_ERROR"
    TIMEOUT_EXCEEDED_1S_TRANSIENT = "TIMEOUT_EXCEEDED_1S_TRANSIENT"
    PSP_UNAVAILABLE_TRANSIENT = "PSP_UNAVAILABLE_TRANSIENT"
    AUTH_NEEDED_STAUS_CHECK_LATER = "AUTH_NEEDED_STAUS_CHECK_LATER"
    PENDING_STATUS_CHECK_LATER = "PENDING_STATUS_CHECK_LATER"
    CAPTURE_PENDING_STATUS_CHECK_LATER = "CAPTURE_PENDING_STATUS_CHECK_LATER"
    NEEDS_RECONCILIATION = "NEEDS_RECONCILIATION"


S = PaymentOrderStatus

FINAL_OUTCOMES: frozenset[PaymentOrderStatus] = frozenset({S.SUCCESSFUL_FINAL, S.FAILED_FINAL, S.DECLINED_FINAL})
RETRYABLE: frozenset[PaymentOrderStatus] = frozenset(
    {S.FAILED_TRANSIENT_ERROR, S.PSP_UNAVAILABLE_TRANSIENT, S.TIMEOUT_EXCEEDED_1S_TRANSIENT}
)
AWAITING_STATUS_CHECK: frozenset[PaymentOrderStatus] = frozenset(
    {S.AUTH_NEEDED_STAUS_CHECK_LATER, S.PENDING_STATUS_CHECK_LATER, S.CAPTURE_PENDING_STATUS_CHECK_LATER}
)

_AFTER_A_PSP_ANSWER: frozenset[PaymentOrderStatus] = FINAL_OUTCOMES | RETRYABLE | AWAITING_STATUS_CHECK

TRANSITIONS: Mapping[PaymentOrderStatus, frozenset[PaymentOrderStatus]] = {
    # The first charge attempt can end any way the PSP can answer.
    S.INITIATED_PENDING: _AFTER_A_PSP_ANSWER,
    # A retry is a new attempt: again, any answer.
    S.FAILED_TRANSIENT_ERROR: _AFTER_A_PSP_ANSWER,
    S.PSP_UNAVAILABLE_TRANSIENT: _AFTER_A_PSP_ANSWER,
    S.TIMEOUT_EXCEEDED_1S_TRANSIENT: _AFTER_A_PSP_ANSWER,
    # A status check resolves, stays pending, says "never seen" (a new attempt: retryable), or gives up.
    S.AUTH_NEEDED_STAUS_CHECK_LATER: _AFTER_A_PSP_ANSWER | {S.NEEDS_RECONCILIATION},
    S.PENDING_STATUS_CHECK_LATER: _AFTER_A_PSP_ANSWER | {S.NEEDS_RECONCILIATION},
    S.CAPTURE_PENDING_STATUS_CHECK_LATER: _AFTER_A_PSP_ANSWER | {S.NEEDS_RECONCILIATION},
    # Parked for an operator, who settles it with the PSP's final answer.
    S.NEEDS_RECONCILIATION: FINAL_OUTCOMES,
    S.SUCCESSFUL_FINAL: frozenset(),
    S.FAILED_FINAL: frozenset(),
    S.DECLINED_FINAL: frozenset(),
    # The original's name for "the PSP said something we do not understand"; never entered here (such
    # answers go to a status check), kept so the wire name stays valid; terminal like its name says.
    S.UNKNOWN_FINAL: frozenset(),
}

TERMINAL: frozenset[PaymentOrderStatus] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
IN_FLIGHT: frozenset[PaymentOrderStatus] = frozenset(
    s for s in PaymentOrderStatus if s not in TERMINAL and s is not S.NEEDS_RECONCILIATION
)
"""Statuses an order leaves by itself (a message or a timer moves it on); NEEDS_RECONCILIATION waits for a human."""


def is_terminal(status: PaymentOrderStatus) -> bool:
    return status in TERMINAL


def can_transition(current: PaymentOrderStatus, target: PaymentOrderStatus) -> bool:
    return target in TRANSITIONS[current]


def transition(current: PaymentOrderStatus, target: PaymentOrderStatus) -> PaymentOrderStatus:
    """Return `target` if the table allows the move, else raise IllegalTransition."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current} -> {target} is not a legal payment order transition")
    return target


class PaymentStatus(StrEnum):
    """The payment's own status, derived from its orders (the original never updated it)."""

    INITIATED = "INITIATED"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    PARTIALLY_SUCCEEDED = "PARTIALLY_SUCCEEDED"


def roll_up(order_statuses: Iterable[PaymentOrderStatus]) -> PaymentStatus:
    """INITIATED until every order is terminal; then SUCCESS, FAILED, or PARTIALLY_SUCCEEDED if mixed."""
    statuses = list(order_statuses)
    if not statuses or any(not is_terminal(s) for s in statuses):
        return PaymentStatus.INITIATED
    succeeded = sum(1 for s in statuses if s is S.SUCCESSFUL_FINAL)
    if succeeded == len(statuses):
        return PaymentStatus.SUCCESS
    if succeeded == 0:
        return PaymentStatus.FAILED
    return PaymentStatus.PARTIALLY_SUCCEEDED


def map_psp_status(raw: str) -> PaymentOrderStatus:
    """The original's PSPStatusMapper, with its defect 23 fixed: a PSP "PENDING" means "check later",
    not an accidental UNKNOWN_FINAL. Anything unrecognised is UNKNOWN_FINAL, which routes to a status
    check."""
    normalized = raw.strip().upper()
    if normalized in {"PENDING", "PENDING_STATUS_CHECK_LATER"}:
        return S.PENDING_STATUS_CHECK_LATER
    try:
        status = S(normalized)
    except ValueError:
        return S.UNKNOWN_FINAL
    if status in {S.INITIATED_PENDING, S.NEEDS_RECONCILIATION}:
        return S.UNKNOWN_FINAL
    return status
