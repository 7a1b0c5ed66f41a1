"""ApplyPspResult.apply_many with hand-written fakes: many results in one transaction, each order deciding and
writing exactly as it would alone; a batch that cannot apply whole falls back to one transaction per result, so
every caller gets its own outcome."""

from __future__ import annotations

import dataclasses
import random

import pytest

from payment_application.apply_psp_result import Applied, ApplyPspResult, UnknownPaymentOrder
from payment_application.errors import DependencyUnavailable
from payment_domain.events import EventEnvelope, EventType
from payment_domain.ids import PaymentId
from payment_domain.psp_result import Action
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from tests.fakes import FakeClock
from tests.fakes_consumers import COMMISSION, ConsumerTables, FakeResultStore, an_order
from tests.fakes_retry import FakeRetryQueue
from tests.unit.application.test_consumer_use_cases import CONSUMER, PAYMENT, POLICY, T0, charge_result, check_result

S = PaymentOrderStatus


class World:
    def __init__(self) -> None:
        self.clock = FakeClock(T0)
        self.tables = ConsumerTables()
        self.store = FakeResultStore(self.tables, self.clock)
        self.retries = FakeRetryQueue()
        self.apply = ApplyPspResult(
            store=self.store,
            retries=self.retries,
            policy=POLICY,
            randint=random.Random(20260301).randint,
            consumer=CONSUMER,
            commission=COMMISSION,
        )

    def add_mixed_orders(self) -> list[EventEnvelope]:
        """Orders of two payments and one answer each: a success, a decline, a transient refusal (a retry), a
        timeout (a status check), an unknown last check (parked), a late success of a parked order."""
        seven = self.tables.add_order(an_order(7))
        eight = self.tables.add_order(an_order(8))
        nine = self.tables.add_order(an_order(9, payment_id=4), psp_calls=1)
        ten = self.tables.add_order(an_order(10, payment_id=4))
        eleven = self.tables.add_order(
            an_order(11, payment_id=4, status=S.PENDING_STATUS_CHECK_LATER), status_check_number=3
        )
        twelve = self.tables.add_order(an_order(12, payment_id=5, status=S.NEEDS_RECONCILIATION))
        return [
            charge_result(seven, S.SUCCESSFUL_FINAL),
            charge_result(eight, S.DECLINED_FINAL, error="card declined"),
            charge_result(nine, S.PSP_UNAVAILABLE_TRANSIENT),
            charge_result(ten, S.TIMEOUT_EXCEEDED_1S_TRANSIENT),
            check_result(eleven, check_number=3, status=None),
            check_result(twelve, check_number=1, status=S.SUCCESSFUL_FINAL),
        ]


def applied(outcome: Applied | Exception) -> Applied:
    assert isinstance(outcome, Applied), outcome
    return outcome


async def test_a_batch_writes_in_one_transaction_exactly_what_the_results_write_one_by_one() -> None:
    batched, alone = World(), World()
    results = batched.add_mixed_orders()
    alone.add_mixed_orders()

    outcomes = await batched.apply.apply_many(results)
    expected = [await alone.apply(result) for result in results]

    assert outcomes == expected
    decisions = [applied(o).decision for o in outcomes]
    assert [d.action if d is not None else None for d in decisions] == [
        Action.SUCCEED,
        Action.FAIL,
        Action.RETRY,
        Action.CHECK_STATUS,
        Action.RECONCILE,
        Action.SUCCEED,
    ]
    assert (batched.store.commits, batched.store.rollbacks) == (1, 0)
    assert batched.tables == alone.tables
    assert batched.tables.payments == {
        PAYMENT: PaymentStatus.PARTIALLY_SUCCEEDED,
        4: PaymentStatus.INITIATED,
        5: PaymentStatus.SUCCESS,
    }
    assert len(batched.tables.reconciliations) == 1
    assert batched.retries.schedule_calls == alone.retries.schedule_calls
    assert list(batched.retries.queued) == ["9:1"]


async def test_sibling_orders_in_one_batch_roll_their_payment_up_over_both() -> None:
    world = World()
    seven, eight = world.tables.add_order(an_order(7)), world.tables.add_order(an_order(8))

    await world.apply.apply_many([charge_result(seven, S.SUCCESSFUL_FINAL), charge_result(eight, S.SUCCESSFUL_FINAL)])

    assert world.tables.payments[PAYMENT] is PaymentStatus.SUCCESS
    assert [e.event_type for e in world.tables.outbox] == [EventType.PAYMENT_ORDER_SUCCEEDED] * 2


async def test_an_unknown_order_fails_only_its_own_result_and_the_others_apply_alone() -> None:
    world = World()
    seven, eight = world.tables.add_order(an_order(7)), world.tables.add_order(an_order(8))
    results = [
        charge_result(seven, S.SUCCESSFUL_FINAL),
        charge_result(an_order(99), S.SUCCESSFUL_FINAL),
        charge_result(eight, S.DECLINED_FINAL),
    ]

    first, unknown, third = await world.apply.apply_many(results)

    assert isinstance(unknown, UnknownPaymentOrder)
    assert applied(first).decision is not None and applied(third).decision is not None
    assert (world.tables.order(7).status, world.tables.order(8).status) == (S.SUCCESSFUL_FINAL, S.DECLINED_FINAL)
    assert (world.store.commits, world.store.rollbacks) == (2, 2)  # the batch, then the unknown one alone
    assert (CONSUMER, results[1].event_id) not in world.tables.inbox


