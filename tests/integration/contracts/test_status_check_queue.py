"""StatusCheckQueue: FakeStatusCheckQueue and PostgresStatusCheckQueue (on the session database, its status-check
table to each case alone) pass the same cases. Checks are scheduled through the result transaction, due on the
database's clock; a claim leases the earliest due ones, and only the lease's holder marks them published."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.payment_orders import DueStatusCheck
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus
from tests.integration.contracts.payment_orders_world import (
    LEASE,
    SHORT_LEASE,
    Order,
    OrdersWorld,
    ScheduledCheck,
    add_order,
    backend_of,
    open_world,
)

S = PaymentOrderStatus
Key = tuple[int, int, int]  # (payment order, attempt, check number): a check's identity


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest) -> AsyncEngine | None:
    return backend_of(request)


@pytest.fixture
async def world(backend: AsyncEngine | None) -> AsyncIterator[OrdersWorld]:
    async with open_world(backend, checks_to_itself=True) as opened:
        yield opened


async def schedule(
    world: OrdersWorld, order: PaymentOrder, *, check_number: int = 1, due_in: timedelta = timedelta(0)
) -> Key:
    """Scheduled as the result transaction does it, due `due_in` after the transaction's clock."""
    order_id = order.payment_order_id.value
    async with world.results.transaction() as tx:
        await tx.schedule_status_check(
            order_id,
            attempt=order.retry_count,
            check_number=check_number,
            due_at=tx.now + due_in,
            trace_id=f"trace-{order_id}-{check_number}",
            now=tx.now,
        )
    return (order_id, order.retry_count, check_number)


def key(check: DueStatusCheck) -> Key:
    return (check.order.payment_order_id.value, check.attempt, check.check_number)


async def claim(world: OrdersWorld, limit: int = 10, lease: float = LEASE) -> list[DueStatusCheck]:
    return await world.checks.claim_due(limit=limit, lease_seconds=lease)


async def test_due_checks_are_claimed_earliest_first_up_to_the_limit_with_their_order_as_it_stands(
    world: OrdersWorld,
) -> None:
    order = await add_order(world, Order(S.PENDING_STATUS_CHECK_LATER, attempt=2, status_check_number=3))
    middle = await schedule(world, order, check_number=1, due_in=timedelta(seconds=-2))
    latest = await schedule(world, order, check_number=2, due_in=timedelta(seconds=-1))
    earliest = await schedule(world, order, check_number=3, due_in=timedelta(seconds=-3))
    await schedule(world, order, check_number=4, due_in=timedelta(hours=1))

    first = await claim(world, limit=2)
    rest = await claim(world, limit=2)

    assert {key(c) for c in first} == {earliest, middle}
    assert [key(c) for c in rest] == [latest]
    assert await claim(world) == []
    [check] = rest
    assert (check.order, check.trace_id) == (order, f"trace-{order.payment_order_id.value}-2")
    assert len({c.lease_token for c in first}) == 1 and first[0].lease_token != check.lease_token
    assert len({c.check_id for c in [*first, *rest]}) == 3


async def test_a_check_is_not_claimed_before_its_due_time(world: OrdersWorld) -> None:
    order = await add_order(world, Order(S.PENDING_STATUS_CHECK_LATER))
    soon = await schedule(world, order, due_in=timedelta(seconds=SHORT_LEASE))

    assert await claim(world) == []
    await world.let_pass(SHORT_LEASE)

    assert [key(c) for c in await claim(world)] == [soon]


async def test_a_claimed_check_is_not_claimed_again_until_its_lease_ran_out(world: OrdersWorld) -> None:
    order = await add_order(world, Order(S.PENDING_STATUS_CHECK_LATER))
    scheduled = await schedule(world, order)
    [lost] = await claim(world, lease=SHORT_LEASE)  # ...and the dispatcher dies before publishing it

    assert await claim(world) == []
    await world.let_pass(SHORT_LEASE)
    [again] = await claim(world)

    assert key(again) == key(lost) == scheduled
    assert again.check_id == lost.check_id and again.lease_token != lost.lease_token
    assert await claim(world) == []


async def test_only_the_holder_of_the_lease_marks_a_check_published(world: OrdersWorld) -> None:
    order = await add_order(world, Order(S.PENDING_STATUS_CHECK_LATER))
    await schedule(world, order)
    stale = await claim(world, lease=SHORT_LEASE)
    await world.let_pass(SHORT_LEASE)
    fresh = await claim(world)

    assert await world.checks.mark_published(stale) == 0
    [check] = await world.scheduled_checks(order.payment_order_id.value)
    assert check.status == "SCHEDULED"
    assert await world.checks.mark_published(fresh) == 1


async def test_a_published_check_is_never_claimed_again(world: OrdersWorld) -> None:
    order = await add_order(world, Order(S.PENDING_STATUS_CHECK_LATER))
    await schedule(world, order)
    claimed = await claim(world, lease=SHORT_LEASE)
    await world.let_pass(SHORT_LEASE)

    assert await world.checks.mark_published(claimed) == 1  # late, but nobody took the lease over
    await world.let_pass(SHORT_LEASE)
    assert await claim(world) == []
    assert await world.checks.mark_published(claimed) == 0
    [check] = await world.scheduled_checks(order.payment_order_id.value)
    assert check.status == "PUBLISHED"


async def test_one_mark_covers_the_checks_of_several_claims(world: OrdersWorld) -> None:
    first_order = await add_order(world, Order(S.PENDING_STATUS_CHECK_LATER))
    second_order = await add_order(world, Order(S.AUTH_NEEDED_STAUS_CHECK_LATER))
    await schedule(world, first_order, due_in=timedelta(seconds=-2))
    await schedule(world, second_order, due_in=timedelta(seconds=-1))
    first, second = await claim(world, limit=1), await claim(world, limit=1)

    assert await world.checks.mark_published([*first, *second]) == 2
    assert [c.status for c in await world.scheduled_checks(first_order.payment_order_id.value)] == ["PUBLISHED"]
    assert [c.status for c in await world.scheduled_checks(second_order.payment_order_id.value)] == ["PUBLISHED"]


async def test_concurrent_claims_never_hand_out_one_check_twice(world: OrdersWorld) -> None:
    orders = await world.add_payment(*(Order(S.PENDING_STATUS_CHECK_LATER) for _ in range(8)))
    scheduled = [
        await schedule(world, order, check_number=n, due_in=timedelta(milliseconds=-(10 * i + n)))
        for i, order in enumerate(orders)
        for n in (1, 2, 3)
    ]

    async def drain() -> list[Key]:
        got: list[Key] = []
        while batch := await claim(world, limit=4):
            got.extend(key(c) for c in batch)
        return got

    results = await asyncio.gather(*(drain() for _ in range(4)))

    every = [k for result in results for k in result]
    assert sorted(every) == sorted(scheduled)


async def test_what_a_claim_changes_is_only_the_lease(world: OrdersWorld) -> None:
    order = await add_order(world, Order(S.PENDING_STATUS_CHECK_LATER))
    await schedule(world, order, due_in=timedelta(seconds=-1))
    [before] = await world.scheduled_checks(order.payment_order_id.value)

    await claim(world)

    assert await world.scheduled_checks(order.payment_order_id.value) == [before]
    assert before == ScheduledCheck(0, 1, before.due_at, f"trace-{order.payment_order_id.value}-1", "SCHEDULED")
