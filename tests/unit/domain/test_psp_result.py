"""What a PSP answer does to a payment order: the rules of `decide`, enumerated as tables, then as a property.

The tables are the specification. Every current status falls in exactly one group (chargeable, awaiting a
status check, settled) and every answer in exactly one row, so a status or answer added later without a row here
fails `test_the_tables_cover_every_status_and_every_answer`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from payment_domain.psp_result import (
    AFTER_REPEATED_CALL,
    COULD_NOT_ASK_PSP,
    NO_CHARGE_AT_PSP,
    UNCONFIRMED,
    Action,
    Decision,
    OrderState,
    Policy,
    PspOutcome,
    ResultSource,
    decide,
)
from payment_domain.status import (
    AWAITING_STATUS_CHECK,
    FINAL_OUTCOMES,
    RETRYABLE,
    TERMINAL,
    PaymentOrderStatus,
    can_transition,
)

S = PaymentOrderStatus
CHARGE, CHECK = ResultSource.CHARGE, ResultSource.STATUS_CHECK

MAX_RETRIES = 5
STATUS_CHECKS = 3
POLICY = Policy(max_retries=MAX_RETRIES, status_checks=STATUS_CHECKS)
ATTEMPT = 2  # below the retry limit, above zero: an off-by-one in either direction shows

# --- who is where -------------------------------------------------------------------------------------------

CHARGEABLE = (
    S.INITIATED_PENDING,
    S.FAILED_TRANSIENT_ERROR,
    S.PSP_UNAVAILABLE_TRANSIENT,
    S.TIMEOUT_EXCEEDED_1S_TRANSIENT,
)
AWAITING = (S.AUTH_NEEDED_STAUS_CHECK_LATER, S.PENDING_STATUS_CHECK_LATER, S.CAPTURE_PENDING_STATUS_CHECK_LATER)
SETTLED = (S.SUCCESSFUL_FINAL, S.DECLINED_FINAL, S.FAILED_FINAL, S.UNKNOWN_FINAL, S.NEEDS_RECONCILIATION)

# "What the PSP said" a charge can carry: every status, and no status at all (an answer we could not read).
CHARGE_ANSWERS: tuple[PaymentOrderStatus | None, ...] = (*S, None)

UNKNOWN_CHARGE_ANSWERS = frozenset(
    {
        S.TIMEOUT_EXCEEDED_1S_TRANSIENT,
        S.AUTH_NEEDED_STAUS_CHECK_LATER,
        S.PENDING_STATUS_CHECK_LATER,
        S.CAPTURE_PENDING_STATUS_CHECK_LATER,
        S.UNKNOWN_FINAL,
        S.INITIATED_PENDING,
        S.NEEDS_RECONCILIATION,
        None,
    }
)
NO_MONEY_MOVED = frozenset({S.FAILED_TRANSIENT_ERROR, S.PSP_UNAVAILABLE_TRANSIENT})


@dataclass(frozen=True)
class Expect:
    """A decision relative to the state it is taken in: `attempt_step` 1 = the next attempt."""

    action: Action
    status: PaymentOrderStatus | None  # None: the status the order already has
    attempt_step: int
    reason: str | None
    check_number: int = 0

    def at(self, state: OrderState) -> Decision:
        return Decision(
            self.action,
            self.status or state.status,
            state.attempt + self.attempt_step,
            self.reason,
            self.check_number,
        )


def _succeed() -> Expect:
    return Expect(Action.SUCCEED, S.SUCCESSFUL_FINAL, 0, None)


def _fail(status: PaymentOrderStatus) -> Expect:
    return Expect(Action.FAIL, status, 0, status.value)


def _retry(status: PaymentOrderStatus, reason: str) -> Expect:
    return Expect(Action.RETRY, status, 1, reason)


def _check(waiting: PaymentOrderStatus | None, reason: str, number: int) -> Expect:
    return Expect(Action.CHECK_STATUS, waiting, 0, reason, number)


# A charge answer for the attempt in play, while the order waits for that charge.
CHARGE_RULES: dict[PaymentOrderStatus | None, Expect] = {
    S.SUCCESSFUL_FINAL: _succeed(),
    S.DECLINED_FINAL: _fail(S.DECLINED_FINAL),
    S.FAILED_FINAL: _fail(S.FAILED_FINAL),
    S.FAILED_TRANSIENT_ERROR: _retry(S.FAILED_TRANSIENT_ERROR, "FAILED_TRANSIENT_ERROR"),
    S.PSP_UNAVAILABLE_TRANSIENT: _retry(S.PSP_UNAVAILABLE_TRANSIENT, "PSP_UNAVAILABLE_TRANSIENT"),
    S.TIMEOUT_EXCEEDED_1S_TRANSIENT: _check(S.PENDING_STATUS_CHECK_LATER, "TIMEOUT_EXCEEDED_1S_TRANSIENT", 1),
    S.AUTH_NEEDED_STAUS_CHECK_LATER: _check(S.AUTH_NEEDED_STAUS_CHECK_LATER, "AUTH_NEEDED_STAUS_CHECK_LATER", 1),
    S.PENDING_STATUS_CHECK_LATER: _check(S.PENDING_STATUS_CHECK_LATER, "PENDING_STATUS_CHECK_LATER", 1),
    S.CAPTURE_PENDING_STATUS_CHECK_LATER: _check(
        S.CAPTURE_PENDING_STATUS_CHECK_LATER, "CAPTURE_PENDING_STATUS_CHECK_LATER", 1
    ),
    S.UNKNOWN_FINAL: _check(S.PENDING_STATUS_CHECK_LATER, "UNKNOWN_FINAL", 1),
    # Statuses a PSP should never report for a charge: not understood, so treated as unknown.
    S.INITIATED_PENDING: _check(S.PENDING_STATUS_CHECK_LATER, "INITIATED_PENDING", 1),
    S.NEEDS_RECONCILIATION: _check(S.PENDING_STATUS_CHECK_LATER, "NEEDS_RECONCILIATION", 1),
    None: _check(S.PENDING_STATUS_CHECK_LATER, "UNKNOWN_FINAL", 1),
}

# A charge answer for the attempt in play while a status check on that attempt is under way: only a final
# answer settles the order; anything else is no news (the check is already asking), and never a new charge.
CHARGE_RULES_WHILE_CHECKING: dict[PaymentOrderStatus | None, Expect | None] = {
    answer: (rule if answer in FINAL_OUTCOMES else None) for answer, rule in CHARGE_RULES.items()
}


@dataclass(frozen=True)
class CheckAnswer:
    """One status-check answer: `found=False` is "the PSP has no charge under this key"."""

    name: str
    found: bool
    status: PaymentOrderStatus | None


NOT_FOUND = CheckAnswer("not_found", False, None)
COULD_NOT_ASK = CheckAnswer("could_not_ask", True, None)
CHECK_ANSWERS: tuple[CheckAnswer, ...] = (
    NOT_FOUND,
    COULD_NOT_ASK,
    *(CheckAnswer(f"found_{s.value}", True, s) for s in S),
)


def _check_rule(answer: CheckAnswer, check_number: int) -> Expect:
    """What status check `check_number` (the one the order awaits) decides, with `STATUS_CHECKS` in the schedule."""
    if not answer.found:
        return _retry(S.FAILED_TRANSIENT_ERROR, NO_CHARGE_AT_PSP)
    if answer.status is S.SUCCESSFUL_FINAL:
        return _succeed()
    if answer.status in (S.DECLINED_FINAL, S.FAILED_FINAL):
        return _fail(answer.status)
    if answer.status in NO_MONEY_MOVED:
        return _retry(answer.status, answer.status.value)
    reason = answer.status.value if answer.status is not None else COULD_NOT_ASK_PSP
    if check_number >= STATUS_CHECKS:
        return Expect(Action.RECONCILE, S.NEEDS_RECONCILIATION, 0, reason)
    return _check(None, reason, check_number + 1)


def _charge(status: PaymentOrderStatus | None, attempt: int = ATTEMPT) -> PspOutcome:
    return PspOutcome(attempt=attempt, source=CHARGE, status=status)


def _status_check(answer: CheckAnswer, check_number: int, attempt: int = ATTEMPT) -> PspOutcome:
    return PspOutcome(
        attempt=attempt, source=CHECK, status=answer.status, found=answer.found, check_number=check_number
    )


def _name(value: object) -> str:
    if isinstance(value, CheckAnswer):
        return value.name
    if value is None:
        return "no_status"
    return str(value)


# --- the tables cover everything ------------------------------------------------------------------------------


def test_the_tables_cover_every_status_and_every_answer() -> None:
    groups = (*CHARGEABLE, *AWAITING, *SETTLED)
    assert sorted(groups) == sorted(S), "every status belongs to exactly one group"
    assert set(CHARGEABLE) == {S.INITIATED_PENDING} | RETRYABLE
    assert set(AWAITING) == AWAITING_STATUS_CHECK
    assert set(SETTLED) == TERMINAL | {S.NEEDS_RECONCILIATION}
    assert set(CHARGE_RULES) == set(CHARGE_ANSWERS)
    assert {a.status for a in CHECK_ANSWERS if a.found} == {*S, None}


# --- a charge answer ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", CHARGE_ANSWERS, ids=_name)
@pytest.mark.parametrize("current", CHARGEABLE, ids=_name)
def test_a_charge_answer_for_the_attempt_in_play_moves_the_order_as_the_rules_say(
    current: PaymentOrderStatus, answer: PaymentOrderStatus | None
) -> None:
    state = OrderState(current, ATTEMPT, 0)

    assert decide(state, _charge(answer), POLICY) == CHARGE_RULES[answer].at(state)


@pytest.mark.parametrize("answer", CHARGE_ANSWERS, ids=_name)
@pytest.mark.parametrize("current", AWAITING, ids=_name)
def test_a_charge_answer_while_a_status_check_is_under_way_only_settles_on_a_final_answer(
    current: PaymentOrderStatus, answer: PaymentOrderStatus | None
) -> None:
    state = OrderState(current, ATTEMPT, 1)
    rule = CHARGE_RULES_WHILE_CHECKING[answer]

    assert decide(state, _charge(answer), POLICY) == (rule.at(state) if rule is not None else None)


def test_a_psp_unavailable_charge_answer_while_the_attempt_is_being_checked_never_starts_a_new_charge() -> None:
    # The attempt timed out first (money may have moved); a later call under the same key was refused by the
    # PSP, which says nothing about the first one. Charging attempt 3 now could charge the buyer twice.
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, ATTEMPT, 1)

    assert decide(state, _charge(S.PSP_UNAVAILABLE_TRANSIENT), POLICY) is None


@pytest.mark.parametrize("answer", sorted(NO_MONEY_MOVED), ids=_name)
@pytest.mark.parametrize("current", CHARGEABLE, ids=_name)
def test_a_not_processed_answer_that_proves_nothing_is_checked_before_a_new_key(
    current: PaymentOrderStatus, answer: PaymentOrderStatus
) -> None:
    """A 503 (`unconfirmed`): a proxy in front of the PSP may answer it after the PSP charged. Opening the next
    attempt on it would charge the buyer again under a new key; only a status query may."""
    for attempt in (ATTEMPT, MAX_RETRIES):  # at the limit too: FAILED_FINAL on it would hide a charge
        state = OrderState(current, attempt, 0)
        outcome = PspOutcome(attempt=attempt, source=CHARGE, status=answer, unconfirmed=True)

        assert decide(state, outcome, POLICY) == _check(S.PENDING_STATUS_CHECK_LATER, answer.value + UNCONFIRMED, 1).at(
            state
        )


def test_an_unconfirmed_answer_after_another_call_under_the_key_says_so_in_its_reason() -> None:
    state = OrderState(S.INITIATED_PENDING, ATTEMPT, 0, psp_calls=2)
    outcome = PspOutcome(attempt=ATTEMPT, source=CHARGE, status=S.PSP_UNAVAILABLE_TRANSIENT, unconfirmed=True)

    decision = decide(state, outcome, POLICY)

    assert decision is not None and decision.reason == "PSP_UNAVAILABLE_TRANSIENT" + AFTER_REPEATED_CALL


def test_a_first_charge_that_succeeds_keeps_attempt_zero() -> None:
    state = OrderState(S.INITIATED_PENDING, 0, 0)

    assert decide(state, _charge(S.SUCCESSFUL_FINAL, attempt=0), POLICY) == Decision(
        Action.SUCCEED, S.SUCCESSFUL_FINAL, 0, None
    )


def test_a_declined_charge_stays_declined_rather_than_becoming_a_generic_failure() -> None:
    decision = decide(OrderState(S.INITIATED_PENDING, 0, 0), _charge(S.DECLINED_FINAL, attempt=0), POLICY)

    assert decision is not None
    assert (decision.action, decision.status, decision.reason) == (Action.FAIL, S.DECLINED_FINAL, "DECLINED_FINAL")


# --- a status-check answer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("check_number", range(1, STATUS_CHECKS + 1))
@pytest.mark.parametrize("answer", CHECK_ANSWERS, ids=_name)
@pytest.mark.parametrize("current", AWAITING, ids=_name)
def test_a_status_check_answer_for_the_awaited_check_moves_the_order_as_the_rules_say(
    current: PaymentOrderStatus, answer: CheckAnswer, check_number: int
) -> None:
    state = OrderState(current, ATTEMPT, check_number)

    assert decide(state, _status_check(answer, check_number), POLICY) == _check_rule(answer, check_number).at(state)


@pytest.mark.parametrize("answer", CHECK_ANSWERS, ids=_name)
@pytest.mark.parametrize("current", CHARGEABLE, ids=_name)
def test_a_status_check_answer_for_an_order_not_awaiting_a_check_is_ignored(
    current: PaymentOrderStatus, answer: CheckAnswer
) -> None:
    assert decide(OrderState(current, ATTEMPT, 0), _status_check(answer, 1), POLICY) is None


def test_only_a_not_found_status_check_answer_allows_a_new_attempt_after_an_unknown_outcome() -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, ATTEMPT, 1)

    retried = [a.name for a in CHECK_ANSWERS if _action(decide(state, _status_check(a, 1), POLICY)) is Action.RETRY]

    assert sorted(retried) == ["found_FAILED_TRANSIENT_ERROR", "found_PSP_UNAVAILABLE_TRANSIENT", "not_found"]


def _action(decision: Decision | None) -> Action | None:
    return decision.action if decision is not None else None


# --- settled orders and stale answers are no-ops --------------------------------------------------------------


ALL_OUTCOMES = [
    *(pytest.param(_charge(a), id=f"charge-{_name(a)}") for a in CHARGE_ANSWERS),
    *(pytest.param(_status_check(a, 1), id=f"check-{a.name}") for a in CHECK_ANSWERS),
]


@pytest.mark.parametrize("outcome", ALL_OUTCOMES)
@pytest.mark.parametrize("current", sorted(TERMINAL), ids=_name)
def test_any_answer_for_a_settled_order_is_a_no_op(current: PaymentOrderStatus, outcome: PspOutcome) -> None:
    assert decide(OrderState(current, ATTEMPT, 1), outcome, POLICY) is None


def _parked_rule(outcome: PspOutcome) -> tuple[Action, PaymentOrderStatus, str | None] | None:
    """Defect 4: a parked order leaves on a definitive word about its key, from a charge answer or a check."""
    if outcome.status is S.SUCCESSFUL_FINAL:
        return Action.SUCCEED, S.SUCCESSFUL_FINAL, None
    if outcome.status in (S.DECLINED_FINAL, S.FAILED_FINAL):
        return Action.FAIL, outcome.status, outcome.status.value
    if outcome.source is CHECK and not outcome.found:
        return Action.FAIL, S.FAILED_FINAL, NO_CHARGE_AT_PSP
    if outcome.source is CHECK and outcome.status is S.FAILED_TRANSIENT_ERROR:
        return Action.FAIL, S.FAILED_FINAL, S.FAILED_TRANSIENT_ERROR.value
    return None  # still unknown, or a charge call's "not processed": it stays parked


@pytest.mark.parametrize("outcome", ALL_OUTCOMES)
def test_a_parked_order_leaves_only_on_a_definitive_answer_about_its_key(outcome: PspOutcome) -> None:
    decision = decide(OrderState(S.NEEDS_RECONCILIATION, ATTEMPT, 3), outcome, POLICY)

    expected = _parked_rule(outcome)
    assert (decision.action, decision.status, decision.reason) == expected if decision else expected is None
    if decision is not None:
        assert decision.attempt == ATTEMPT


def test_a_parked_order_ignores_answers_about_another_attempt() -> None:
    outcome = _status_check(CheckAnswer("found_success", True, S.SUCCESSFUL_FINAL), 9, attempt=ATTEMPT - 1)
    assert decide(OrderState(S.NEEDS_RECONCILIATION, ATTEMPT, 9), outcome, POLICY) is None


@pytest.mark.parametrize("stale_attempt", [ATTEMPT - 1, ATTEMPT + 1, 0])
@pytest.mark.parametrize("answer", CHARGE_ANSWERS, ids=_name)
def test_a_charge_answer_about_another_attempt_is_a_no_op(
    answer: PaymentOrderStatus | None, stale_attempt: int
) -> None:
    for current in CHARGEABLE:
        assert decide(OrderState(current, ATTEMPT, 0), _charge(answer, stale_attempt), POLICY) is None


@pytest.mark.parametrize("stale_attempt", [ATTEMPT - 1, ATTEMPT + 1])
@pytest.mark.parametrize("answer", CHECK_ANSWERS, ids=_name)
def test_a_status_check_answer_about_another_attempt_is_a_no_op(answer: CheckAnswer, stale_attempt: int) -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, ATTEMPT, 1)

    assert decide(state, _status_check(answer, 1, stale_attempt), POLICY) is None


@pytest.mark.parametrize("answered_check", [1, 3, 0])
@pytest.mark.parametrize("answer", CHECK_ANSWERS, ids=_name)
def test_a_status_check_answer_about_another_check_number_is_a_no_op(answer: CheckAnswer, answered_check: int) -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, ATTEMPT, 2)

    assert decide(state, _status_check(answer, answered_check), POLICY) is None


# --- boundaries -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", sorted(NO_MONEY_MOVED))
def test_a_transient_charge_answer_one_below_the_retry_limit_still_retries(answer: PaymentOrderStatus) -> None:
    state = OrderState(S.FAILED_TRANSIENT_ERROR, MAX_RETRIES - 1, 0)

    assert decide(state, _charge(answer, MAX_RETRIES - 1), POLICY) == Decision(
        Action.RETRY, answer, MAX_RETRIES, answer.value
    )


@pytest.mark.parametrize("answer", sorted(NO_MONEY_MOVED))
def test_a_transient_charge_answer_at_the_retry_limit_fails_for_good_and_keeps_the_reason(
    answer: PaymentOrderStatus,
) -> None:
    state = OrderState(S.FAILED_TRANSIENT_ERROR, MAX_RETRIES, 0)

    assert decide(state, _charge(answer, MAX_RETRIES), POLICY) == Decision(
        Action.FAIL, S.FAILED_FINAL, MAX_RETRIES, answer.value
    )


def test_a_not_found_status_check_one_below_the_retry_limit_starts_the_last_attempt() -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, MAX_RETRIES - 1, 1)

    assert decide(state, _status_check(NOT_FOUND, 1, MAX_RETRIES - 1), POLICY) == Decision(
        Action.RETRY, S.FAILED_TRANSIENT_ERROR, MAX_RETRIES, NO_CHARGE_AT_PSP
    )


def test_a_not_found_status_check_at_the_retry_limit_fails_for_good() -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, MAX_RETRIES, 1)

    assert decide(state, _status_check(NOT_FOUND, 1, MAX_RETRIES), POLICY) == Decision(
        Action.FAIL, S.FAILED_FINAL, MAX_RETRIES, NO_CHARGE_AT_PSP
    )


def test_with_no_retries_allowed_the_first_transient_answer_is_final() -> None:
    policy = Policy(max_retries=0, status_checks=STATUS_CHECKS)
    state = OrderState(S.INITIATED_PENDING, 0, 0)

    assert decide(state, _charge(S.PSP_UNAVAILABLE_TRANSIENT, 0), policy) == Decision(
        Action.FAIL, S.FAILED_FINAL, 0, "PSP_UNAVAILABLE_TRANSIENT"
    )


@pytest.mark.parametrize("answer", [COULD_NOT_ASK, CheckAnswer("pending", True, S.PENDING_STATUS_CHECK_LATER)])
def test_a_still_pending_answer_to_the_next_to_last_check_schedules_the_last_one(answer: CheckAnswer) -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, ATTEMPT, STATUS_CHECKS - 1)

    decision = decide(state, _status_check(answer, STATUS_CHECKS - 1), POLICY)

    assert decision is not None
    assert (decision.action, decision.check_number) == (Action.CHECK_STATUS, STATUS_CHECKS)


@pytest.mark.parametrize("answer", [COULD_NOT_ASK, CheckAnswer("pending", True, S.PENDING_STATUS_CHECK_LATER)])
def test_a_still_pending_answer_to_the_last_check_parks_the_order_for_reconciliation(answer: CheckAnswer) -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, ATTEMPT, STATUS_CHECKS)

    decision = decide(state, _status_check(answer, STATUS_CHECKS), POLICY)

    assert decision is not None
    assert (decision.action, decision.status, decision.attempt) == (
        Action.RECONCILE,
        S.NEEDS_RECONCILIATION,
        ATTEMPT,
    )


def test_a_single_check_schedule_reconciles_after_its_only_check() -> None:
    policy = Policy(max_retries=MAX_RETRIES, status_checks=1)
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, 0, 1)

    decision = decide(state, _status_check(COULD_NOT_ASK, 1, 0), policy)

    assert decision == Decision(Action.RECONCILE, S.NEEDS_RECONCILIATION, 0, COULD_NOT_ASK_PSP)


# --- the property: every move is legal, and an unknown outcome is never charged again -------------------------

statuses = st.sampled_from(list(S))


@st.composite
def situations(draw: st.DrawFn) -> tuple[OrderState, PspOutcome, Policy]:
    policy = Policy(max_retries=draw(st.integers(0, 6)), status_checks=draw(st.integers(1, 6)))
    state = OrderState(draw(statuses), draw(st.integers(0, 7)), draw(st.integers(0, 7)))
    # Mostly answers about the attempt and check in play, so the interesting paths are not drowned by no-ops.
    attempt = draw(st.one_of(st.just(state.attempt), st.integers(0, 8)))
    check_number = draw(st.one_of(st.just(state.status_check_number), st.integers(0, 8)))
    source = draw(st.sampled_from(list(ResultSource)))
    found = draw(st.booleans()) if source is CHECK else True
    status = draw(st.one_of(st.none(), statuses)) if found else None
    unconfirmed = draw(st.booleans()) if source is CHARGE else False
    check = check_number if source is CHECK else 0
    return state, PspOutcome(attempt, source, status, found, check, unconfirmed), policy


@settings(max_examples=500)
@given(situations())
@example(  # the double-charge trap: a refused call under a key whose first call timed out
    (
        OrderState(S.PENDING_STATUS_CHECK_LATER, 1, 1),
        PspOutcome(1, CHARGE, S.PSP_UNAVAILABLE_TRANSIENT),
        Policy(max_retries=5, status_checks=3),
    )
)
@example(  # the other: a 503 the PSP (or a proxy) gave after charging the only call under the key
    (
        OrderState(S.INITIATED_PENDING, 0, 0),
        PspOutcome(0, CHARGE, S.PSP_UNAVAILABLE_TRANSIENT, unconfirmed=True),
        Policy(max_retries=5, status_checks=3),
    )
)
def test_every_decision_is_a_legal_move_and_an_unknown_charge_outcome_is_never_charged_again(
    situation: tuple[OrderState, PspOutcome, Policy],
) -> None:
    state, outcome, policy = situation

    decision = decide(state, outcome, policy)

    if decision is None:
        return
    assert can_transition(state.status, decision.status)
    assert outcome.attempt == state.attempt
    if decision.action is Action.RETRY:
        # Never charge twice: a new attempt only after an answer proving the last one moved no money.
        assert state.attempt < policy.max_retries
        assert decision.attempt == state.attempt + 1
        assert decision.status in RETRYABLE
        if outcome.source is CHARGE:
            assert outcome.status in NO_MONEY_MOVED
            assert not outcome.unconfirmed  # a 503 never opens a new key by itself
            assert state.status not in AWAITING_STATUS_CHECK
        else:
            assert not outcome.found or outcome.status in NO_MONEY_MOVED
    else:
        assert decision.attempt == state.attempt
    if outcome.source is CHARGE and outcome.status in UNKNOWN_CHARGE_ANSWERS:
        assert decision.action is Action.CHECK_STATUS
    if outcome.source is CHARGE and outcome.unconfirmed and outcome.status not in FINAL_OUTCOMES:
        assert decision.action is Action.CHECK_STATUS
        assert decision.check_number == 1
    if decision.action is Action.CHECK_STATUS:
        assert decision.status in AWAITING_STATUS_CHECK
        assert 1 <= decision.check_number <= policy.status_checks
    if decision.action is Action.RECONCILE:
        assert outcome.source is CHECK
        assert outcome.check_number >= policy.status_checks
    if decision.action in (Action.SUCCEED, Action.FAIL):
        assert decision.status in FINAL_OUTCOMES


@given(situations())
def test_no_answer_moves_a_settled_order(situation: tuple[OrderState, PspOutcome, Policy]) -> None:
    state, outcome, policy = situation
    settled = OrderState(S.SUCCESSFUL_FINAL, state.attempt, state.status_check_number)

    assert decide(settled, outcome, policy) is None
    parked = decide(OrderState(S.NEEDS_RECONCILIATION, state.attempt, state.status_check_number), outcome, policy)
    assert parked is None or parked.status in FINAL_OUTCOMES  # a parked order only ever settles