@pytest.mark.parametrize("failing", ["first_times", "lock_many", "save", "add_events", "roll_up"])
async def test_a_batch_that_fails_inside_its_transaction_applies_each_result_alone(failing: str) -> None:
    world = World()
    seven, eight = world.tables.add_order(an_order(7)), world.tables.add_order(an_order(8))
    world.store.failures[failing] = RuntimeError(f"database failed in {failing}")
    results = [charge_result(seven, S.SUCCESSFUL_FINAL), charge_result(eight, S.SUCCESSFUL_FINAL)]

    outcomes = await world.apply.apply_many(results)

    if failing in ("first_times", "lock_many"):  # only the batch uses them: alone, each applies
        assert [applied(o).duplicate for o in outcomes] == [False, False]
        assert world.tables.payments[PAYMENT] is PaymentStatus.SUCCESS
    else:
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert world.tables.outbox == [] and world.tables.inbox == set()
    assert world.store.rollbacks >= 1


async def test_a_batch_the_database_could_not_begin_fails_every_result_at_once() -> None:
    world = World()
    seven, eight = world.tables.add_order(an_order(7)), world.tables.add_order(an_order(8))
    down = DependencyUnavailable("database", "connection pool exhausted")
    world.store.failures["first_times"] = down

    outcomes = await world.apply.apply_many(
        [charge_result(seven, S.SUCCESSFUL_FINAL), charge_result(eight, S.SUCCESSFUL_FINAL)]
    )

    assert outcomes == [down, down]
    assert world.store.rollbacks == 1  # not tried again one by one
    assert world.tables.outbox == []


async def test_a_result_seen_before_is_ignored_in_a_batch_and_its_neighbours_apply() -> None:
    world = World()
    seven, eight = world.tables.add_order(an_order(7)), world.tables.add_order(an_order(8))
    seen = charge_result(seven, S.SUCCESSFUL_FINAL)
    await world.apply(seen)

    again, fresh = await world.apply.apply_many([seen, charge_result(eight, S.SUCCESSFUL_FINAL)])

    assert applied(again).duplicate and applied(again).decision is None
    assert not applied(fresh).duplicate
    assert [e.aggregate_id for e in world.tables.outbox] == ["7", "8"]


async def test_retries_are_queued_after_the_commit_and_a_lost_one_is_queued_by_the_redelivery() -> None:
    world = World()
    nine = world.tables.add_order(an_order(9), psp_calls=1)
    ten = world.tables.add_order(an_order(10), psp_calls=1)
    world.retries.fail_with = ConnectionError("redis went away")

    failed, also_failed = await world.apply.apply_many(
        [charge_result(nine, S.PSP_UNAVAILABLE_TRANSIENT), charge_result(ten, S.FAILED_TRANSIENT_ERROR)]
    )

    assert isinstance(failed, ConnectionError) and isinstance(also_failed, ConnectionError)
    assert world.store.commits == 1  # committed before the queue failed: the redelivery queues it
    assert (world.tables.order(9).retry_count, world.tables.order(10).retry_count) == (1, 1)
    world.retries.fail_with = None

    again, queued = await world.apply.apply_many(
        [charge_result(nine, S.PSP_UNAVAILABLE_TRANSIENT), charge_result(ten, S.FAILED_TRANSIENT_ERROR)]
    )

    assert applied(again).duplicate and applied(queued).duplicate
    assert sorted(world.retries.queued) == ["10:1", "9:1"]


async def test_two_results_for_one_order_that_disagree_on_its_payment_fail_only_the_wrong_one() -> None:
    """The result batcher keys by the payment an answer names, so two answers about one order naming different
    payments can share a batch: it is applied one by one, the answer naming another payment is refused (poison,
    alone), and its neighbours apply."""
    world = World()
    seven = world.tables.add_order(an_order(7, payment_id=3))
    eight = world.tables.add_order(an_order(8, payment_id=4))
    forged = dataclasses.replace(seven, payment_id=PaymentId(99))

    outcomes = await world.apply.apply_many(
        [
            charge_result(seven, S.SUCCESSFUL_FINAL),
            charge_result(forged, S.FAILED_FINAL),
            charge_result(eight, S.DECLINED_FINAL),
        ]
    )

    assert applied(outcomes[0]).decision is not None and applied(outcomes[2]).decision is not None
    assert isinstance(outcomes[1], UnknownPaymentOrder)
    assert world.tables.order(7).status is S.SUCCESSFUL_FINAL
    assert world.tables.order(8).status is S.DECLINED_FINAL


async def test_a_result_naming_another_payment_is_refused_in_a_batch_and_alone() -> None:
    world = World()
    seven = world.tables.add_order(an_order(7, payment_id=3))
    eight = world.tables.add_order(an_order(8, payment_id=4))
    forged = dataclasses.replace(seven, payment_id=PaymentId(4))

    outcomes = await world.apply.apply_many(
        [charge_result(forged, S.FAILED_FINAL), charge_result(eight, S.DECLINED_FINAL)]
    )

    assert isinstance(outcomes[0], UnknownPaymentOrder)
    assert applied(outcomes[1]).decision is not None
    assert world.tables.order(7).status is S.INITIATED_PENDING
    with pytest.raises(UnknownPaymentOrder, match="belongs to payment 3"):
        await world.apply(charge_result(forged, S.FAILED_FINAL))


async def test_a_batch_of_one_is_the_single_path() -> None:
    world = World()
    seven = world.tables.add_order(an_order(7))

    [outcome] = await world.apply.apply_many([charge_result(seven, S.SUCCESSFUL_FINAL)])
    [missing] = await world.apply.apply_many([charge_result(an_order(99), S.SUCCESSFUL_FINAL)])

    assert applied(outcome).decision is not None
    assert isinstance(missing, UnknownPaymentOrder)
