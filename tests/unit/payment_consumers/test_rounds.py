"""The status-check scheduler's round, paced by its relay report: a full batch goes again, a failed publish waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from payment_application.dispatch_status_checks import DispatchStatusChecks
from payment_domain.status import PaymentOrderStatus as S
from payment_infrastructure.runtime.pacing import BUSY, FAILED, IDLE
from services.payment_consumers import rounds
from tests.fakes import FakeClock
from tests.fakes_consumers import ConsumerTables, FakeEventSink, FakeStatusCheckQueue, an_order

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _scheduler(*orders: int) -> tuple[FakeEventSink, DispatchStatusChecks]:
    clock, tables, sink = FakeClock(T0), ConsumerTables(), FakeEventSink()
    for order_id in orders:
        tables.add_order(an_order(order_id, status=S.PENDING_STATUS_CHECK_LATER), status_check_number=1)
        tables.add_check(order_id, attempt=0, check_number=1, due_at=T0 - timedelta(seconds=1))
    queue = FakeStatusCheckQueue(tables, clock)
    checks = DispatchStatusChecks(checks=queue, events=sink, clock=clock, lease_seconds=30)
    return sink, checks


async def test_a_full_batch_goes_again_at_once_and_a_partial_one_waits() -> None:
    _, checks = _scheduler(7, 8, 9)
    round_ = rounds.status_checks(checks, batch_size=2)

    assert [await round_(), await round_(), await round_()] == [BUSY, IDLE, IDLE]


async def test_a_round_whose_publish_failed_backs_off() -> None:
    sink, checks = _scheduler(7, 8)
    sink.failing_aggregates = {"8"}

    assert await rounds.status_checks(checks, batch_size=10)() == FAILED
