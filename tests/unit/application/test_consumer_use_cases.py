"""The payment-consumers use cases with hand-written fakes: enqueue, execute, apply, status check, dispatch checks.

Every hop is at-least-once, so most tests deliver something twice and check that the second delivery changes
nothing that matters: no second charge, no second event, no second retry.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from payment_application.apply_psp_result import ApplyPspResult, ResultPolicy, UnknownPaymentOrder
from payment_application.check_payment_status import CheckPaymentStatus
from payment_application.dispatch_status_checks import DispatchStatusChecks
from payment_application.enqueue_psp_call import EnqueuePspCall
from payment_application.execute_psp_call import ExecutePspCall
from payment_application.ports.psp import PspCallResult, PspChargeRequest, PspStatusResult
from payment_domain.events import (
    EventEnvelope,
    EventType,
    deterministic_event_id,
    payment_order_created,
    psp_call_requested,
    psp_result_updated,
    status_check_requested,
)
from payment_domain.payment import PaymentOrder
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.psp_answer import answer_for_psp_status as psp_said
from payment_domain.psp_result import NO_CHARGE_AT_PSP, Action, ResultSource
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from payment_domain.topics import Topic
from tests.fakes import FakeClock
from tests.fakes_consumers import (
    COMMISSION,
    CheckRow,
    ConsumerTables,
    FakeClaims,
    FakeEventSink,
    FakePsp,
    FakeResultStore,
    FakeStatusCheckQueue,
    an_order,
)
from tests.fakes_retry import FakeRetryQueue

S = PaymentOrderStatus
REFUSED_429 = PspAnswer(AnswerKind.NOT_CHARGED)  # what the gateway makes of a 429: proven not executed
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRACE = "trace-1"
CONSUMER = "psp-result-applier"
LEASE_SECONDS = 30.0
POLICY = ResultPolicy(max_retries=5, retry_base_ms=2_000, retry_max_ms=60_000, status_check_delays_seconds=(5, 30, 120))
PAYMENT = 3


@dataclass
class World:
    """One consumer deployment over fakes that share one set of tables."""

    clock: FakeClock
    tables: ConsumerTables
    sink: FakeEventSink
    psp: FakePsp
    store: FakeResultStore
    retries: FakeRetryQueue
    checks: FakeStatusCheckQueue
    randint: Callable[[int, int], int]

    @property
    def enqueue(self) -> EnqueuePspCall:
        return EnqueuePspCall(events=self.sink, clock=self.clock)

    @property
    def execute(self) -> ExecutePspCall:
        claims = FakeClaims(self.tables, self.clock)
        return ExecutePspCall(
            claims=claims,
            psp=self.psp,
            events=self.sink,
            clock=self.clock,
            monotonic=self.clock,
            lease_seconds=LEASE_SECONDS,
        )

    @property
    def apply(self) -> ApplyPspResult:
        return ApplyPspResult(
            store=self.store,
            retries=self.retries,
            policy=POLICY,
            randint=self.randint,
            consumer=CONSUMER,
            commission=COMMISSION,
        )

    @property
    def check_status(self) -> CheckPaymentStatus:
        return CheckPaymentStatus(psp=self.psp, events=self.sink, clock=self.clock)

    @property
    def dispatch_checks(self) -> DispatchStatusChecks:
        return DispatchStatusChecks(checks=self.checks, events=self.sink, clock=self.clock, lease_seconds=LEASE_SECONDS)

    def emitted(self, event_type: EventType) -> list[EventEnvelope]:
        return [e for e in self.sink.emitted if e.event_type is event_type]


@pytest.fixture
def world() -> World:
    clock, tables = FakeClock(T0), ConsumerTables()
    return World(
        clock=clock,
        tables=tables,
        sink=FakeEventSink(),
        psp=FakePsp(),
        store=FakeResultStore(tables, clock),
        retries=FakeRetryQueue(),
        checks=FakeStatusCheckQueue(tables, clock),
        randint=random.Random(20260301).randint,
    )


def charge_result(
    order: PaymentOrder, status: PaymentOrderStatus, *, attempt: int | None = None, error: str | None = None
) -> EventEnvelope:
    return psp_result_updated(
        order,
        attempt=order.retry_count if attempt is None else attempt,
        psp_status=status,
        latency_ms=12,
        source=ResultSource.CHARGE,
        error_detail=error,
        trace_id=TRACE,
        parent_event_id="request-1",
        now=T0,
    )


def check_result(
    order: PaymentOrder, *, check_number: int, found: bool = True, status: PaymentOrderStatus | None = None
) -> EventEnvelope:
    return psp_result_updated(
        order,
        attempt=order.retry_count,
        psp_status=status,
        latency_ms=9,
        source=ResultSource.STATUS_CHECK,
        check_number=check_number,
        found=found,
        trace_id=TRACE,
        parent_event_id="check-1",
        now=T0,
    )


def call_request(order: PaymentOrder, attempt: int | None = None) -> EventEnvelope:
    attempt = order.retry_count if attempt is None else attempt
    return psp_call_requested(order, attempt=attempt, trace_id=TRACE, parent_event_id="created-1", now=T0)


# --- enqueue --------------------------------------------------------------------------------------------------


async def test_a_created_order_becomes_a_request_for_attempt_0_with_a_deterministic_id(world: World) -> None:
    created = payment_order_created(an_order(), trace_id=TRACE, now=T0)

    request = await world.enqueue(created)

    assert request is not None
    assert world.sink.emitted == [request]
    assert request.event_type is EventType.PSP_CALL_REQUESTED
    assert request.topic is Topic.PSP_CALL_REQUESTED
    assert request.event_id == deterministic_event_id(EventType.PSP_CALL_REQUESTED, "paymentorder-7", 0)
    assert (request.parent_event_id, request.trace_id, request.aggregate_id) == (created.event_id, TRACE, "7")
    assert request.payload.attempt == 0


async def test_enqueueing_the_same_created_event_twice_emits_the_same_event_id(world: World) -> None:
    created = payment_order_created(an_order(), trace_id=TRACE, now=T0)

    first = await world.enqueue(created)
    world.clock.advance(timedelta(minutes=1))
    again = await world.enqueue(created)

    assert first is not None and again is not None
    assert first.event_id == again.event_id


async def test_a_created_event_for_an_order_that_is_no_longer_initiated_is_skipped(world: World) -> None:
    created = payment_order_created(an_order(status=S.FAILED_FINAL), trace_id=TRACE, now=T0)

    assert await world.enqueue(created) is None
    assert world.sink.attempts == []


async def test_enqueue_refuses_an_event_of_another_type(world: World) -> None:
    with pytest.raises(ValueError, match="payment_order_created"):
        await world.enqueue(call_request(an_order()))


# --- execute --------------------------------------------------------------------------------------------------


async def test_execute_claims_the_attempt_charges_under_its_key_and_emits_the_answer(world: World) -> None:
    order = world.tables.add_order(an_order(attempt=2, status=S.PSP_UNAVAILABLE_TRANSIENT))
    world.psp.script_charge(
        "paymentorder-7-2", PspCallResult(psp_said(S.DECLINED_FINAL), 40, "DO_NOT_HONOR", "declined")
    )
    request = call_request(order)

    result = await world.execute(request, delivery="p1-o10")

    assert world.psp.charges == [
        PspChargeRequest(
            idempotency_key="paymentorder-7-2",
            merchant_reference="paymentorder-7",
            amount_minor=2_507,
            currency="EUR",
            seller_id="seller-7",
        )
    ]
    assert world.tables.orders[7].claim_token == "p1-o10"
    assert result is not None
    assert world.sink.emitted == [result]
    assert result.event_type is EventType.PSP_RESULT_UPDATED
    assert result.event_id == deterministic_event_id(EventType.PSP_RESULT_UPDATED, "paymentorder-7", 2, "charge", 0, 1)
    assert (result.parent_event_id, result.trace_id, result.aggregate_id) == (request.event_id, TRACE, "7")
    answer = result.payload
    assert (answer.attempt, answer.psp_status, answer.source, answer.error_code, answer.latency_ms) == (
        2,
        S.DECLINED_FINAL,
        ResultSource.CHARGE,
        "DO_NOT_HONOR",
        40,
    )


async def test_a_duplicate_request_from_another_delivery_while_the_claim_is_live_makes_no_psp_call(
    world: World,
) -> None:
    order = world.tables.add_order(an_order())

    await world.execute(call_request(order), delivery="p1-o10")
    world.clock.advance(timedelta(seconds=LEASE_SECONDS))
    duplicate = await world.execute(call_request(order), delivery="p1-o11")

    assert duplicate is None
    assert world.psp.charged_keys() == ["paymentorder-7-0"]
    assert len(world.sink.emitted) == 1


async def test_another_delivery_may_take_the_claim_once_its_lease_ran_out(world: World) -> None:
    order = world.tables.add_order(an_order())

    await world.execute(call_request(order), delivery="p1-o10")
    world.clock.advance(timedelta(seconds=LEASE_SECONDS, milliseconds=1))
    taken_over = await world.execute(call_request(order), delivery="p1-o11")

    assert taken_over is not None
    assert world.psp.charged_keys() == ["paymentorder-7-0", "paymentorder-7-0"]  # same key: the PSP replays it


async def test_the_same_delivery_may_take_its_own_claim_again(world: World) -> None:
    order = world.tables.add_order(an_order())

    await world.execute(call_request(order), delivery="p1-o10")
    again = await world.execute(call_request(order), delivery="p1-o10")

    assert again is not None
    assert world.psp.charged_keys() == ["paymentorder-7-0", "paymentorder-7-0"]


async def test_a_refused_call_is_not_trusted_once_another_call_under_the_key_charged(world: World) -> None:
    """Defect 1: the first call is refused (429), its answer is emitted, the same delivery takes the claim again
    (a crash before the offset commit) and the second call charges. Before the fix both answers had one event id,
    the charge was dropped as a duplicate and the refusal opened attempt 1: a second charge."""
    order = world.tables.add_order(an_order())
    world.psp.script_charge(
        "paymentorder-7-0",
        PspCallResult(REFUSED_429, 3, "HTTP_429"),
        PspCallResult(psp_said(S.SUCCESSFUL_FINAL), 40),
    )

    refused = await world.execute(call_request(order), delivery="p1-o10")
    charged = await world.execute(call_request(order), delivery="p1-o10")  # redelivered after a crash
    assert refused is not None and charged is not None
    assert refused.event_id != charged.event_id
    assert (refused.payload.call_number, charged.payload.call_number) == (1, 2)

    after_refusal = await world.apply(refused)
    assert after_refusal.decision is not None and after_refusal.decision.action is Action.CHECK_STATUS
    assert world.retries.queued == {}
    after_charge = await world.apply(charged)
    assert after_charge.decision is not None and after_charge.decision.action is Action.SUCCEED
    assert world.tables.order(7).status is S.SUCCESSFUL_FINAL
    assert world.psp.charged_keys() == ["paymentorder-7-0", "paymentorder-7-0"]  # one key: the PSP charges once


async def test_a_refused_answer_applied_before_a_second_claim_closes_the_attempt_to_it(world: World) -> None:
    order = world.tables.add_order(an_order())
    world.psp.script_charge("paymentorder-7-0", PspCallResult(REFUSED_429, 3, "HTTP_429"))
    refused = await world.execute(call_request(order), delivery="p1-o10")
    assert refused is not None

    applied = await world.apply(refused)  # the only call under the key: trusted, attempt 1 opens

    assert applied.decision is not None and applied.decision.action is Action.RETRY
    assert await world.execute(call_request(order), delivery="p1-o10") is None  # attempt 0 can no longer be taken
    assert world.psp.charged_keys() == ["paymentorder-7-0"]


async def test_a_psp_that_charged_then_answered_503_is_asked_before_a_new_key_and_charged_once(world: World) -> None:
    """A proxy in front of the PSP answers 503 after an upstream reset: the PSP charged attempt 0. Before the fix
    the 503 was trusted as "not executed" and attempt 1 charged a second time under a new key."""
    order = world.tables.add_order(an_order())
    world.psp.script_charge("paymentorder-7-0", PspCallResult(PspAnswer(AnswerKind.UNAVAILABLE), 3, "HTTP_503"))
    world.psp.script_status("paymentorder-7-0", PspStatusResult(psp_said(S.SUCCESSFUL_FINAL), latency_ms=7))
    request = await world.enqueue(payment_order_created(order, trace_id=TRACE, now=T0))
    assert request is not None

    await _deliver_twice_and_apply(world, request)
    unconfirmed = world.tables.order(7)
    assert (unconfirmed.status, unconfirmed.retry_count, unconfirmed.retry_reason) == (
        S.PENDING_STATUS_CHECK_LATER,
        0,
        "PSP_UNAVAILABLE_TRANSIENT_UNCONFIRMED",
    )
    assert world.retries.schedule_calls == []
    world.clock.advance(timedelta(seconds=5))
    await world.dispatch_checks.dispatch_batch(limit=10)
    [check_request] = world.emitted(EventType.STATUS_CHECK_REQUESTED)
    await _deliver_twice_and_apply(world, check_request, execute=False)

    assert world.psp.charged_keys() == ["paymentorder-7-0"]
    assert world.psp.status_queries == ["paymentorder-7-0"] * 2
    assert world.tables.order(7).status is S.SUCCESSFUL_FINAL
    assert world.retries.schedule_calls == []


async def test_a_503_the_status_query_finds_no_charge_for_opens_the_next_attempt(world: World) -> None:
    order = world.tables.add_order(an_order())
    world.psp.script_charge("paymentorder-7-0", PspCallResult(PspAnswer(AnswerKind.UNAVAILABLE), 3, "HTTP_503"))
    await _charge_then_first_check(world, order)  # the PSP: no such charge

    saved = world.tables.order(7)
    assert (saved.status, saved.retry_count, saved.retry_reason) == (S.FAILED_TRANSIENT_ERROR, 1, NO_CHARGE_AT_PSP)
    assert list(world.retries.queued) == ["7:1"]


async def test_a_refused_call_on_a_first_claim_stays_retryable(world: World) -> None:
    order = world.tables.add_order(an_order())
    world.psp.script_charge("paymentorder-7-0", PspCallResult(psp_said(S.PSP_UNAVAILABLE_TRANSIENT), 3, "REJECTED"))

    result = await world.execute(call_request(order), delivery="p1-o10")

    assert result is not None and result.payload.psp_status is S.PSP_UNAVAILABLE_TRANSIENT


async def test_a_request_for_a_stale_attempt_makes_no_psp_call(world: World) -> None:
    world.tables.add_order(an_order(attempt=1, status=S.FAILED_TRANSIENT_ERROR))

    assert await world.execute(call_request(an_order(), attempt=0), delivery="p1-o10") is None
    assert world.psp.charges == []
    assert world.sink.attempts == []


@pytest.mark.parametrize("status", [S.PENDING_STATUS_CHECK_LATER, S.SUCCESSFUL_FINAL, S.NEEDS_RECONCILIATION])
async def test_a_request_for_an_order_that_is_not_chargeable_makes_no_psp_call(
    world: World, status: PaymentOrderStatus
) -> None:
    order = world.tables.add_order(an_order(status=status))

    assert await world.execute(call_request(order), delivery="p1-o10") is None
    assert world.psp.charges == []


# --- apply: final answers -------------------------------------------------------------------------------------


async def test_a_successful_charge_settles_the_order_and_writes_one_succeeded_event(world: World) -> None:
    order = world.tables.add_order(an_order())
    world.tables.add_order(an_order(8))
    result = charge_result(order, S.SUCCESSFUL_FINAL)

    applied = await world.apply(result)

    assert applied.decision is not None and applied.decision.action is Action.SUCCEED
    assert world.tables.order(7).status is S.SUCCESSFUL_FINAL
    [event] = world.tables.outbox
    assert event.event_type.value == "payment_order_success"
    assert event.topic.value == "payment_order_succeeded_topic"
    assert event.aggregate_id == "7"
    assert event.event_id == deterministic_event_id(EventType.PAYMENT_ORDER_SUCCEEDED, "paymentorder-7")
    assert (event.parent_event_id, event.trace_id) == (result.event_id, TRACE)
    assert event.payload.order.status is S.SUCCESSFUL_FINAL
    assert world.tables.payments[PAYMENT] is PaymentStatus.INITIATED  # order 8 has not answered yet
    assert world.retries.schedule_calls == []
    assert world.tables.checks == []


async def test_the_payment_rolls_up_to_success_when_every_order_succeeded(world: World) -> None:
    seven, eight = world.tables.add_order(an_order(7)), world.tables.add_order(an_order(8))

    await world.apply(charge_result(seven, S.SUCCESSFUL_FINAL))
    await world.apply(charge_result(eight, S.SUCCESSFUL_FINAL))

    assert world.tables.payments[PAYMENT] is PaymentStatus.SUCCESS


async def test_the_payment_rolls_up_to_partially_succeeded_when_outcomes_are_mixed(world: World) -> None:
    seven, eight = world.tables.add_order(an_order(7)), world.tables.add_order(an_order(8))

    await world.apply(charge_result(seven, S.SUCCESSFUL_FINAL))
    await world.apply(charge_result(eight, S.DECLINED_FINAL, error="card declined"))

    assert world.tables.payments[PAYMENT] is PaymentStatus.PARTIALLY_SUCCEEDED
    assert [e.event_type for e in world.tables.outbox] == [
        EventType.PAYMENT_ORDER_SUCCEEDED,
        EventType.PAYMENT_ORDER_FAILED,
    ]
    failed = world.tables.outbox[1]
    assert failed.topic is Topic.PAYMENT_ORDER_FAILED
    assert (failed.payload.order.status, failed.payload.order.retry_reason) == (S.DECLINED_FINAL, "DECLINED_FINAL")
    assert world.tables.order(8).last_error_message == "card declined"


async def test_the_payment_rolls_up_to_failed_when_no_order_succeeded(world: World) -> None:
    seven, eight = world.tables.add_order(an_order(7)), world.tables.add_order(an_order(8))

    await world.apply(charge_result(seven, S.FAILED_FINAL))
    await world.apply(charge_result(eight, S.DECLINED_FINAL))

    assert world.tables.payments[PAYMENT] is PaymentStatus.FAILED


async def test_the_same_result_applied_twice_changes_nothing_the_second_time(world: World) -> None:
    order = world.tables.add_order(an_order())
    result = charge_result(order, S.SUCCESSFUL_FINAL)
    await world.apply(result)
    after_first = world.tables.snapshot()

    again = await world.apply(result)

    assert again.duplicate and again.decision is None
    assert world.tables == after_first
    assert len(world.tables.outbox) == 1


async def test_a_result_for_an_unknown_order_raises_and_writes_nothing(world: World) -> None:
    world.tables.add_order(an_order())
    before = world.tables.snapshot()

    with pytest.raises(UnknownPaymentOrder):
        await world.apply(charge_result(an_order(99), S.SUCCESSFUL_FINAL))

    assert world.tables == before


# --- apply: retries -------------------------------------------------------------------------------------------

ATTEMPT_3_BOUNDS = (4_000, 8_000)  # equal jitter for attempt 3: cap = min(60 s, 2 s * 2^2) = 8 s, in [cap/2, cap]


@pytest.mark.parametrize(
    ("pick", "expected"),
    [
        pytest.param(lambda low, high: low, 4_000, id="lowest"),
        pytest.param(lambda low, high: high, 8_000, id="highest"),
        pytest.param(random.Random(1).randint, None, id="seeded"),
    ],
)
async def test_a_transient_answer_queues_exactly_one_retry_within_the_equal_jitter_bounds(
    world: World, pick: Callable[[int, int], int], expected: int | None
) -> None:
    world.randint = pick
    order = world.tables.add_order(an_order(attempt=2, status=S.FAILED_TRANSIENT_ERROR), psp_calls=1)
    result = charge_result(order, S.PSP_UNAVAILABLE_TRANSIENT)

    applied = await world.apply(result)

    assert applied.decision is not None and applied.decision.action is Action.RETRY
    [(member, delay)] = world.retries.schedule_calls
    assert member == "7:3"
    assert ATTEMPT_3_BOUNDS[0] <= delay <= ATTEMPT_3_BOUNDS[1]
    if expected is not None:
        assert delay == expected
    retry = world.retries.queued[member].envelope
    assert retry.event_type is EventType.PSP_CALL_REQUESTED
    assert retry.event_id == deterministic_event_id(EventType.PSP_CALL_REQUESTED, "paymentorder-7", 3)
    assert (retry.parent_event_id, retry.trace_id) == (result.event_id, TRACE)
    assert (retry.payload.attempt, retry.payload.order.status) == (3, S.PSP_UNAVAILABLE_TRANSIENT)
    saved = world.tables.orders[7]
    assert (saved.order.status, saved.order.retry_count, saved.status_check_number) == (
        S.PSP_UNAVAILABLE_TRANSIENT,
        3,
        0,
    )
    assert world.tables.outbox == []
    assert world.tables.checks == []


async def test_a_redelivered_transient_answer_changes_nothing_but_keeps_a_single_retry_queued(world: World) -> None:
    order = world.tables.add_order(an_order(), psp_calls=1)
    result = charge_result(order, S.FAILED_TRANSIENT_ERROR)
    await world.apply(result)
    after_first = world.tables.snapshot()

    again = await world.apply(result)

    assert again.duplicate and again.decision is None
    assert world.tables == after_first
    assert list(world.retries.queued) == ["7:1"]
    assert [member for member, _ in world.retries.schedule_calls] == ["7:1", "7:1"]


async def test_a_retry_lost_between_commit_and_queueing_is_queued_by_the_redelivery(world: World) -> None:
    order = world.tables.add_order(an_order(), psp_calls=1)
    result = charge_result(order, S.PSP_UNAVAILABLE_TRANSIENT)
    world.retries.fail_with = ConnectionError("redis went away")
    with pytest.raises(ConnectionError):
        await world.apply(result)
    assert world.tables.order(7).retry_count == 1  # committed before the queue failed
    assert world.retries.queued == {}

    world.retries.fail_with = None
    again = await world.apply(result)

    assert again.duplicate
    assert list(world.retries.queued) == ["7:1"]


async def test_a_redelivered_answer_queues_nothing_once_the_order_has_moved_past_that_retry(world: World) -> None:
    order = world.tables.add_order(an_order())
    first = charge_result(order, S.FAILED_TRANSIENT_ERROR)
    await world.apply(first)
    await world.apply(charge_result(world.tables.order(7), S.TIMEOUT_EXCEEDED_1S_TRANSIENT))  # attempt 1 unknown
    world.retries.queued.clear()

    await world.apply(first)

    assert world.retries.queued == {}


async def test_a_not_found_status_check_queues_the_next_attempt(world: World) -> None:
    order = world.tables.add_order(an_order(status=S.PENDING_STATUS_CHECK_LATER), status_check_number=1)

    await world.apply(check_result(order, check_number=1, found=False))

    saved = world.tables.order(7)
    assert (saved.status, saved.retry_count, saved.retry_reason) == (S.FAILED_TRANSIENT_ERROR, 1, NO_CHARGE_AT_PSP)
    assert list(world.retries.queued) == ["7:1"]


async def test_a_late_refused_charge_for_an_attempt_under_status_check_queues_no_retry(world: World) -> None:
    order = world.tables.add_order(an_order(status=S.PENDING_STATUS_CHECK_LATER), status_check_number=1)
    before = world.tables.snapshot()

    applied = await world.apply(charge_result(order, S.PSP_UNAVAILABLE_TRANSIENT))

    assert applied.decision is None
    assert world.retries.schedule_calls == []
    assert world.tables.orders == before.orders


# --- apply: status checks -------------------------------------------------------------------------------------


async def test_a_timeout_schedules_status_check_1_at_the_first_delay_and_queues_no_retry(world: World) -> None:
    order = world.tables.add_order(an_order())
    world.clock.advance(timedelta(minutes=1))

    await world.apply(charge_result(order, S.TIMEOUT_EXCEEDED_1S_TRANSIENT))

    saved = world.tables.orders[7]
    assert (saved.order.status, saved.order.retry_count, saved.status_check_number) == (
        S.PENDING_STATUS_CHECK_LATER,
        0,
        1,
    )
    assert world.tables.checks == [
        CheckRow(1, 7, attempt=0, check_number=1, due_at=world.clock.now() + timedelta(seconds=5), trace_id=TRACE)
    ]
    assert world.retries.schedule_calls == []
    assert world.tables.outbox == []


async def test_a_still_pending_status_check_schedules_the_next_check_at_its_own_delay(world: World) -> None:
    order = world.tables.add_order(an_order(status=S.PENDING_STATUS_CHECK_LATER), status_check_number=1)

    await world.apply(check_result(order, check_number=1, status=S.PENDING_STATUS_CHECK_LATER))

    assert world.tables.orders[7].status_check_number == 2
    [check] = world.tables.checks
    assert (check.check_number, check.due_at) == (2, T0 + timedelta(seconds=30))


async def test_an_unknown_outcome_after_the_last_check_parks_the_order_for_reconciliation(world: World) -> None:
    order = world.tables.add_order(an_order(status=S.PENDING_STATUS_CHECK_LATER), status_check_number=3)

    applied = await world.apply(check_result(order, check_number=3, status=None))

    assert applied.decision is not None and applied.decision.action is Action.RECONCILE
    assert world.tables.order(7).status is S.NEEDS_RECONCILIATION
    assert world.tables.checks == [] and world.tables.outbox == []
    assert world.retries.schedule_calls == []
    assert world.tables.payments[PAYMENT] is PaymentStatus.INITIATED


# --- apply: all or nothing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["first_time", "lock", "save", "add_events", "roll_up"])
async def test_a_failure_inside_the_transaction_writes_nothing_and_the_redelivery_applies(
    world: World, failing: str
) -> None:
    order = world.tables.add_order(an_order())
    before = world.tables.snapshot()
    world.store.failures[failing] = RuntimeError(f"database failed in {failing}")

    with pytest.raises(RuntimeError):
        await world.apply(charge_result(order, S.SUCCESSFUL_FINAL))

    assert world.tables == before
    assert world.store.rollbacks == 1
    world.store.failures.clear()
    redelivered = await world.apply(charge_result(order, S.SUCCESSFUL_FINAL))
    assert not redelivered.duplicate
    assert len(world.tables.outbox) == 1


@pytest.mark.parametrize("failing", ["first_time", "lock", "save"])
async def test_a_failure_inside_the_transaction_of_a_transient_answer_queues_no_retry(
    world: World, failing: str
) -> None:
    order = world.tables.add_order(an_order())
    before = world.tables.snapshot()
    world.store.failures[failing] = RuntimeError(f"database failed in {failing}")

    with pytest.raises(RuntimeError):
        await world.apply(charge_result(order, S.PSP_UNAVAILABLE_TRANSIENT))

    assert world.tables == before
    assert world.retries.schedule_calls == []


# --- status check ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        PspStatusResult(psp_said(S.SUCCESSFUL_FINAL), latency_ms=8),
        PspStatusResult(PspAnswer(AnswerKind.NOT_CHARGED), latency_ms=8),
        PspStatusResult(PspAnswer(AnswerKind.OUTCOME_UNKNOWN), latency_ms=8, error_code="TIMEOUT"),
        PspStatusResult(psp_said(S.PENDING_STATUS_CHECK_LATER), latency_ms=8),
    ],
    ids=["succeeded", "not_found", "could_not_ask", "pending"],
)
async def test_the_status_check_asks_about_the_attempts_key_and_never_charges(
    world: World, answer: PspStatusResult
) -> None:
    order = an_order(attempt=2, status=S.PENDING_STATUS_CHECK_LATER)
    world.psp.script_status("paymentorder-7-2", answer)
    request = status_check_requested(order, attempt=2, check_number=1, trace_id=TRACE, parent_event_id="", now=T0)

    result = await world.check_status(request)

    assert world.psp.status_queries == ["paymentorder-7-2"]
    assert world.psp.charges == []
    assert world.sink.emitted == [result]
    assert result.event_type is EventType.PSP_RESULT_UPDATED
    assert result.parent_event_id == request.event_id
    said = result.payload
    assert (said.attempt, said.source, said.check_number, said.found) == (2, ResultSource.STATUS_CHECK, 1, answer.found)
    assert (said.psp_status, said.error_code) == (answer.status, answer.error_code)


async def test_a_status_check_request_without_a_check_number_is_refused(world: World) -> None:
    request = status_check_requested(an_order(), attempt=0, check_number=0, trace_id=TRACE, parent_event_id="", now=T0)

    with pytest.raises(ValueError, match="statusCheckNumber"):
        await world.check_status(request)
    assert world.psp.status_queries == []


# --- dispatch status checks -----------------------------------------------------------------------------------


def _due_checks(world: World, *orders: int) -> list[CheckRow]:
    rows = []
    for i, order_id in enumerate(orders):
        world.tables.add_order(an_order(order_id, status=S.PENDING_STATUS_CHECK_LATER), status_check_number=1)
        rows.append(
            world.tables.add_check(
                order_id, attempt=0, check_number=1, due_at=T0 - timedelta(seconds=10 - i), trace_id=f"t-{order_id}"
            )
        )
    return rows


async def test_dispatch_publishes_due_checks_as_status_check_requests_and_marks_them(world: World) -> None:
    first, second = _due_checks(world, 7, 8)
    world.tables.add_order(an_order(9, status=S.PENDING_STATUS_CHECK_LATER), status_check_number=1)
    later = world.tables.add_check(9, attempt=0, check_number=1, due_at=T0 + timedelta(minutes=1))

    report = await world.dispatch_checks.dispatch_batch(limit=10)

    assert (len(report.published), report.sent, report.failures) == (2, 2, ())
    assert [(c.status, c.lease_token) for c in (first, second)] == [("PUBLISHED", None)] * 2
    assert (later.status, later.lease_token) == ("SCHEDULED", None)
    event = world.sink.emitted[0]
    assert event.event_type is EventType.STATUS_CHECK_REQUESTED
    assert event.topic.value == "payment_status_check_scheduler_topic"
    assert event.event_id == deterministic_event_id(EventType.STATUS_CHECK_REQUESTED, "paymentorder-7", 0, 1)
    assert (event.parent_event_id, event.trace_id, event.aggregate_id) == (event.event_id, "t-7", "7")
    assert (event.payload.check_number, event.payload.attempt) == (1, 0)


async def test_a_publish_failure_leaves_only_its_own_check_claimed_and_the_rest_are_marked(world: World) -> None:
    first, failed, after = _due_checks(world, 7, 8, 9)
    world.sink.failing_aggregates = {"8"}

    report = await world.dispatch_checks.dispatch_batch(limit=10)

    assert [c.order.public_id for c in report.published] == ["paymentorder-7", "paymentorder-9"]
    assert [f.item.order.public_id for f in report.failures] == ["paymentorder-8"]
    assert [e.aggregate_id for e in world.sink.emitted] == ["7", "9"]
    assert (first.status, after.status) == ("PUBLISHED", "PUBLISHED")
    assert failed.status == "SCHEDULED" and failed.lease_token is not None


async def test_unpublished_checks_go_out_once_their_lease_ran_out(world: World) -> None:
    _, failed, _ = _due_checks(world, 7, 8, 9)
    world.sink.failing_aggregates = {"8"}
    await world.dispatch_checks.dispatch_batch(limit=10)
    world.sink.failing_aggregates = set()

    assert (await world.dispatch_checks.dispatch_batch(limit=10)).claimed == ()  # still leased
    world.clock.advance(timedelta(seconds=LEASE_SECONDS, milliseconds=1))
    assert len((await world.dispatch_checks.dispatch_batch(limit=10)).published) == 1

    assert failed.status == "PUBLISHED"


async def test_dispatch_takes_no_more_than_the_limit(world: World) -> None:
    _due_checks(world, 7, 8, 9)

    report = await world.dispatch_checks.dispatch_batch(limit=2)

    assert (len(report.published), report.busy) == (2, True)
    assert [e.aggregate_id for e in world.sink.emitted] == ["7", "8"]


# --- the whole path, every message delivered twice ------------------------------------------------------------


async def _deliver_twice_and_apply(world: World, request: EventEnvelope, *, execute: bool = True) -> None:
    """Run a request through its consumer twice (two deliveries), then apply every result twice."""
    emitted_before = len(world.sink.emitted)
    if execute:
        await world.execute(request, delivery="first")
        await world.execute(request, delivery="second")
    else:
        await world.check_status(request)
        await world.check_status(request)
    for result in world.sink.emitted[emitted_before:]:
        await world.apply(result)
        await world.apply(result)


async def _charge_then_first_check(world: World, order: PaymentOrder) -> None:
    """The order's created event through enqueue, the charge and its answer (each delivered twice), then, 5 s
    later, status check 1 dispatched, asked and applied (twice too)."""
    request = await world.enqueue(payment_order_created(order, trace_id=TRACE, now=T0))
    assert request is not None
    await _deliver_twice_and_apply(world, request)
    world.clock.advance(timedelta(seconds=5))
    await world.dispatch_checks.dispatch_batch(limit=10)
    [check_request] = world.emitted(EventType.STATUS_CHECK_REQUESTED)
    await _deliver_twice_and_apply(world, check_request, execute=False)


async def test_a_timed_out_charge_that_went_through_is_resolved_by_a_status_check_and_charged_once(
    world: World,
) -> None:
    order = world.tables.add_order(an_order())
    world.psp.script_charge("paymentorder-7-0", PspCallResult(psp_said(S.TIMEOUT_EXCEEDED_1S_TRANSIENT), 1_000))
    world.psp.script_status("paymentorder-7-0", PspStatusResult(psp_said(S.SUCCESSFUL_FINAL), latency_ms=7))
    request = await world.enqueue(payment_order_created(order, trace_id=TRACE, now=T0))
    assert request is not None

    await _deliver_twice_and_apply(world, request)
    assert world.tables.order(7).status is S.PENDING_STATUS_CHECK_LATER
    world.clock.advance(timedelta(seconds=5))
    await world.dispatch_checks.dispatch_batch(limit=10)
    [check_request] = world.emitted(EventType.STATUS_CHECK_REQUESTED)
    await _deliver_twice_and_apply(world, check_request, execute=False)

    assert world.psp.charged_keys() == ["paymentorder-7-0"]
    assert world.tables.order(7).status is S.SUCCESSFUL_FINAL
    assert world.tables.payments[PAYMENT] is PaymentStatus.SUCCESS
    assert [e.event_type for e in world.tables.outbox] == [EventType.PAYMENT_ORDER_SUCCEEDED]
    assert world.retries.schedule_calls == []


async def test_a_timed_out_charge_the_psp_never_saw_is_charged_again_under_the_next_attempts_key(
    world: World,
) -> None:
    order = world.tables.add_order(an_order())
    world.psp.script_charge("paymentorder-7-0", PspCallResult(psp_said(S.TIMEOUT_EXCEEDED_1S_TRANSIENT), 1_000))
    await _charge_then_first_check(world, order)  # the PSP: no such charge
    world.retries.now_ms += 60_000
    [retry] = await world.retries.claim_due(limit=10)
    retry_request = world.retries.inflight[retry.member][0].envelope
    await _deliver_twice_and_apply(world, retry_request)

    assert world.psp.charged_keys() == ["paymentorder-7-0", "paymentorder-7-1"]
    assert world.tables.order(7).status is S.SUCCESSFUL_FINAL
    assert world.tables.order(7).retry_count == 1
    assert [e.event_type for e in world.tables.outbox] == [EventType.PAYMENT_ORDER_SUCCEEDED]
