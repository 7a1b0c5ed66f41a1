"""Defect 4: NEEDS_RECONCILIATION has a way out in code. A late definitive answer settles a parked order (with its
event, its payment's roll-up and an audit line); the periodic re-query asks the PSP again and feeds the answer to
the same path; an operator settles the rest with what the PSP says. Before, a parked order ignored every answer."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from payment_application.apply_psp_result import ApplyPspResult, ResultPolicy
from payment_application.ports.psp import PspStatusResult
from payment_application.requery_parked_orders import RequeryParkedOrders
from payment_application.settle_parked_order import NotParked, SettleParkedOrder
from payment_domain.events import EventEnvelope, EventType, psp_result_updated
from payment_domain.payment import PaymentOrder
from payment_domain.psp_answer import answer_for_psp_status as psp_said
from payment_domain.psp_result import ResultSource
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from tests.fakes import FakeClock
from tests.fakes_consumers import (
    COMMISSION,
    ConsumerTables,
    FakeEventSink,
    FakeParkedOrders,
    FakePsp,
    FakeResultStore,
    an_order,
)
from tests.fakes_retry import FakeRetryQueue

S = PaymentOrderStatus
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVERY = timedelta(hours=1)


class Parked:
    def __init__(self) -> None:
        self.clock = FakeClock(T0)
        self.tables = ConsumerTables()
        self.store = FakeResultStore(self.tables, self.clock)
        self.parked = FakeParkedOrders(self.tables, self.clock, trace_id="trace-parked")
        self.sink = FakeEventSink()
        self.psp = FakePsp()
        self.apply = ApplyPspResult(
            store=self.store,
            retries=FakeRetryQueue(),
            policy=ResultPolicy(status_check_delays_seconds=(5, 30, 120)),
            randint=random.Random(1).randint,
            consumer="psp-result-applier",
            commission=COMMISSION,
        )
        self.requery = RequeryParkedOrders(
            parked=self.parked, psp=self.psp, events=self.sink, clock=self.clock, every=EVERY
        )
        self.settle = SettleParkedOrder(parked=self.parked, store=self.store, clock=self.clock, commission=COMMISSION)

    def park(self, order_id: int = 7, *, payment_id: int = 3) -> PaymentOrder:
        order = an_order(order_id, status=S.NEEDS_RECONCILIATION, attempt=1, payment_id=payment_id)
        return self.tables.add_order(order, status_check_number=3, psp_calls=1)

    def settled_events(self) -> list[EventType]:
        return [e.event_type for e in self.tables.outbox]


@pytest.fixture
def world() -> Parked:
    return Parked()


def late(
    order: PaymentOrder, status: PaymentOrderStatus, *, source: ResultSource = ResultSource.CHARGE, found: bool = True
) -> EventEnvelope:
    return psp_result_updated(
        order,
        attempt=order.retry_count,
        psp_status=status if found else None,
        latency_ms=900,
        source=source,
        check_number=2 if source is ResultSource.STATUS_CHECK else 0,
        found=found,
        trace_id="trace-parked",
        parent_event_id="request-1",
        now=T0,
    )


async def test_a_late_success_settles_a_parked_order_with_its_event_roll_up_and_audit_line(world: Parked) -> None:
    order = world.park()

    applied = await world.apply(late(order, S.SUCCESSFUL_FINAL))

    assert applied.order.status is S.SUCCESSFUL_FINAL
    assert world.settled_events() == [EventType.PAYMENT_ORDER_SUCCEEDED]
    assert world.tables.payments[3] is PaymentStatus.SUCCESS
    (audit,) = world.tables.reconciliations
    assert (audit.from_status, audit.to_status, audit.source, audit.actor) == (
        S.NEEDS_RECONCILIATION,
        S.SUCCESSFUL_FINAL,
        "psp_answer",
        "psp-result-applier",
    )


async def test_a_late_status_check_saying_no_such_charge_fails_a_parked_order(world: Parked) -> None:
    order = world.park()

    applied = await world.apply(late(order, S.SUCCESSFUL_FINAL, source=ResultSource.STATUS_CHECK, found=False))

    assert applied.order.status is S.FAILED_FINAL
    assert world.settled_events() == [EventType.PAYMENT_ORDER_FAILED]
    assert world.tables.payments[3] is PaymentStatus.FAILED


async def test_a_still_unknown_answer_leaves_a_parked_order_parked(world: Parked) -> None:
    order = world.park()

    applied = await world.apply(late(order, S.TIMEOUT_EXCEEDED_1S_TRANSIENT))
    refused = await world.apply(late(order, S.PSP_UNAVAILABLE_TRANSIENT))

    assert applied.decision is None and refused.decision is None
    assert world.tables.order(7).status is S.NEEDS_RECONCILIATION
    assert world.tables.outbox == [] and world.tables.reconciliations == []


async def test_the_requery_asks_each_parked_order_once_per_interval_and_numbers_each_answer(world: Parked) -> None:
    world.park(7)
    world.park(8, payment_id=4)
    world.psp.script_status("paymentorder-7-1", PspStatusResult(psp_said(S.SUCCESSFUL_FINAL), latency_ms=4))

    first = await world.requery.requery_once(limit=10)
    again = await world.requery.requery_once(limit=10)
    world.clock.advance(EVERY + timedelta(seconds=1))
    later = await world.requery.requery_once(limit=10)

    assert [len(r.published) for r in (first, again, later)] == [2, 0, 2]
    assert world.psp.status_queries == ["paymentorder-7-1", "paymentorder-8-1"] * 2
    answers = [e for e in world.sink.emitted if e.aggregate_id == "7"]
    assert [e.payload.check_number for e in answers] == [4, 5]
    assert len({e.event_id for e in answers}) == 2  # each answer its own event: neither is dropped as a duplicate


async def test_a_requeried_answer_settles_the_order_through_the_applier(world: Parked) -> None:
    world.park()
    world.psp.script_status("paymentorder-7-1", PspStatusResult(psp_said(S.DECLINED_FINAL), latency_ms=4))

    await world.requery.requery_once(limit=10)
    (answer,) = world.sink.emitted
    applied = await world.apply(answer)

    assert applied.order.status is S.DECLINED_FINAL
    assert world.settled_events() == [EventType.PAYMENT_ORDER_FAILED]


async def test_an_operator_settles_a_parked_order_with_an_audit_line(world: Parked) -> None:
    world.park(7)
    world.tables.add_order(an_order(8, status=S.SUCCESSFUL_FINAL, payment_id=3))

    settled = await world.settle(
        7, outcome=S.SUCCESSFUL_FINAL, operator="alice", evidence="PSP report: charge ch_123 captured"
    )

    assert settled.order.status is S.SUCCESSFUL_FINAL and settled.payment_status is PaymentStatus.SUCCESS
    assert world.tables.order(7).status is S.SUCCESSFUL_FINAL
    (event,) = world.tables.outbox
    assert (event.event_type, event.trace_id) == (EventType.PAYMENT_ORDER_SUCCEEDED, "trace-parked")
    (audit,) = world.tables.reconciliations
    assert (audit.source, audit.actor, audit.note) == ("operator", "alice", "PSP report: charge ch_123 captured")


@pytest.mark.parametrize("status", [S.SUCCESSFUL_FINAL, S.PENDING_STATUS_CHECK_LATER, S.FAILED_TRANSIENT_ERROR])
async def test_an_operator_cannot_settle_an_order_that_is_not_parked(world: Parked, status: PaymentOrderStatus) -> None:
    world.tables.add_order(an_order(7, status=status))

    with pytest.raises(NotParked, match="not in NEEDS_RECONCILIATION"):
        await world.settle(7, outcome=S.DECLINED_FINAL, operator="alice", evidence="PSP says declined")
    assert world.tables.order(7).status is status and world.tables.outbox == []


@pytest.mark.parametrize(
    ("outcome", "operator", "evidence", "message"),
    [
        (S.PENDING_STATUS_CHECK_LATER, "alice", "x", "settles as one of"),
        (S.SUCCESSFUL_FINAL, " ", "x", "operator"),
        (S.SUCCESSFUL_FINAL, "alice", "", "evidence"),
    ],
)
async def test_an_operator_settlement_needs_a_final_outcome_a_name_and_evidence(
    world: Parked, outcome: PaymentOrderStatus, operator: str, evidence: str, message: str
) -> None:
    world.park()

    with pytest.raises(ValueError, match=message):
        await world.settle(7, outcome=outcome, operator=operator, evidence=evidence)
    assert world.tables.order(7).status is S.NEEDS_RECONCILIATION
