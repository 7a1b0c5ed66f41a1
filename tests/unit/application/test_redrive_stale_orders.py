"""The stale-order sweeper with hand-written fakes: what counts as stale, the safe re-drive for each state, and the
guards that keep it from doubling anything (one claim per threshold, the same deterministic events, the same
charge key)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from payment_application.check_payment_status import CheckPaymentStatus
from payment_application.execute_psp_call import ExecutePspCall
from payment_application.redrive_stale_orders import RedriveStaleOrders
from payment_domain.events import EventType, deterministic_event_id, psp_call_requested
from payment_domain.redrive import Redrive
from payment_domain.status import TERMINAL, PaymentOrderStatus
from tests.fakes import FakeClock
from tests.fakes_consumers import (
    ConsumerTables,
    FakeClaims,
    FakeEventSink,
    FakePsp,
    FakeStaleOrderClaims,
    an_order,
)
from tests.fakes_retry import FakeRetryQueue

S = PaymentOrderStatus
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STALE_AFTER = timedelta(minutes=10)
LATER = T0 + timedelta(hours=1)
TRACE = "trace-of-the-payment"


@dataclass
class World:
    clock: FakeClock
    tables: ConsumerTables
    sink: FakeEventSink
    retries: FakeRetryQueue
    psp: FakePsp

    @property
    def sweeper(self) -> RedriveStaleOrders:
        return self.sweeper_on(self.clock)

    def sweeper_on(self, clock: FakeClock) -> RedriveStaleOrders:
        """A sweeper whose own clock is `clock`; the database's is `self.clock`."""
        return RedriveStaleOrders(
            orders=FakeStaleOrderClaims(self.tables, self.clock, trace_id=TRACE),
            events=self.sink,
            retries=self.retries,
            clock=clock,
            stale_after=STALE_AFTER,
        )

    @property
    def execute(self) -> ExecutePspCall:
        claims = FakeClaims(self.tables, self.clock)
        return ExecutePspCall(
            claims=claims, psp=self.psp, events=self.sink, clock=self.clock, monotonic=self.clock, lease_seconds=30
        )

    @property
    def check_status(self) -> CheckPaymentStatus:
        return CheckPaymentStatus(psp=self.psp, events=self.sink, clock=self.clock)

    def awaiting_check(self, check_number: int, *, published_at: datetime | None, attempt: int = 0) -> None:
        """Order 7 waits for check `check_number` of `attempt`, scheduled at T0 for an hour later; published at
        `published_at` (None: not yet)."""
        order = an_order(status=S.PENDING_STATUS_CHECK_LATER, attempt=attempt)
        self.tables.add_order(order, status_check_number=check_number)
        row = self.tables.add_check(
            7, attempt=attempt, check_number=check_number, due_at=T0 + timedelta(hours=1), now=T0
        )
        if published_at is not None:
            row.status, row.updated_at = "PUBLISHED", published_at


@pytest.fixture
def world() -> World:
    clock, tables = FakeClock(T0), ConsumerTables()
    return World(clock=clock, tables=tables, sink=FakeEventSink(), retries=FakeRetryQueue(), psp=FakePsp())


# --- the safe re-drive for each state ----------------------------------------------------------------------------


async def test_an_order_whose_first_psp_call_was_lost_is_requested_again_under_attempt_0(world: World) -> None:
    world.tables.add_order(an_order())
    world.clock.set(LATER)

    report = await world.sweeper.sweep_once(limit=10)

    assert [(r.stale.order.payment_order_id.value, r.action) for r in report.redriven] == [(7, Redrive.CHARGE)]
    (request,) = world.sink.emitted
    assert request.event_type is EventType.PSP_CALL_REQUESTED
    # The enqueuer's own event id: a late original and the re-drive are one event downstream.
    assert request.event_id == deterministic_event_id(EventType.PSP_CALL_REQUESTED, "paymentorder-7", 0)
    assert (request.aggregate_id, request.trace_id, request.payload.attempt) == ("7", TRACE, 0)

    await world.execute(request, delivery="psp_call_requested/0/1")

    assert world.psp.charged_keys() == ["paymentorder-7-0"]


async def test_an_order_whose_retry_was_lost_gets_it_back_on_the_queue_due_now_under_the_same_attempt(
    world: World,
) -> None:
    world.tables.add_order(an_order(status=S.PSP_UNAVAILABLE_TRANSIENT, attempt=2))
    world.clock.set(LATER)

    report = await world.sweeper.sweep_once(limit=10)

    assert [r.action for r in report.redriven] == [Redrive.RETRY]
    assert world.sink.attempts == []
    assert list(world.retries.queued) == ["7:2"]
    queued = world.retries.queued["7:2"]
    assert (queued.delay_ms, queued.due_ms) == (0, world.retries.now_ms)
    assert queued.envelope.event_id == deterministic_event_id(EventType.PSP_CALL_REQUESTED, "paymentorder-7", 2)
    assert queued.envelope.payload.attempt == 2


