"""What a PSP answer means for a payment order: the one place that turns "the PSP said X about attempt n" into
the next state and the work that follows (retry, status check, final event). Pure: no I/O, no clock, no random.

Rule 3 lives here: an unknown outcome (timeout, pending, unrecognised answer) is never retried as a new charge; it
is resolved by asking the PSP about that attempt, and only "the PSP has no such charge" allows another attempt. A
charge call answered "not processed" (a 429, refused before sending) proves no money moved only when it was the
only call ever made under the attempt's key: any other call under that key may have charged, so the answer is
then an unknown outcome too. A 503 never proves it (`unconfirmed`): a proxy in front of the PSP answers 503 after
an upstream reset as well, when the PSP may have charged. Likewise a status check's "no such charge" (or "failed,
no money moved") proves nothing while a call under the key may still reach the PSP: the check is asked again
later instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from payment_domain.status import (
    AWAITING_STATUS_CHECK,
    RETRYABLE,
    PaymentOrderStatus,
    is_terminal,
    transition,
)

S = PaymentOrderStatus

NO_CHARGE_AT_PSP = "NO_CHARGE_AT_PSP"
# Suffix of the reason when a "no money moved" answer cannot be trusted because the key saw more than one call.
AFTER_REPEATED_CALL = "_AFTER_REPEATED_CALL"
# Suffix of the reason when a "no money moved" answer cannot be trusted because it proves nothing (a 503).
UNCONFIRMED = "_UNCONFIRMED"
COULD_NOT_ASK_PSP = "COULD_NOT_ASK_PSP"
# Suffix of the reason when a "no money moved" status answer came while a call under the key could still be sent.
WHILE_A_CALL_MAY_BE_SENT = "_WHILE_A_CALL_MAY_BE_SENT"

# Transient answers that prove the attempt moved no money: safe to charge again under the next attempt's key.
_NO_MONEY_MOVED = frozenset({S.FAILED_TRANSIENT_ERROR, S.PSP_UNAVAILABLE_TRANSIENT})


class ResultSource(StrEnum):
    CHARGE = "charge"
    STATUS_CHECK = "status_check"


class Action(StrEnum):
    SUCCEED = "succeed"
    FAIL = "fail"
    RETRY = "retry"
    CHECK_STATUS = "check_status"
    RECONCILE = "reconcile"


@dataclass(frozen=True, slots=True)
class PspOutcome:
    """The PSP's answer about attempt `attempt`.

    For a status check: `found=False` means the PSP has no charge under that attempt's key; `status=None` with
    `found=True` means we could not ask. `check_number` is the position in the status-check schedule (1-based).
    `unconfirmed`: a charge answered "not processed" in a way that does not prove it (a 503), so only a status
    query on the key may open the next attempt.
    """

    attempt: int
    source: ResultSource
    status: PaymentOrderStatus | None
    found: bool = True
    check_number: int = 0
    unconfirmed: bool = False


@dataclass(frozen=True, slots=True)
class Policy:
    max_retries: int
    status_checks: int  # how many checks the schedule holds before an order needs reconciliation


@dataclass(frozen=True, slots=True)
class OrderState:
    status: PaymentOrderStatus
    attempt: int  # retry_count: the attempt currently in play (0 = first charge)
    status_check_number: int  # the check currently scheduled (0 = none)
    psp_calls: int = 1  # charge calls ever claimed under the attempt's key (0 when none is on record)
    # A call claimed under the attempt's key may still be on its way to the PSP (its claim's bound is not past).
    call_may_be_sent: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    status: PaymentOrderStatus
    attempt: int
    reason: str | None
    check_number: int = 0  # for CHECK_STATUS: the check to schedule next


def decide(state: OrderState, outcome: PspOutcome, policy: Policy) -> Decision | None:
    """The next state, or None when the answer is stale or the order is already settled (a no-op)."""
    if is_terminal(state.status) or outcome.attempt != state.attempt:
        return None
    decision: Decision | None
    if state.status is S.NEEDS_RECONCILIATION:
        decision = _after_parked(outcome, state.call_may_be_sent)
    elif outcome.source is ResultSource.STATUS_CHECK:
        if state.status not in AWAITING_STATUS_CHECK or outcome.check_number != state.status_check_number:
            return None
        decision = _after_status_check(state, outcome, policy)
    else:
        decision = _after_charge(state, outcome, policy)
    if decision is None:
        return None
    transition(state.status, decision.status)  # the table is the authority; an illegal move is a bug
    return decision


def _after_charge(state: OrderState, outcome: PspOutcome, policy: Policy) -> Decision | None:
    status = outcome.status or S.UNKNOWN_FINAL
    if status is S.SUCCESSFUL_FINAL:
        return Decision(Action.SUCCEED, S.SUCCESSFUL_FINAL, state.attempt, None)
    if status in (S.DECLINED_FINAL, S.FAILED_FINAL):
        return Decision(Action.FAIL, status, state.attempt, status.value)
    if state.status in AWAITING_STATUS_CHECK:
        # This attempt's outcome is already unknown and being checked on. A late "still unknown" is no news, and
        # a transient answer from another call under the same key (say, refused by a busy PSP) says nothing about
        # the call that may have moved money: only the status check may license a new attempt (rule 3).
        return None
    if status in _NO_MONEY_MOVED:
        if state.psp_calls == 1 and not outcome.unconfirmed:
            return _retry_or_give_up(state, status, status.value, policy)
        # Another call under this key (a redelivery, an in-place retry, an expired lease re-taken) may have
        # reached the PSP and charged, or this answer (a 503) proves nothing: only the PSP can say, for this key,
        # that it has no such charge.
        why = AFTER_REPEATED_CALL if state.psp_calls != 1 else UNCONFIRMED
        return Decision(Action.CHECK_STATUS, S.PENDING_STATUS_CHECK_LATER, state.attempt, status.value + why, 1)
    # Timeout, pending, auth/capture pending, or an answer we do not understand: the money may have moved.
    waiting = status if status in AWAITING_STATUS_CHECK else S.PENDING_STATUS_CHECK_LATER
    return Decision(Action.CHECK_STATUS, waiting, state.attempt, status.value, 1)


def _after_status_check(state: OrderState, outcome: PspOutcome, policy: Policy) -> Decision:
    status = outcome.status
    if state.call_may_be_sent and (not outcome.found or status in _NO_MONEY_MOVED):
        # The PSP has not seen the key (or saw it fail), but a call under it may still arrive and charge: only an
        # answer given once no call can be sent any more may open the next attempt. Ask again.
        reason = (NO_CHARGE_AT_PSP if not outcome.found or status is None else status.value) + WHILE_A_CALL_MAY_BE_SENT
        return _check_again(state, outcome, policy, reason)
    if not outcome.found:
        return _retry_or_give_up(state, S.FAILED_TRANSIENT_ERROR, NO_CHARGE_AT_PSP, policy)
    if status is S.SUCCESSFUL_FINAL:
        return Decision(Action.SUCCEED, S.SUCCESSFUL_FINAL, state.attempt, None)
    if status in (S.DECLINED_FINAL, S.FAILED_FINAL):
        return Decision(Action.FAIL, status, state.attempt, status.value)
    if status in _NO_MONEY_MOVED:
        return _retry_or_give_up(state, status, status.value, policy)
    return _check_again(state, outcome, policy, status.value if status is not None else COULD_NOT_ASK_PSP)


def _check_again(state: OrderState, outcome: PspOutcome, policy: Policy, reason: str) -> Decision:
    if outcome.check_number >= policy.status_checks:
        return Decision(Action.RECONCILE, S.NEEDS_RECONCILIATION, state.attempt, reason)
    return Decision(Action.CHECK_STATUS, state.status, state.attempt, reason, outcome.check_number + 1)


def _after_parked(outcome: PspOutcome, call_may_be_sent: bool) -> Decision | None:
    """A parked order leaves only on a definitive word about its attempt's key: a late charge answer, the
    periodic re-query, or a check still in flight. "No such charge" (or the key failed with no money moved) ends
    it as FAILED_FINAL: by now the buyer has waited through the whole schedule, and no call can still be made
    under the key (parked orders are never claimed; one claimed before must also be past its bound). Anything
    else leaves it parked."""
    status = outcome.status
    if status is S.SUCCESSFUL_FINAL:
        return Decision(Action.SUCCEED, S.SUCCESSFUL_FINAL, outcome.attempt, None)
    if status in (S.DECLINED_FINAL, S.FAILED_FINAL):
        return Decision(Action.FAIL, status, outcome.attempt, status.value)
    no_money_moved = not outcome.found or status is S.FAILED_TRANSIENT_ERROR
    if outcome.source is ResultSource.STATUS_CHECK and no_money_moved and not call_may_be_sent:
        reason = NO_CHARGE_AT_PSP if not outcome.found else S.FAILED_TRANSIENT_ERROR.value
        return Decision(Action.FAIL, S.FAILED_FINAL, outcome.attempt, reason)
    return None


def _retry_or_give_up(state: OrderState, status: PaymentOrderStatus, reason: str, policy: Policy) -> Decision:
    if state.attempt >= policy.max_retries:
        return Decision(Action.FAIL, S.FAILED_FINAL, state.attempt, reason)
    retry_status = status if status in RETRYABLE else S.FAILED_TRANSIENT_ERROR
    return Decision(Action.RETRY, retry_status, state.attempt + 1, reason)
