"""The safe re-drive of a stalled order, enumerated over every status: it repeats what the order waits for."""

from __future__ import annotations

import pytest

from payment_domain.psp_result import OrderState
from payment_domain.redrive import Redrive, safe_redrive
from payment_domain.status import AWAITING_STATUS_CHECK, RETRYABLE, TERMINAL, PaymentOrderStatus

S = PaymentOrderStatus

EXPECTED: dict[PaymentOrderStatus, Redrive | None] = {
    S.INITIATED_PENDING: Redrive.CHARGE,
    S.FAILED_TRANSIENT_ERROR: Redrive.RETRY,
    S.PSP_UNAVAILABLE_TRANSIENT: Redrive.RETRY,
    S.TIMEOUT_EXCEEDED_1S_TRANSIENT: Redrive.RETRY,
    S.AUTH_NEEDED_STAUS_CHECK_LATER: Redrive.STATUS_CHECK,
    S.PENDING_STATUS_CHECK_LATER: Redrive.STATUS_CHECK,
    S.CAPTURE_PENDING_STATUS_CHECK_LATER: Redrive.STATUS_CHECK,
    S.NEEDS_RECONCILIATION: None,
    S.SUCCESSFUL_FINAL: None,
    S.FAILED_FINAL: None,
    S.DECLINED_FINAL: None,
    S.UNKNOWN_FINAL: None,
}


def test_the_table_covers_every_status() -> None:
    assert set(EXPECTED) == set(PaymentOrderStatus)


@pytest.mark.parametrize("status", list(PaymentOrderStatus))
def test_each_status_has_its_one_safe_redrive(status: PaymentOrderStatus) -> None:
    assert safe_redrive(OrderState(status, attempt=2, status_check_number=3)) is EXPECTED[status]


@pytest.mark.parametrize("status", sorted(TERMINAL | {S.NEEDS_RECONCILIATION}))
def test_settled_and_parked_orders_are_never_redriven(status: PaymentOrderStatus) -> None:
    for check_number in (0, 1, 5):
        assert safe_redrive(OrderState(status, attempt=0, status_check_number=check_number)) is None


@pytest.mark.parametrize("status", sorted(AWAITING_STATUS_CHECK))
def test_an_order_awaiting_a_check_with_no_check_number_has_nothing_safe_to_repeat(status: PaymentOrderStatus) -> None:
    assert safe_redrive(OrderState(status, attempt=1, status_check_number=0)) is None


@pytest.mark.parametrize("status", sorted(RETRYABLE | {S.INITIATED_PENDING}))
def test_a_chargeable_order_is_redriven_whatever_its_stale_check_number(status: PaymentOrderStatus) -> None:
    # The check number matters only to an order awaiting a check.
    assert safe_redrive(OrderState(status, attempt=1, status_check_number=0)) is EXPECTED[status]
    assert safe_redrive(OrderState(status, attempt=1, status_check_number=4)) is EXPECTED[status]