@pytest.mark.parametrize("where", ["queued", "in flight"])
async def test_an_order_whose_retry_is_still_queued_is_left_alone(world: World, where: str) -> None:
    order = world.tables.add_order(an_order(status=S.FAILED_TRANSIENT_ERROR, attempt=1))
    earlier = psp_call_requested(order, attempt=1, trace_id=TRACE, parent_event_id="result-1", now=T0)
    await world.retries.schedule(earlier, delay_ms=45_000)
    if where == "in flight":
        world.retries.now_ms += 45_000
        await world.retries.claim_due(10)
    before = (dict(world.retries.queued), dict(world.retries.inflight))
    world.clock.set(LATER)

    report = await world.sweeper.sweep_once(limit=10)

    assert report.redriven == ()
    assert [s.order.payment_order_id.value for s in report.waiting] == [7]
    assert (world.retries.queued, world.retries.inflight) == before
    assert world.sink.attempts == []


@pytest.mark.parametrize("minutes_later", [50, 120], ids=["not due yet", "due, the scheduler's to send"])
async def test_an_order_waiting_for_a_scheduled_status_check_is_not_claimed(world: World, minutes_later: int) -> None:
    world.awaiting_check(4, published_at=None)
    world.clock.set(T0 + timedelta(minutes=minutes_later))

    report = await world.sweeper.sweep_once(limit=10)

    assert report.found == 0
    assert world.tables.orders[7].swept_at is None
    assert world.sink.attempts == []


async def test_a_status_check_sent_but_never_answered_is_asked_again_under_the_same_check_number(
    world: World,
) -> None:
    world.awaiting_check(2, published_at=T0 + timedelta(seconds=30), attempt=1)
    world.clock.set(LATER)

    report = await world.sweeper.sweep_once(limit=10)

    assert [r.action for r in report.redriven] == [Redrive.STATUS_CHECK]
    (request,) = world.sink.emitted
    # The scheduler's own event id for that check.
    assert request.event_id == deterministic_event_id(EventType.STATUS_CHECK_REQUESTED, "paymentorder-7", 1, 2)
    assert (request.payload.check_number, request.payload.attempt) == (2, 1)

    await world.check_status(request)

    assert world.psp.status_queries == ["paymentorder-7-1"]
    assert world.psp.charges == []


async def test_a_status_check_published_lately_is_left_to_its_answer(world: World) -> None:
    world.awaiting_check(3, published_at=LATER - timedelta(minutes=2))
    world.clock.set(LATER)

    assert (await world.sweeper.sweep_once(limit=10)).found == 0


def _moved_lately(world: World) -> None:
    world.tables.orders[7].order = dataclasses.replace(world.tables.order(7), updated_at=LATER - timedelta(minutes=5))


def _psp_call_in_flight(world: World) -> None:
    world.tables.orders[7].claim_token = "psp_call_requested/0/9"
    world.tables.orders[7].claim_expires_at = LATER + timedelta(seconds=10)


def _created_event_not_published_yet(world: World) -> None:
    world.tables.unsent_outbox.add(7)


def _claimed_by_another_sweeper_lately(world: World) -> None:
    world.tables.orders[7].swept_at = LATER - timedelta(minutes=1)


@pytest.mark.parametrize(
    "progress",
    [_moved_lately, _psp_call_in_flight, _created_event_not_published_yet, _claimed_by_another_sweeper_lately],
)
async def test_an_order_with_a_recent_sign_of_progress_is_not_claimed(
    world: World, progress: Callable[[World], None]
) -> None:
    world.tables.add_order(an_order())
    world.clock.set(LATER)
    progress(world)

    report = await world.sweeper.sweep_once(limit=10)

    assert report.found == 0
    assert world.sink.attempts == []


@pytest.mark.parametrize("status", sorted(TERMINAL | {S.NEEDS_RECONCILIATION}))
async def test_settled_and_parked_orders_are_never_swept(world: World, status: PaymentOrderStatus) -> None:
    world.tables.add_order(an_order(status=status, attempt=3), status_check_number=5)
    world.clock.set(T0 + timedelta(days=30))

    report = await world.sweeper.sweep_once(limit=10)

    assert report.found == 0
    assert world.tables.orders[7].swept_at is None


