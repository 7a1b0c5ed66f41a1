"""A status check may conclude "not charged" only once no call under the attempt's key can still reach the PSP.

A re-taken claim (a redelivery, an in-place retry, a rebalance) makes a second call under the key that may still be
on its way (our claim batcher, the PSP pool's queue, a slow connect) when the first call's answer is applied. The
claim's lease end bounds it (no call outlives its claim's lease, measured on a monotonic clock), so the applier
keeps that moment while the attempt waits for a check, schedules the check no earlier, and asks again when a "no
such charge" comes before it. With fakes; tests/simulation runs the interleaving itself.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from payment_application.apply_psp_result import ApplyPspResult
from payment_application.execute_psp_call import ExecutePspCall
from payment_application.ports.payment_orders import ClaimedAttempt, LockedOrder
from payment_domain.psp_result import (
    NO_CHARGE_AT_PSP,
    WHILE_A_CALL_MAY_BE_SENT,
    Action,
    OrderState,
    Policy,
    PspOutcome,
    ResultSource,
    decide,
)
from payment_domain.status import PaymentOrderStatus
from tests.fakes import FakeClock
from tests.fakes_consumers import (
    COMMISSION,
    CheckRow,
    ConsumerTables,
    FakeClaims,
    FakeEventSink,
    FakePsp,
    FakeResultStore,
    an_order,
)
from tests.fakes_retry import FakeRetryQueue
from tests.unit.application.test_consumer_use_cases import (
    CONSUMER,
    POLICY,
    T0,
    TRACE,
    call_request,
    charge_result,
    check_result,
)

S = PaymentOrderStatus
LEASE = timedelta(seconds=30)
DOMAIN = Policy(max_retries=5, status_checks=3)


class World:
    def __init__(self) -> None:
        self.clock = FakeClock(T0)
        self.tables = ConsumerTables()
        self.retries = FakeRetryQueue()
        self.apply = ApplyPspResult(
            store=FakeResultStore(self.tables, self.clock),
            retries=self.retries,
            policy=POLICY,
            randint=random.Random(5).randint,
            consumer=CONSUMER,
            commission=COMMISSION,
        )
        self.claims = FakeClaims(self.tables, self.clock)

    async def claim(self, token: str) -> ClaimedAttempt | None:
        return await self.claims.claim_attempt(7, attempt=0, claim_token=token, lease_seconds=LEASE.total_seconds())


@pytest.fixture
def world() -> World:
    return World()


# --- the decision -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("found", "status"), [(False, None), (True, S.FAILED_TRANSIENT_ERROR), (True, S.PSP_UNAVAILABLE_TRANSIENT)]
)
def test_no_money_moved_while_a_call_may_be_sent_is_asked_again_not_a_new_attempt(
    found: bool, status: PaymentOrderStatus | None
) -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, 0, 1, psp_calls=2, call_may_be_sent=True)
    outcome = PspOutcome(0, ResultSource.STATUS_CHECK, status, found=found, check_number=1)

    decision = decide(state, outcome, DOMAIN)

    assert decision is not None
    assert (decision.action, decision.status, decision.attempt, decision.check_number) == (
        Action.CHECK_STATUS,
        S.PENDING_STATUS_CHECK_LATER,
        0,
        2,
    )
    assert decision.reason is not None and decision.reason.endswith(WHILE_A_CALL_MAY_BE_SENT)


def test_no_money_moved_at_the_last_check_while_a_call_may_be_sent_parks_the_order() -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, 0, 3, psp_calls=2, call_may_be_sent=True)

    decision = decide(state, PspOutcome(0, ResultSource.STATUS_CHECK, None, found=False, check_number=3), DOMAIN)

    assert decision is not None and decision.action is Action.RECONCILE
    assert decision.reason == NO_CHARGE_AT_PSP + WHILE_A_CALL_MAY_BE_SENT


def test_a_parked_order_is_not_failed_on_no_such_charge_while_a_call_may_be_sent() -> None:
    parked = OrderState(S.NEEDS_RECONCILIATION, 0, 3, psp_calls=2, call_may_be_sent=True)
    answer = PspOutcome(0, ResultSource.STATUS_CHECK, None, found=False, check_number=4)

    assert decide(parked, answer, DOMAIN) is None
    assert decide(OrderState(S.NEEDS_RECONCILIATION, 0, 3, psp_calls=2), answer, DOMAIN) is not None


def test_a_charge_answer_is_decided_as_before_whatever_may_still_be_on_its_way() -> None:
    state = OrderState(S.PENDING_STATUS_CHECK_LATER, 0, 1, psp_calls=2, call_may_be_sent=True)
    charged = PspOutcome(0, ResultSource.STATUS_CHECK, S.SUCCESSFUL_FINAL, check_number=1)

    decision = decide(state, charged, DOMAIN)

    assert decision is not None and decision.action is Action.SUCCEED


def test_a_bound_is_in_force_only_before_it() -> None:
    locked = LockedOrder(an_order(), 1, 2, calls_until=T0 + LEASE)

    assert locked.state_at(T0).call_may_be_sent
    assert not locked.state_at(T0 + LEASE).call_may_be_sent
    assert not LockedOrder(an_order(), 1, 2).state_at(T0).call_may_be_sent


# --- the applier ------------------------------------------------------------------------------------------------


async def test_a_timeout_while_a_second_call_is_claimed_schedules_the_check_after_its_lease(world: World) -> None:
    """Call 1 timed out; the same delivery re-took the claim (call 2) before call 1's answer was applied."""
    order = world.tables.add_order(an_order())
    assert await world.claim("psp/0/1") is not None
    world.clock.advance(timedelta(seconds=1))
    assert await world.claim("psp/0/1") is not None  # call 2: its lease runs to T0 + 1 s + 30 s
    world.clock.advance(timedelta(seconds=1))

    await world.apply(charge_result(order, S.TIMEOUT_EXCEEDED_1S_TRANSIENT))

    row = world.tables.orders[7]
    assert (row.order.status, row.claim_token, row.claim_expires_at) == (
        S.PENDING_STATUS_CHECK_LATER,
        None,
        T0 + timedelta(seconds=1) + LEASE,
    )
    assert world.tables.checks == [
        CheckRow(1, 7, attempt=0, check_number=1, due_at=T0 + timedelta(seconds=1) + LEASE, trace_id=TRACE)
    ]


