"""ResultStore: FakeResultStore and PostgresResultStore (on the session database) pass the same cases. One
transaction records the event in the inbox, locks the order, saves it, writes its events and its next status
check, rolls its payment up, keeps the audit of a reconciliation and posts the ledger entries: all of it on the
database's clock, and all or nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.errors import LedgerEntryExists
from payment_application.ports.payment_orders import LockedOrder, ReconciliationEntry, ResultTransaction
from payment_domain.events import EventEnvelope, payment_order_settled, psp_result_updated
from payment_domain.ledger import CommissionSchedule, JournalEntry, charge_entry
from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import ResultSource
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from tests.integration.contracts.payment_orders_world import (
    LEASE,
    Order,
    OrdersWorld,
    OutboxLine,
    ScheduledCheck,
    a_consumer,
    add_order,
    as_published,
    backend_of,
    open_world,
)

S = PaymentOrderStatus
EVENT_TIME = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # whole milliseconds: the wire keeps no more


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest) -> AsyncEngine | None:
    return backend_of(request)


@pytest.fixture
async def world(backend: AsyncEngine | None) -> AsyncIterator[OrdersWorld]:
    async with open_world(backend) as opened:
        yield opened


def an_event_id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


async def save(
    tx: ResultTransaction,
    order: PaymentOrder,
    status: PaymentOrderStatus,
    *,
    attempt: int | None = None,
    reason: str | None = None,
    error: str | None = None,
    check_number: int = 0,
) -> None:
    await tx.save(
        order.payment_order_id.value,
        status=status,
        attempt=order.retry_count if attempt is None else attempt,
        reason=reason,
        error=error,
        status_check_number=check_number,
        now=tx.now,
    )


async def locked(world: OrdersWorld, order: PaymentOrder) -> LockedOrder | None:
    async with world.results.transaction() as tx:
        return await tx.lock(order.payment_order_id.value)


def answer(order: PaymentOrder, status: PaymentOrderStatus) -> EventEnvelope:
    return psp_result_updated(
        order,
        attempt=order.retry_count,
        psp_status=status,
        latency_ms=40,
        source=ResultSource.CHARGE,
        trace_id=f"trace-{order.payment_order_id.value}",
        parent_event_id=an_event_id(1),
        now=EVENT_TIME,
    )


async def test_now_is_the_databases_clock_when_the_transaction_began(world: OrdersWorld) -> None:
    before = await world.now()
    async with world.results.transaction() as tx:
        began = tx.now
        meanwhile = await world.now()
    after = await world.now()

    assert before <= began <= meanwhile <= after
    assert began.tzinfo is not None and began.utcoffset() == timedelta(0)


async def test_an_event_is_processed_once_per_consumer(world: OrdersWorld) -> None:
    consumer, other_consumer = a_consumer(), a_consumer()
    async with world.results.transaction() as tx:
        assert await tx.first_time(consumer, an_event_id(1), tx.now) is True
        assert await tx.first_time(consumer, an_event_id(1), tx.now) is False
        assert await tx.first_time(consumer, an_event_id(2), tx.now) is True

    async with world.results.transaction() as tx:
        assert await tx.first_time(consumer, an_event_id(1), tx.now) is False
        assert await tx.first_time(other_consumer, an_event_id(1), tx.now) is True


async def test_many_events_are_recorded_at_once_and_the_new_ones_returned(world: OrdersWorld) -> None:
    consumer, other_consumer = a_consumer(), a_consumer()
    async with world.results.transaction() as tx:
        assert await tx.first_time(consumer, an_event_id(1), tx.now) is True
        assert await tx.first_times(consumer, [an_event_id(1), an_event_id(2), an_event_id(3)], tx.now) == {
            an_event_id(2),
            an_event_id(3),
        }
        assert await tx.first_times(consumer, [], tx.now) == set()

    async with world.results.transaction() as tx:
        assert await tx.first_times(consumer, [an_event_id(3), an_event_id(4)], tx.now) == {an_event_id(4)}
        assert await tx.first_time(consumer, an_event_id(4), tx.now) is False
        assert await tx.first_times(other_consumer, [an_event_id(1)], tx.now) == {an_event_id(1)}


async def test_lock_many_finds_the_known_orders_by_id_as_the_transaction_sees_them(world: OrdersWorld) -> None:
    first, second = await world.add_payment(Order(), Order(S.PENDING_STATUS_CHECK_LATER, status_check_number=2))
    [elsewhere] = await world.add_payment(Order(S.PSP_UNAVAILABLE_TRANSIENT, attempt=1, psp_calls=1))
    ids = [o.payment_order_id.value for o in (elsewhere, first, second)]

    async with world.results.transaction() as tx:
        await save(tx, first, S.SUCCESSFUL_FINAL)
        found = await tx.lock_many([*ids, first.payment_order_id.value + 9])
        saved = await tx.lock(first.payment_order_id.value)

    assert saved is not None
    assert found == {
        first.payment_order_id.value: saved,
        second.payment_order_id.value: LockedOrder(second, status_check_number=2, psp_calls=0),
        elsewhere.payment_order_id.value: LockedOrder(elsewhere, status_check_number=0, psp_calls=1),
    }


async def test_lock_finds_no_unknown_order_and_a_known_one_with_its_check_number_and_calls(
    world: OrdersWorld,
) -> None:
    order = await add_order(world, Order(S.PENDING_STATUS_CHECK_LATER, attempt=2, status_check_number=3, psp_calls=1))

    async with world.results.transaction() as tx:
        found = await tx.lock(order.payment_order_id.value)
        missing = await tx.lock(order.payment_order_id.value + 9)

    assert found == LockedOrder(order, status_check_number=3, psp_calls=1)
    assert missing is None


async def test_save_writes_the_orders_fields_on_the_transactions_clock_and_frees_its_claim(
    world: OrdersWorld,
) -> None:
    order = await add_order(world)
    await world.claims.claim_attempt(
        order.payment_order_id.value, attempt=0, claim_token="delivery-a", lease_seconds=LEASE
    )

    async with world.results.transaction() as tx:
        await save(
            tx, order, S.PSP_UNAVAILABLE_TRANSIENT, attempt=1, reason="PSP_UNAVAILABLE", error="503", check_number=2
        )
        saved_at = tx.now
        seen_in_the_transaction = await tx.lock(order.payment_order_id.value)

    after = await locked(world, order)
    assert after is not None and after == seen_in_the_transaction
    assert (after.order.status, after.order.retry_count, after.order.retry_reason, after.order.last_error_message) == (
        S.PSP_UNAVAILABLE_TRANSIENT,
        1,
        "PSP_UNAVAILABLE",
        "503",
    )
    assert (after.order.updated_at, after.status_check_number, after.psp_calls) == (saved_at, 2, 0)
    assert (after.order.seller_id, after.order.amount, after.order.created_at) == (
        order.seller_id,
        order.amount,
        order.created_at,
    )
    claimed = await world.claims.claim_attempt(
        order.payment_order_id.value, attempt=1, claim_token="delivery-b", lease_seconds=LEASE
    )
    assert claimed is not None


async def test_a_claims_lease_end_kept_by_a_save_is_what_a_later_lock_reads_and_a_save_without_clears_it(
    world: OrdersWorld,
) -> None:
    order = await add_order(world)
    claimed = await world.claims.claim_attempt(
        order.payment_order_id.value, attempt=0, claim_token="delivery-a", lease_seconds=LEASE
    )
    assert claimed is not None
    first = await locked(world, order)
    assert first is not None and first.calls_until is not None  # the live claim's lease end
    lease_end = first.calls_until

    async with world.results.transaction() as tx:
        await tx.save(
            order.payment_order_id.value,
            status=S.PENDING_STATUS_CHECK_LATER,
            attempt=0,
            reason="TIMEOUT",
            error=None,
            status_check_number=1,
            now=tx.now,
            calls_until=lease_end,
        )
    kept = await locked(world, order)
    assert kept is not None and kept.calls_until == lease_end
    assert (
        await world.claims.claim_attempt(
            order.payment_order_id.value, attempt=0, claim_token="delivery-b", lease_seconds=LEASE
        )
    ) is None  # waiting for a check: not chargeable, whatever the bound

    async with world.results.transaction() as tx:
        await save(tx, order, S.FAILED_TRANSIENT_ERROR, attempt=1, reason="NO_CHARGE_AT_PSP")
    cleared = await locked(world, order)
    assert cleared is not None and cleared.calls_until is None


async def test_a_save_can_clear_the_reason_and_the_error(world: OrdersWorld) -> None:
    order = await add_order(world)
    async with world.results.transaction() as tx:
        await save(tx, order, S.FAILED_TRANSIENT_ERROR, attempt=1, reason="PSP_ERROR", error="boom")
    async with world.results.transaction() as tx:
        await save(tx, order, S.SUCCESSFUL_FINAL, attempt=1, error="")  # an empty error is none

    after = await locked(world, order)
    assert after is not None
    assert (after.order.status, after.order.retry_reason, after.order.last_error_message) == (
        S.SUCCESSFUL_FINAL,
        None,
        None,
    )


async def test_events_land_in_the_outbox_unpublished_in_the_order_written(world: OrdersWorld) -> None:
    order, other = await world.add_payment(Order(), Order())
    envelopes = [
        answer(order, S.SUCCESSFUL_FINAL),
        answer(other, S.DECLINED_FINAL),
        payment_order_settled(order, trace_id="trace-a", parent_event_id=an_event_id(2), now=EVENT_TIME),
    ]

    async with world.results.transaction() as tx:
        await tx.add_events(envelopes)

    assert await world.outbox(str(order.payment_order_id.value)) == [
        OutboxLine("NEW", as_published(envelopes[0])),
        OutboxLine("NEW", as_published(envelopes[2])),
    ]
    assert await world.outbox(str(other.payment_order_id.value)) == [OutboxLine("NEW", as_published(envelopes[1]))]


async def test_a_status_check_is_scheduled_once_per_order_attempt_and_check_number(world: OrdersWorld) -> None:
    order = await add_order(world, Order(S.PENDING_STATUS_CHECK_LATER))
    order_id = order.payment_order_id.value

    async with world.results.transaction() as tx:
        soon, later = tx.now + timedelta(seconds=5), tx.now + timedelta(minutes=5)
        await tx.schedule_status_check(order_id, attempt=0, check_number=1, due_at=soon, trace_id="first", now=tx.now)
        await tx.schedule_status_check(order_id, attempt=0, check_number=1, due_at=later, trace_id="again", now=tx.now)
    async with world.results.transaction() as tx:  # a redelivery, in a later transaction
        await tx.schedule_status_check(order_id, attempt=0, check_number=1, due_at=later, trace_id="late", now=tx.now)
        await tx.schedule_status_check(order_id, attempt=0, check_number=2, due_at=later, trace_id="next", now=tx.now)
        await tx.schedule_status_check(order_id, attempt=1, check_number=1, due_at=soon, trace_id="attempt", now=tx.now)

    assert await world.scheduled_checks(order_id) == [
        ScheduledCheck(0, 1, soon, "first", "SCHEDULED"),
        ScheduledCheck(0, 2, later, "next", "SCHEDULED"),
        ScheduledCheck(1, 1, soon, "attempt", "SCHEDULED"),
    ]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((S.INITIATED_PENDING, S.SUCCESSFUL_FINAL), PaymentStatus.INITIATED),
        ((S.NEEDS_RECONCILIATION, S.SUCCESSFUL_FINAL), PaymentStatus.INITIATED),
        ((S.SUCCESSFUL_FINAL, S.SUCCESSFUL_FINAL), PaymentStatus.SUCCESS),
        ((S.FAILED_FINAL, S.DECLINED_FINAL, S.UNKNOWN_FINAL), PaymentStatus.FAILED),
        ((S.SUCCESSFUL_FINAL, S.DECLINED_FINAL), PaymentStatus.PARTIALLY_SUCCEEDED),
    ],
    ids=["one-in-flight", "one-parked", "all-succeeded", "none-succeeded", "some-succeeded"],
)
async def test_roll_up_derives_the_payments_status_from_all_its_orders(
    world: OrdersWorld, statuses: tuple[PaymentOrderStatus, ...], expected: PaymentStatus
) -> None:
    orders = await world.add_payment(*(Order(status) for status in statuses))
    payment_id = orders[0].payment_id.value

    async with world.results.transaction() as tx:
        rolled_up = await tx.roll_up(payment_id, tx.now)

    assert rolled_up is expected
    assert await world.payment_status(payment_id) is expected


async def test_roll_up_sees_the_orders_saved_in_its_transaction_and_no_other_payments(world: OrdersWorld) -> None:
    first, _succeeded = await world.add_payment(Order(), Order(S.SUCCESSFUL_FINAL))
    [elsewhere] = await world.add_payment(Order(S.SUCCESSFUL_FINAL))

    async with world.results.transaction() as tx:
        await save(tx, first, S.SUCCESSFUL_FINAL)
        rolled_up = await tx.roll_up(first.payment_id.value, tx.now)

    assert rolled_up is PaymentStatus.SUCCESS
    assert await world.payment_status(first.payment_id.value) is PaymentStatus.SUCCESS
    assert await world.payment_status(elsewhere.payment_id.value) is PaymentStatus.INITIATED


async def test_a_batch_locks_some_orders_writes_every_kind_and_rolls_up_over_siblings_it_did_not_lock(
    world: OrdersWorld,
) -> None:
    first, second, third = await world.add_payment(Order(), Order(), Order(S.SUCCESSFUL_FINAL))
    [alone] = await world.add_payment(Order())
    settled = [
        payment_order_settled(first, trace_id="trace-a", parent_event_id=an_event_id(7), now=EVENT_TIME),
        payment_order_settled(second, trace_id="trace-a", parent_event_id=an_event_id(8), now=EVENT_TIME),
    ]

    async with world.results.transaction() as tx:
        found = await tx.lock_many([alone.payment_order_id.value, first.payment_order_id.value,
                                    second.payment_order_id.value])  # fmt: skip
        assert set(found) == {first.payment_order_id.value, second.payment_order_id.value, alone.payment_order_id.value}
        await save(tx, first, S.PSP_UNAVAILABLE_TRANSIENT, attempt=1)
        await save(tx, first, S.SUCCESSFUL_FINAL, attempt=1)  # saved twice in one transaction: the last one holds
        await save(tx, second, S.DECLINED_FINAL)
        await save(tx, alone, S.PENDING_STATUS_CHECK_LATER, check_number=1)
        await tx.add_events(settled)
        due = tx.now + timedelta(seconds=5)
        await tx.schedule_status_check(
            alone.payment_order_id.value, attempt=0, check_number=1, due_at=due, trace_id="alone", now=tx.now
        )
        mixed = await tx.roll_up(first.payment_id.value, tx.now)  # `third`, not locked here, succeeded before
        waiting = await tx.roll_up(alone.payment_id.value, tx.now)

    assert (mixed, waiting) == (PaymentStatus.PARTIALLY_SUCCEEDED, PaymentStatus.INITIATED)
    assert await world.payment_status(first.payment_id.value) is PaymentStatus.PARTIALLY_SUCCEEDED
    assert await world.payment_status(alone.payment_id.value) is PaymentStatus.INITIATED
    after = {o.payment_order_id.value: await locked(world, o) for o in (first, second, third, alone)}
    assert {i: (a.order.status, a.order.retry_count) for i, a in after.items() if a is not None} == {
        first.payment_order_id.value: (S.SUCCESSFUL_FINAL, 1),
        second.payment_order_id.value: (S.DECLINED_FINAL, 0),
        third.payment_order_id.value: (S.SUCCESSFUL_FINAL, 0),
        alone.payment_order_id.value: (S.PENDING_STATUS_CHECK_LATER, 0),
    }
    assert await world.outbox(str(first.payment_order_id.value)) == [OutboxLine("NEW", as_published(settled[0]))]
    assert await world.outbox(str(second.payment_order_id.value)) == [OutboxLine("NEW", as_published(settled[1]))]
    assert await world.scheduled_checks(alone.payment_order_id.value) == [
        ScheduledCheck(0, 1, due, "alone", "SCHEDULED")
    ]


async def test_a_roll_up_after_a_lock_counts_a_sibling_committed_by_another_transaction_before_it(
    world: OrdersWorld,
) -> None:
    first, sibling = await world.add_payment(Order(), Order())
    async with world.results.transaction() as tx:  # another applier settles the sibling first
        await tx.lock(sibling.payment_order_id.value)
        await save(tx, sibling, S.DECLINED_FINAL)
        await tx.roll_up(sibling.payment_id.value, tx.now)

    async with world.results.transaction() as tx:
        await tx.lock(first.payment_order_id.value)
        await save(tx, first, S.DECLINED_FINAL)
        rolled_up = await tx.roll_up(first.payment_id.value, tx.now)

    assert rolled_up is PaymentStatus.FAILED
    assert await world.payment_status(first.payment_id.value) is PaymentStatus.FAILED


async def test_a_reconciliation_is_kept_as_one_audit_line(world: OrdersWorld) -> None:
    order = await add_order(world, Order(S.NEEDS_RECONCILIATION, attempt=2))
    async with world.results.transaction() as tx:
        entry = ReconciliationEntry(
            payment_order_id=order.payment_order_id.value,
            attempt=2,
            from_status=S.NEEDS_RECONCILIATION,
            to_status=S.SUCCESSFUL_FINAL,
            source="operator",
            actor="alice",
            note="PSP dashboard shows the capture",
            at=tx.now,
        )
        await tx.record_reconciliation(entry)
        await save(tx, order, S.SUCCESSFUL_FINAL)

    assert await world.audit(order.payment_order_id.value) == [entry]


async def test_texts_longer_than_their_columns_are_cut_to_fit(world: OrdersWorld) -> None:
    order = await add_order(world, Order(S.NEEDS_RECONCILIATION))
    order_id = order.payment_order_id.value
    async with world.results.transaction() as tx:
        await save(tx, order, S.FAILED_FINAL, error="e" * 2_500)
        await tx.schedule_status_check(
            order_id, attempt=0, check_number=1, due_at=tx.now, trace_id="t" * 100, now=tx.now
        )
        entry = ReconciliationEntry(
            order_id, 0, S.NEEDS_RECONCILIATION, S.FAILED_FINAL, "operator", "a" * 300, None, tx.now
        )
        await tx.record_reconciliation(entry)

    after = await locked(world, order)
    assert after is not None and after.order.last_error_message == "e" * 2_000
    [check] = await world.scheduled_checks(order_id)
    assert check.trace_id == "t" * 64
    [line] = await world.audit(order_id)
    assert line.actor == "a" * 255


class Boom(Exception):
    pass


async def test_an_exception_in_the_block_rolls_back_everything_written_in_it(world: OrdersWorld) -> None:
    consumer = a_consumer()
    order, _succeeded = await world.add_payment(Order(), Order(S.SUCCESSFUL_FINAL))
    order_id = order.payment_order_id.value
    await world.claims.claim_attempt(order_id, attempt=0, claim_token="delivery-a", lease_seconds=LEASE)
    before = await locked(world, order)

    with pytest.raises(Boom):
        async with world.results.transaction() as tx:
            assert await tx.first_time(consumer, an_event_id(1), tx.now)
            await tx.lock(order_id)
            await save(tx, order, S.SUCCESSFUL_FINAL, check_number=1)
            await tx.add_events([answer(order, S.SUCCESSFUL_FINAL)])
            await tx.schedule_status_check(order_id, attempt=0, check_number=1, due_at=tx.now, trace_id="t", now=tx.now)
            assert await tx.roll_up(order.payment_id.value, tx.now) is PaymentStatus.SUCCESS
            await tx.record_reconciliation(
                ReconciliationEntry(
                    order_id, 0, S.NEEDS_RECONCILIATION, S.SUCCESSFUL_FINAL, "operator", "a", None, tx.now
                )
            )
            raise Boom

    assert await locked(world, order) == before
    assert (
        await world.claims.claim_attempt(order_id, attempt=0, claim_token="delivery-b", lease_seconds=LEASE) is None
    )  # the claim the save freed stands again
    assert await world.outbox(str(order_id)) == []
    assert await world.scheduled_checks(order_id) == []
    assert await world.payment_status(order.payment_id.value) is PaymentStatus.INITIATED
    assert await world.audit(order_id) == []
    async with world.results.transaction() as tx:
        assert await tx.first_time(consumer, an_event_id(1), tx.now) is True  # the inbox too


async def test_a_commit_keeps_what_others_committed_while_the_transaction_was_open(world: OrdersWorld) -> None:
    order = await add_order(world)
    [other] = await world.add_payment(Order(S.PENDING_STATUS_CHECK_LATER))
    order_id = order.payment_order_id.value

    async with world.results.transaction() as tx:
        await tx.first_time(a_consumer(), an_event_id(1), tx.now)
        claimed = await world.claims.claim_attempt(order_id, attempt=0, claim_token="delivery-a", lease_seconds=LEASE)
        seen = await tx.lock(order_id)  # after the claim committed: the order as it now stands
        await save(tx, other, S.SUCCESSFUL_FINAL)

    assert claimed is not None and seen is not None and seen.psp_calls == 1
    after = await locked(world, order)
    assert after is not None and after.psp_calls == 1
    assert (
        await world.claims.claim_attempt(order_id, attempt=0, claim_token="delivery-b", lease_seconds=LEASE) is None
    )  # the claim still stands


# --- the ledger ---------------------------------------------------------------------------------------------------


def a_charge(order: PaymentOrder) -> JournalEntry:
    return charge_entry(order, CommissionSchedule(default_bps=1_000))


async def test_entries_are_posted_with_the_state_change_on_the_transactions_clock(world: OrdersWorld) -> None:
    first, second = await world.add_payment(Order(), Order())
    async with world.results.transaction() as tx:
        await save(tx, first, S.SUCCESSFUL_FINAL)
        await save(tx, second, S.SUCCESSFUL_FINAL)
        await tx.post_entries([a_charge(first), a_charge(second)], tx.now)
        began = tx.now

    assert await world.ledger(first.payment_order_id.value) == [(a_charge(first), began)]
    assert await world.ledger(second.payment_order_id.value) == [(a_charge(second), began)]


async def test_a_second_charge_entry_for_an_order_is_refused_and_nothing_of_its_transaction_is_written(
    world: OrdersWorld,
) -> None:
    order, other = await world.add_payment(Order(), Order())
    async with world.results.transaction() as tx:
        await tx.post_entries([a_charge(order)], tx.now)

    with pytest.raises(LedgerEntryExists):
        async with world.results.transaction() as tx:
            await save(tx, other, S.SUCCESSFUL_FINAL)
            await tx.post_entries([a_charge(other), a_charge(order)], tx.now)

    assert len(await world.ledger(order.payment_order_id.value)) == 1
    assert await world.ledger(other.payment_order_id.value) == []
    stored = await locked(world, other)
    assert stored is not None and stored.order.status is S.INITIATED_PENDING


async def test_two_charge_entries_for_one_order_in_one_write_are_refused(world: OrdersWorld) -> None:
    order = await add_order(world)
    with pytest.raises(LedgerEntryExists):
        async with world.results.transaction() as tx:
            await tx.post_entries([a_charge(order), a_charge(order)], tx.now)
    assert await world.ledger(order.payment_order_id.value) == []


async def test_entries_roll_back_with_their_transaction(world: OrdersWorld) -> None:
    order = await add_order(world)
    with pytest.raises(RuntimeError):
        async with world.results.transaction() as tx:
            await save(tx, order, S.SUCCESSFUL_FINAL)
            await tx.post_entries([a_charge(order)], tx.now)
            raise RuntimeError("the applier crashed before its commit")
    assert await world.ledger(order.payment_order_id.value) == []
