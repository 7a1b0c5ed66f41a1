"""The PSP's answer and its one mapping to order states: every PSP word round-trips, our own misconfiguration and
an unknown outcome are never a final failure, and a key already used (422) goes to a status query."""

from __future__ import annotations

import pytest

from payment_domain.psp_answer import (
    AnswerKind,
    PspAnswer,
    answer_for_psp_status,
    order_status_for,
    refund_status_for,
    status_check_reading,
    unconfirmed,
)
from payment_domain.psp_result import Action, OrderState, Policy, PspOutcome, ResultSource, decide
from payment_domain.status import FINAL_OUTCOMES, PaymentOrderStatus

S = PaymentOrderStatus
K = AnswerKind


@pytest.mark.parametrize(
    ("word", "kind", "status"),
    [
        ("SUCCESSFUL_FINAL", K.CHARGED, S.SUCCESSFUL_FINAL),
        ("DECLINED_FINAL", K.DECLINED, S.DECLINED_FINAL),
        ("FAILED_FINAL", K.DECLINED, S.FAILED_FINAL),
        ("FAILED_TRANSIENT_ERROR", K.NOT_CHARGED, S.FAILED_TRANSIENT_ERROR),
        ("pending", K.OUTCOME_UNKNOWN, S.PENDING_STATUS_CHECK_LATER),
        ("PROCESSING", K.OUTCOME_UNKNOWN, S.PENDING_STATUS_CHECK_LATER),
        ("AUTH_NEEDED_STAUS_CHECK_LATER", K.OUTCOME_UNKNOWN, S.AUTH_NEEDED_STAUS_CHECK_LATER),
        ("CAPTURE_PENDING_STATUS_CHECK_LATER", K.OUTCOME_UNKNOWN, S.CAPTURE_PENDING_STATUS_CHECK_LATER),
        ("SOMETHING_NEW", K.OUTCOME_UNKNOWN, S.UNKNOWN_FINAL),
    ],
)
def test_a_psp_word_is_one_answer_kind_and_one_order_status(word: str, kind: AnswerKind, status: S) -> None:
    answer = answer_for_psp_status(word)

    assert answer.kind is kind
    assert order_status_for(answer) is status


@pytest.mark.parametrize("kind", [K.OUTCOME_UNKNOWN, K.MISCONFIGURED])
def test_no_word_and_an_unknown_or_misconfigured_call_is_resolved_by_a_status_query(kind: AnswerKind) -> None:
    assert order_status_for(PspAnswer(kind)) is S.TIMEOUT_EXCEEDED_1S_TRANSIENT
    assert status_check_reading(PspAnswer(kind)) == (True, None)  # could not ask: never "no such charge"


def test_a_word_that_contradicts_the_kind_is_ignored() -> None:
    assert order_status_for(PspAnswer(K.MISCONFIGURED, "DECLINED_FINAL")) is S.TIMEOUT_EXCEEDED_1S_TRANSIENT
    assert order_status_for(PspAnswer(K.NOT_CHARGED, "SUCCESSFUL_FINAL")) is S.PSP_UNAVAILABLE_TRANSIENT


def test_a_503_is_not_charged_as_far_as_the_order_goes_but_unconfirmed() -> None:
    answer = PspAnswer(K.UNAVAILABLE)

    assert order_status_for(answer) is S.PSP_UNAVAILABLE_TRANSIENT
    assert unconfirmed(answer)
    assert not unconfirmed(PspAnswer(K.NOT_CHARGED))
    assert status_check_reading(answer) == (True, None)  # a status query answered 503: could not ask
    assert refund_status_for(answer) is None  # a refund is sent again under its own key


def test_not_charged_without_a_word_is_no_such_charge_on_a_status_query() -> None:
    assert status_check_reading(PspAnswer(K.NOT_CHARGED)) == (False, None)
    assert status_check_reading(answer_for_psp_status("FAILED_TRANSIENT_ERROR")) == (True, S.FAILED_TRANSIENT_ERROR)


@pytest.mark.parametrize("answer", [PspAnswer(K.OUTCOME_UNKNOWN), PspAnswer(K.MISCONFIGURED)])
def test_a_key_reused_or_our_misconfiguration_never_fails_the_order(answer: PspAnswer) -> None:
    """A 422 "key first used with another body" arrives as OUTCOME_UNKNOWN: a charge exists under the key."""
    for psp_calls in (1, 2):
        state = OrderState(S.INITIATED_PENDING, attempt=0, status_check_number=0, psp_calls=psp_calls)
        outcome = PspOutcome(0, ResultSource.CHARGE, order_status_for(answer))

        decision = decide(state, outcome, Policy(max_retries=0, status_checks=3))

        assert decision is not None
        assert decision.action is Action.CHECK_STATUS
        assert decision.status not in FINAL_OUTCOMES