@pytest.mark.parametrize("skew", [timedelta(hours=1), -timedelta(hours=1)], ids=["ahead", "behind"])
async def test_staleness_is_judged_on_the_databases_clock_not_the_sweepers(world: World, skew: timedelta) -> None:
    world.tables.add_order(an_order(7, payment_id=7, updated_at=LATER - timedelta(minutes=5)))
    world.tables.add_order(an_order(8, payment_id=8, updated_at=LATER - timedelta(minutes=30)))
    world.clock.set(LATER)

    report = await world.sweeper_on(FakeClock(LATER + skew)).sweep_once(limit=10)

    assert [r.stale.order.payment_order_id.value for r in report.redriven] == [8]
    assert world.tables.orders[8].swept_at == LATER


# --- never twice, never a new key ------------------------------------------------------------------------------


async def test_sweeping_again_within_the_threshold_redrives_nothing_and_once_more_after_it(world: World) -> None:
    world.tables.add_order(an_order())
    world.clock.set(LATER)
    first = await world.sweeper.sweep_once(limit=10)
    world.clock.advance(STALE_AFTER - timedelta(seconds=1))
    again = await world.sweeper.sweep_once(limit=10)
    world.clock.advance(timedelta(seconds=2))
    after_the_threshold = await world.sweeper.sweep_once(limit=10)

    assert (len(first.redriven), again.found, len(after_the_threshold.redriven)) == (1, 0, 1)
    assert len({e.event_id for e in world.sink.emitted}) == 1, "the same event each time: duplicates collapse"


def _redrivable(world: World, case: str) -> int:
    """Order 7 stalled in the state `case` names; returns the attempt in play."""
    if case == "first call":
        world.tables.add_order(an_order())
        return 0
    if case == "retry":
        world.tables.add_order(an_order(status=S.FAILED_TRANSIENT_ERROR, attempt=3))
        return 3
    world.awaiting_check(1, published_at=T0, attempt=2)
    return 2


@pytest.mark.parametrize("case", ["first call", "retry", "status check"])
async def test_a_redrive_never_charges_under_another_attempts_key(world: World, case: str) -> None:
    attempt = _redrivable(world, case)
    world.clock.set(LATER)

    await world.sweeper.sweep_once(limit=10)
    world.retries.now_ms += 1
    sent = [*world.sink.emitted, *(q.envelope for q in world.retries.queued.values())]
    for event in sent:
        if event.event_type is EventType.PSP_CALL_REQUESTED:
            await world.execute(event, delivery="redrive")
        else:
            await world.check_status(event)

    assert len(sent) == 1
    assert {*world.psp.charged_keys(), *world.psp.status_queries} == {f"paymentorder-7-{attempt}"}


# --- bounded, and a failure loses nothing -----------------------------------------------------------------------


async def test_a_round_takes_no_more_than_the_limit_oldest_first(world: World) -> None:
    for order_id in (5, 4, 3, 2, 1):
        world.tables.add_order(an_order(order_id, updated_at=T0 + timedelta(seconds=order_id)))
    world.clock.set(LATER)

    first = await world.sweeper.sweep_once(limit=2)
    second = await world.sweeper.sweep_once(limit=2)
    last = await world.sweeper.sweep_once(limit=2)

    assert [[r.stale.order.payment_order_id.value for r in rnd.redriven] for rnd in (first, second, last)] == [
        [1, 2],
        [3, 4],
        [5],
    ]
    assert (first.full, second.full, last.full) == (True, True, False)


async def test_a_failed_redrive_stops_the_round_and_the_rest_come_back_after_the_threshold(world: World) -> None:
    for order_id in (1, 2, 3):
        world.tables.add_order(an_order(order_id, updated_at=T0 + timedelta(seconds=order_id)))
    world.clock.set(LATER)
    world.sink.failing_aggregates = {"2"}

    failed = await world.sweeper.sweep_once(limit=10)
    world.sink.failing_aggregates = set()
    right_after = await world.sweeper.sweep_once(limit=10)
    world.clock.advance(STALE_AFTER + timedelta(seconds=1))
    after_the_threshold = await world.sweeper.sweep_once(limit=10)

    assert failed.found == 3
    assert [r.stale.order.payment_order_id.value for r in failed.redriven] == [1]
    assert failed.failed is not None and failed.failed.order.payment_order_id.value == 2
    assert [e.aggregate_id for e in world.sink.attempts[:2]] == ["1", "2"], "order 3 was not tried in that round"
    assert right_after.found == 0
    assert [r.stale.order.payment_order_id.value for r in after_the_threshold.redriven] == [1, 2, 3]


def test_the_threshold_must_be_positive(world: World) -> None:
    with pytest.raises(ValueError, match="stale_after"):
        RedriveStaleOrders(
            orders=FakeStaleOrderClaims(world.tables, world.clock),
            events=world.sink,
            retries=world.retries,
            clock=world.clock,
            stale_after=timedelta(0),
        )