async def test_no_such_charge_before_the_bound_asks_again_and_after_it_opens_the_next_attempt(world: World) -> None:
    order = world.tables.add_order(an_order())
    await world.claim("psp/0/1")
    await world.claim("psp/0/1")
    await world.apply(charge_result(order, S.TIMEOUT_EXCEEDED_1S_TRANSIENT))
    waiting = world.tables.order(7)

    world.clock.advance(LEASE - timedelta(milliseconds=1))  # the check ran early (a check in flight, a redelivery)
    early = await world.apply(check_result(waiting, check_number=1, found=False))

    assert early.decision is not None and early.decision.action is Action.CHECK_STATUS
    assert (world.tables.order(7).status, world.tables.order(7).retry_count) == (S.PENDING_STATUS_CHECK_LATER, 0)
    assert world.retries.queued == {}
    assert world.tables.checks[-1].check_number == 2
    assert world.tables.checks[-1].due_at == world.clock.now() + timedelta(seconds=30)

    world.clock.advance(timedelta(seconds=30))
    late = await world.apply(check_result(world.tables.order(7), check_number=2, found=False))

    assert late.decision is not None and late.decision.action is Action.RETRY
    assert (world.tables.order(7).retry_count, world.tables.orders[7].claim_expires_at) == (1, None)
    assert list(world.retries.queued) == ["7:1"]


async def test_the_only_calls_own_timeout_keeps_no_bound_and_the_check_comes_at_its_delay(world: World) -> None:
    order = world.tables.add_order(an_order())
    await world.claim("psp/0/1")

    await world.apply(charge_result(order, S.TIMEOUT_EXCEEDED_1S_TRANSIENT))

    assert world.tables.orders[7].claim_expires_at is None
    assert world.tables.checks[0].due_at == T0 + timedelta(seconds=5)


async def test_a_settled_or_moved_on_attempt_keeps_no_bound(world: World) -> None:
    order = world.tables.add_order(an_order())
    await world.claim("psp/0/1")
    await world.claim("psp/0/1")

    await world.apply(charge_result(order, S.SUCCESSFUL_FINAL))

    assert world.tables.orders[7].claim_expires_at is None


# --- the executor's clock ---------------------------------------------------------------------------------------


class SteppedBackWallClock(FakeClock):
    """A wall clock set back by as much as the monotonic clock ran on: to a wall clock no time has passed."""

    def __init__(self) -> None:
        super().__init__(T0)
        self.ran = 0.0

    def monotonic(self) -> float:
        return self.ran


class SlowFirstClaim(FakeClaims):
    """The first claim takes the whole lease to come back (a stalled event loop, a claim batch waiting)."""

    def __init__(self, tables: ConsumerTables, clock: SteppedBackWallClock) -> None:
        super().__init__(tables, clock)
        self.wall = clock

    async def claim_attempt(
        self, payment_order_id: int, *, attempt: int, claim_token: str, lease_seconds: float
    ) -> ClaimedAttempt | None:
        claimed = await super().claim_attempt(
            payment_order_id, attempt=attempt, claim_token=claim_token, lease_seconds=lease_seconds
        )
        if len(self.calls) == 1:
            self.wall.ran += lease_seconds
        return claimed


async def test_a_claim_too_old_to_call_is_judged_on_the_monotonic_clock_not_the_wall_clock() -> None:
    clock, tables, psp = SteppedBackWallClock(), ConsumerTables(), FakePsp()
    tables.add_order(an_order())
    claims = SlowFirstClaim(tables, clock)
    execute = ExecutePspCall(
        claims=claims,
        psp=psp,
        events=FakeEventSink(),
        clock=clock,
        monotonic=clock,
        lease_seconds=LEASE.total_seconds(),
        call_budget_seconds=1.5,
    )

    await execute(call_request(an_order()), delivery="psp/0/1")

    assert len(claims.calls) == 2  # the first claim came back too late to call under: claimed again, then called
    assert len(psp.charges) == 1
