"""ParkedOrders: FakeParkedOrders and PostgresParkedOrders pass the same cases. Only orders in
NEEDS_RECONCILIATION are parked; the re-query claims each at most once per interval on the store's clock and numbers
every question one past the order's last check number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.parked_orders import ParkedOrder
from payment_domain.status import PaymentOrderStatus
from tests.integration.contracts.payment_orders_world import Order, OrdersWorld, add_order, backend_of, open_world

S = PaymentOrderStatus
PARKED = Order(status=S.NEEDS_RECONCILIATION, attempt=2, status_check_number=5)
EVERY = timedelta(seconds=0.3)
ALL = 10_000  # the claim takes parked orders from the whole table: the cases look only at their own


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest) -> AsyncEngine | None:
    return backend_of(request)


@pytest.fixture
async def world(backend: AsyncEngine | None) -> AsyncIterator[OrdersWorld]:
    async with open_world(backend) as opened:
        yield opened


def mine(claimed: list[ParkedOrder], *ids: int) -> dict[int, int]:
    """order id -> query number, for the case's own orders."""
    return {p.order.payment_order_id.value: p.query_number for p in claimed if p.order.payment_order_id.value in ids}


async def test_a_parked_order_is_claimed_with_the_next_query_number(world: OrdersWorld) -> None:
    order = await add_order(world, PARKED)
    order_id = order.payment_order_id.value

    claimed = await world.parked.claim_due(every=EVERY, limit=ALL)

    (parked,) = [p for p in claimed if p.order.payment_order_id.value == order_id]
    assert parked.query_number == 6
    assert (parked.order.status, parked.order.retry_count) == (S.NEEDS_RECONCILIATION, 2)
    assert parked.parked_since == order.updated_at


async def test_each_parked_order_is_asked_about_at_most_once_per_interval(world: OrdersWorld) -> None:
    first = (await add_order(world, PARKED)).payment_order_id.value
    second = (await add_order(world, PARKED)).payment_order_id.value

    claimed = mine(await world.parked.claim_due(every=EVERY, limit=ALL), first, second)
    within = mine(await world.parked.claim_due(every=EVERY, limit=ALL), first, second)
    await world.let_pass(EVERY.total_seconds())
    after = mine(await world.parked.claim_due(every=EVERY, limit=ALL), first, second)

    assert claimed == {first: 6, second: 6}
    assert within == {}
    assert after == {first: 7, second: 7}


@pytest.mark.parametrize(
    "status", [s for s in PaymentOrderStatus if s is not PaymentOrderStatus.NEEDS_RECONCILIATION], ids=str
)
async def test_an_order_that_is_not_parked_is_never_claimed_listed_or_got(
    world: OrdersWorld, status: PaymentOrderStatus
) -> None:
    order_id = (await add_order(world, Order(status=status, status_check_number=5))).payment_order_id.value

    assert mine(await world.parked.claim_due(every=EVERY, limit=ALL), order_id) == {}
    assert mine(await world.parked.list_parked(limit=ALL), order_id) == {}
    assert await world.parked.get(order_id) is None


async def test_listing_and_getting_claim_nothing(world: OrdersWorld) -> None:
    order_id = (await add_order(world, PARKED)).payment_order_id.value

    listed = mine(await world.parked.list_parked(limit=ALL), order_id)
    got = await world.parked.get(order_id)
    claimed = mine(await world.parked.claim_due(every=EVERY, limit=ALL), order_id)

    assert listed == {order_id: 5}
    assert got is not None and got.query_number == 5
    assert claimed == {order_id: 6}  # listing and getting did not count as asking


async def test_the_count_moves_with_the_parked_orders_alone(world: OrdersWorld) -> None:
    before = await world.parked.count()
    await add_order(world, PARKED)
    await add_order(world, PARKED)
    await add_order(world, Order(status=S.PENDING_STATUS_CHECK_LATER, status_check_number=1))

    assert await world.parked.count() == before + 2


async def test_an_unknown_order_is_not_parked(world: OrdersWorld) -> None:
    assert await world.parked.get(9 * 10**17) is None


async def test_a_claim_needs_a_positive_limit(world: OrdersWorld) -> None:
    with pytest.raises(ValueError, match="limit"):
        await world.parked.claim_due(every=EVERY, limit=0)
