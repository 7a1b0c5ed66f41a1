"""Refunds in the domain: the limit, the state table, what a PSP answer does to a refund, and the refund entry
(the commission given back, exact to the cent over any sequence of partial refunds)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment_domain.errors import IllegalTransition
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.ledger import AccountKind, CommissionSchedule, Side, charge_entry, refund_commission, refund_entry
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.psp_answer import AnswerKind, PspAnswer, answer_for_psp_status, refund_status_for
from payment_domain.refund import (
    REFUND_TRANSITIONS,
    InvalidRefundAmount,
    OrderNotRefundable,
    RefundCurrencyMismatch,
    RefundExceedsCharge,
    RefundStatus,
    check_refund,
    refund_transition,
)
from payment_domain.status import PaymentOrderStatus

S, R = PaymentOrderStatus, RefundStatus
EUR = Currency.EUR
T0 = datetime(2026, 12, 7, tzinfo=UTC)


def order(seller: str = "seller-a", amount: int = 10_000, order_id: int = 1) -> PaymentOrder:
    return PaymentOrder(PaymentOrderId(order_id), PaymentId(1), seller, Amount(amount, EUR), S.SUCCESSFUL_FINAL, T0, T0)


def check(amount: int, *, refunded: int = 0, status: S = S.SUCCESSFUL_FINAL, currency: Currency = EUR) -> None:
    check_refund(
        order_status=status,
        charged=Amount(1_000, EUR),
        refunded=refunded,
        amount=Amount(amount, currency),
        order_public_id="paymentorder-1",
    )


def test_full_partial_and_several_partials_up_to_the_charge_are_accepted() -> None:
    check(1_000)
    check(1)
    check(400, refunded=600)


def test_a_refund_beyond_what_is_left_is_refused_with_what_is_left() -> None:
    with pytest.raises(RefundExceedsCharge) as refused:
        check(401, refunded=600)
    assert refused.value.remaining == 400
    assert refused.value.status == 409


@pytest.mark.parametrize("status", [s for s in S if s is not S.SUCCESSFUL_FINAL])
def test_only_a_successful_order_can_be_refunded(status: S) -> None:
    with pytest.raises(OrderNotRefundable):
        check(100, status=status)


def test_another_currency_and_a_zero_amount_are_invalid() -> None:
    with pytest.raises(RefundCurrencyMismatch):
        check(100, currency=Currency.USD)
    with pytest.raises(InvalidRefundAmount):
        check(0)


def test_the_refund_table_allows_only_its_moves_and_final_states_have_none() -> None:
    assert REFUND_TRANSITIONS[R.SUCCEEDED] == REFUND_TRANSITIONS[R.FAILED] == frozenset()
    assert refund_transition(R.REQUESTED, R.SUCCEEDED) is R.SUCCEEDED
    assert refund_transition(R.NEEDS_RECONCILIATION, R.FAILED) is R.FAILED
    with pytest.raises(IllegalTransition):
        refund_transition(R.SUCCEEDED, R.FAILED)


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (AnswerKind.CHARGED, R.SUCCEEDED),
        (AnswerKind.DECLINED, R.FAILED),
        (AnswerKind.NOT_CHARGED, None),
        (AnswerKind.OUTCOME_UNKNOWN, None),
        (AnswerKind.MISCONFIGURED, None),
    ],
)
def test_only_a_definitive_answer_settles_a_refund(kind: AnswerKind, status: R | None) -> None:
    assert refund_status_for(PspAnswer(kind)) is status


def test_a_refund_the_psp_executed_and_failed_is_failed_for_its_key_replays_that_answer() -> None:
    assert refund_status_for(answer_for_psp_status("FAILED_TRANSIENT_ERROR")) is R.FAILED
    assert refund_status_for(answer_for_psp_status("PENDING")) is None
    assert refund_status_for(answer_for_psp_status("DECLINED_FINAL")) is R.FAILED


@given(
    charged=st.integers(1, 10**9),
    bps=st.integers(0, 10_000),
    cuts=st.lists(st.floats(0, 1, allow_nan=False), max_size=8),
)
def test_partial_refunds_give_back_exactly_the_charge_commission_and_each_entry_balances(
    charged: int, bps: int, cuts: list[float]
) -> None:
    charge_commission = charged * bps // 10_000
    points = sorted({0, charged, *(int(c * charged) for c in cuts)})
    back = 0
    for before, after in itertools.pairwise(points):
        part = refund_commission(
            charged=charged, charge_commission=charge_commission, refunded_before=before, amount=after - before
        )
        assert 0 <= part <= after - before
        back += part
        kept = charge_commission - back
        assert kept == charge_commission * (charged - after) // charged  # what stays charged keeps its share
    assert back == charge_commission


def test_the_three_seller_worked_example_of_docs_ledger() -> None:
    """docs/ledger.md: 49.99 + 29.50 + 120.00 EUR at 10 % / 2.5 % / 10 %, then 20.00 back from the first seller."""
    schedule = CommissionSchedule(default_bps=1_000, seller_bps={"SELLER-222": 250})
    orders = [order("SELLER-111", 4_999, 1), order("SELLER-222", 2_950, 2), order("SELLER-333", 12_000, 3)]
    charges = [charge_entry(o, schedule) for o in orders]
    split = [{(p.account.kind, p.side): p.amount for p in e.postings} for e in charges]
    assert [s[(AccountKind.SELLER_PAYABLE, Side.CREDIT)] for s in split] == [4_500, 2_877, 10_800]
    assert [s[(AccountKind.COMMISSION_REVENUE, Side.CREDIT)] for s in split] == [499, 73, 1_200]

    refund = refund_entry(7, orders[0], 2_000, refunded_before=0, charge_commission=499)

    # The platform keeps floor(499 x 2,999 / 4,999) = 299 of its 499: 200 goes back with the refund.
    assert {(p.account.kind, p.side): p.amount for p in refund.postings} == {
        (AccountKind.PSP_RECEIVABLE, Side.CREDIT): 2_000,
        (AccountKind.SELLER_PAYABLE, Side.DEBIT): 1_800,
        (AccountKind.COMMISSION_REVENUE, Side.DEBIT): 200,
    }
    assert refund.refund_id == 7
    rest = refund_entry(8, orders[0], 2_999, refunded_before=2_000, charge_commission=499)
    back = {(p.account.kind, p.side): p.amount for p in rest.postings}
    assert back[(AccountKind.COMMISSION_REVENUE, Side.DEBIT)] == 299  # refunded in full: all 499 given back
    assert back[(AccountKind.SELLER_PAYABLE, Side.DEBIT)] == 2_700  # 4,500 credited, 1,800 + 2,700 debited
