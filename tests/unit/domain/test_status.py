"""The payment order state machine: the transition table is the specification, so the tests enumerate it."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from payment_domain.errors import IllegalTransition
from payment_domain.status import (
    AWAITING_STATUS_CHECK,
    IN_FLIGHT,
    RETRYABLE,
    TERMINAL,
    TRANSITIONS,
    PaymentOrderStatus,
    PaymentStatus,
    can_transition,
    is_terminal,
    map_psp_status,
    roll_up,
    transition,
)

S = PaymentOrderStatus
ALL_PAIRS = list(itertools.product(S, S))
LISTED = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
UNLISTED = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]


def _pair_id(pair: tuple[PaymentOrderStatus, PaymentOrderStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_the_table_has_a_row_for_every_status() -> None:
    assert set(TRANSITIONS) == set(S)


def test_the_table_only_names_known_statuses() -> None:
    assert all(set(targets) <= set(S) for targets in TRANSITIONS.values())


def test_the_table_partitions_every_pair_into_allowed_or_refused() -> None:
    assert len(LISTED) + len(UNLISTED) == len(S) ** 2
    assert LISTED, "a table with no moves would make every test below vacuous"


@pytest.mark.parametrize("pair", LISTED, ids=_pair_id)
def test_every_listed_move_is_allowed(pair: tuple[PaymentOrderStatus, PaymentOrderStatus]) -> None:
    current, target = pair
    assert transition(current, target) is target
    assert can_transition(current, target)


@pytest.mark.parametrize("pair", UNLISTED, ids=_pair_id)
def test_every_unlisted_move_raises_illegal_transition(
    pair: tuple[PaymentOrderStatus, PaymentOrderStatus],
) -> None:
    current, target = pair
    assert not can_transition(current, target)
    with pytest.raises(IllegalTransition) as raised:
        transition(current, target)
    assert raised.value.code == "illegal_transition"
    assert current.value in str(raised.value)
    assert target.value in str(raised.value)


def test_only_a_retry_or_a_status_check_may_end_in_the_status_it_started_from() -> None:
    assert {s for s in S if s in TRANSITIONS[s]} == RETRYABLE | AWAITING_STATUS_CHECK


def test_nothing_may_move_back_to_initiated_pending() -> None:
    assert [s for s in S if S.INITIATED_PENDING in TRANSITIONS[s]] == []


def test_terminal_statuses_are_exactly_the_four_finals() -> None:
    assert frozenset({S.SUCCESSFUL_FINAL, S.FAILED_FINAL, S.DECLINED_FINAL, S.UNKNOWN_FINAL}) == TERMINAL
    assert all(is_terminal(s) == (s in TERMINAL) for s in S)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_a_terminal_status_has_no_exits(terminal: PaymentOrderStatus) -> None:
    assert TRANSITIONS[terminal] == frozenset()
    for target in S:
        with pytest.raises(IllegalTransition):
            transition(terminal, target)


def _reachable_from(start: PaymentOrderStatus) -> set[PaymentOrderStatus]:
    seen: set[PaymentOrderStatus] = set()
    queue = deque([start])
    while queue:
        for nxt in TRANSITIONS[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


@pytest.mark.parametrize("status", sorted(set(S) - TERMINAL))
def test_every_non_terminal_status_can_reach_a_terminal_one(status: PaymentOrderStatus) -> None:
    assert _reachable_from(status) & TERMINAL


@pytest.mark.parametrize("status", sorted(set(S) - TERMINAL))
def test_every_non_terminal_status_can_reach_success(status: PaymentOrderStatus) -> None:
    assert S.SUCCESSFUL_FINAL in _reachable_from(status)


def test_needs_reconciliation_is_only_settled_by_a_final_outcome() -> None:
    settled_by = TRANSITIONS[S.NEEDS_RECONCILIATION]
    assert frozenset({S.SUCCESSFUL_FINAL, S.FAILED_FINAL, S.DECLINED_FINAL}) == settled_by


def test_only_a_status_check_can_park_an_order_for_reconciliation() -> None:
    parkers = {s for s in S if S.NEEDS_RECONCILIATION in TRANSITIONS[s]}
    assert parkers == {
        S.AUTH_NEEDED_STAUS_CHECK_LATER,
        S.PENDING_STATUS_CHECK_LATER,
        S.CAPTURE_PENDING_STATUS_CHECK_LATER,
    }


# --- roll_up --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pending", sorted(set(S) - TERMINAL))
def test_any_non_terminal_order_keeps_the_payment_initiated(pending: PaymentOrderStatus) -> None:
    assert roll_up([S.SUCCESSFUL_FINAL, pending, S.FAILED_FINAL]) is PaymentStatus.INITIATED
    assert roll_up([pending]) is PaymentStatus.INITIATED


def test_all_orders_successful_rolls_up_to_success() -> None:
    assert roll_up([S.SUCCESSFUL_FINAL] * 3) is PaymentStatus.SUCCESS


@pytest.mark.parametrize("failure", sorted(TERMINAL - {S.SUCCESSFUL_FINAL}))
def test_no_successful_order_rolls_up_to_failed(failure: PaymentOrderStatus) -> None:
    assert roll_up([failure]) is PaymentStatus.FAILED
    assert roll_up([failure, S.FAILED_FINAL, S.DECLINED_FINAL, S.UNKNOWN_FINAL]) is PaymentStatus.FAILED


@pytest.mark.parametrize("failure", sorted(TERMINAL - {S.SUCCESSFUL_FINAL}))
def test_mixed_terminal_outcomes_roll_up_to_partially_succeeded(failure: PaymentOrderStatus) -> None:
    assert roll_up([S.SUCCESSFUL_FINAL, failure]) is PaymentStatus.PARTIALLY_SUCCEEDED
    assert roll_up([failure, S.SUCCESSFUL_FINAL, S.SUCCESSFUL_FINAL]) is PaymentStatus.PARTIALLY_SUCCEEDED


def test_a_payment_without_orders_rolls_up_to_initiated() -> None:
    assert roll_up([]) is PaymentStatus.INITIATED


def test_roll_up_accepts_a_one_shot_iterator() -> None:
    assert roll_up(iter([S.SUCCESSFUL_FINAL, S.SUCCESSFUL_FINAL])) is PaymentStatus.SUCCESS


# --- map_psp_status -------------------------------------------------------------------------------

PSP_NAMES = sorted(set(S) - {S.INITIATED_PENDING, S.NEEDS_RECONCILIATION})


@pytest.mark.parametrize("status", PSP_NAMES)
def test_every_known_psp_status_name_maps_to_itself_in_any_case(status: PaymentOrderStatus) -> None:
    assert map_psp_status(status.value) is status
    assert map_psp_status(status.value.lower()) is status
    assert map_psp_status(status.value.title()) is status
    assert map_psp_status(f"  {status.value.lower()}\n") is status


@pytest.mark.parametrize("raw", ["PENDING", "pending", " Pending ", "PENDING_STATUS_CHECK_LATER"])
def test_pending_means_check_later(raw: str) -> None:
    assert map_psp_status(raw) is S.PENDING_STATUS_CHECK_LATER


@pytest.mark.parametrize("raw", ["", "   ", "SUCCESS", "OK", "SUCCESSFUL_FINAL!", "42", "null", "ÜNKNOWN"])
def test_an_unrecognised_psp_answer_maps_to_unknown_final(raw: str) -> None:
    assert map_psp_status(raw) is S.UNKNOWN_FINAL


@pytest.mark.parametrize("internal", [S.INITIATED_PENDING, S.NEEDS_RECONCILIATION])
def test_a_psp_cannot_put_an_order_in_an_internal_only_status(internal: PaymentOrderStatus) -> None:
    assert map_psp_status(internal.value) is S.UNKNOWN_FINAL
    assert map_psp_status(internal.value.lower()) is S.UNKNOWN_FINAL


def test_in_flight_statuses_are_those_neither_terminal_nor_parked_for_a_human() -> None:
    parked = {PaymentOrderStatus.NEEDS_RECONCILIATION}
    assert IN_FLIGHT | TERMINAL | parked == set(PaymentOrderStatus)
    assert not IN_FLIGHT & (TERMINAL | parked)
    assert PaymentOrderStatus.INITIATED_PENDING in IN_FLIGHT
