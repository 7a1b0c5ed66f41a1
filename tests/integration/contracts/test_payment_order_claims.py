"""PaymentOrderClaims: FakeClaims and PostgresPaymentOrderClaims (on the session database) pass the same cases.
A claim takes an order at its attempt in a chargeable status, holds it against other deliveries while its lease
runs, and counts every call made under the attempt's key; the result transaction frees the claim and, when it
moves the order to another attempt, starts the count again. Leases run on the database's clock (the fake's
FakeClock, Postgres now())."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.payment_orders import ClaimedAttempt
from payment_domain.payment import PaymentOrder
from payment_domain.status import RETRYABLE, PaymentOrderStatus
from tests.integration.contracts.payment_orders_world import (
    LEASE,
    SHORT_LEASE,
    Order,
    OrdersWorld,
    add_order,
    backend_of,
    open_world,
)

S = PaymentOrderStatus
CHARGEABLE = [S.INITIATED_PENDING, *sorted(RETRYABLE)]
NOT_CHARGEABLE = [s for s in S if s not in CHARGEABLE]


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest) -> AsyncEngine | None:
    return backend_of(request)


@pytest.fixture
async def world(backend: AsyncEngine | None) -> AsyncIterator[OrdersWorld]:
    async with open_world(backend) as opened:
        yield opened


async def claim(
    world: OrdersWorld, order: PaymentOrder, token: str, *, attempt: int | None = None, lease: float = LEASE
) -> ClaimedAttempt | None:
    return await world.claims.claim_attempt(
        order.payment_order_id.value,
        attempt=order.retry_count if attempt is None else attempt,
        claim_token=token,
        lease_seconds=lease,
    )


async def calls_on_record(world: OrdersWorld, order: PaymentOrder) -> int:
    async with world.results.transaction() as tx:
        locked = await tx.lock(order.payment_order_id.value)
    assert locked is not None
    return locked.psp_calls


async def save(world: OrdersWorld, order: PaymentOrder, status: PaymentOrderStatus, *, attempt: int) -> None:
    async with world.results.transaction() as tx:
        await tx.save(
            order.payment_order_id.value,
            status=status,
            attempt=attempt,
            reason=None,
            error=None,
            status_check_number=0,
            now=tx.now,
        )


async def test_an_order_in_a_chargeable_status_is_claimed_at_its_attempt_as_the_first_call_under_its_key(
    world: OrdersWorld,
) -> None:
    for status in CHARGEABLE:
        attempt = 0 if status is S.INITIATED_PENDING else 2
        order = await add_order(world, Order(status, attempt=attempt))

        claimed = await claim(world, order, "delivery-a")

        assert claimed == ClaimedAttempt(order=order, call_number=1), status
        assert await calls_on_record(world, order) == 1


async def test_no_claim_at_another_attempt_nor_in_a_status_that_cannot_be_charged_nor_for_an_unknown_order(
    world: OrdersWorld,
) -> None:
    at_attempt_one = await add_order(world, Order(S.PSP_UNAVAILABLE_TRANSIENT, attempt=1))
    not_chargeable = [await add_order(world, Order(status, attempt=1)) for status in NOT_CHARGEABLE]
    unknown = await add_order(world)

    assert await claim(world, at_attempt_one, "delivery-a", attempt=0) is None
    assert await claim(world, at_attempt_one, "delivery-a", attempt=2) is None
    for order in not_chargeable:
        assert await claim(world, order, "delivery-a") is None, order.status
    assert (
        await world.claims.claim_attempt(
            unknown.payment_order_id.value + 9, attempt=0, claim_token="delivery-a", lease_seconds=LEASE
        )
        is None
    )

    for order in [at_attempt_one, *not_chargeable]:
        assert await calls_on_record(world, order) == 0, order.status


async def test_another_delivery_is_refused_while_the_claim_is_live_and_counts_nothing(world: OrdersWorld) -> None:
    order = await add_order(world)
    await claim(world, order, "delivery-a")

    assert await claim(world, order, "delivery-b") is None
    assert await calls_on_record(world, order) == 1


async def test_the_same_delivery_takes_its_claim_again_and_counts_another_call(world: OrdersWorld) -> None:
    order = await add_order(world)

    numbers = [await claim(world, order, "delivery-a") for _ in range(3)]

    assert [c.call_number if c else None for c in numbers] == [1, 2, 3]
    assert await calls_on_record(world, order) == 3


async def test_once_the_lease_ran_out_any_delivery_takes_the_claim_and_holds_it_against_the_first(
    world: OrdersWorld,
) -> None:
    order = await add_order(world)
    await claim(world, order, "delivery-a", lease=SHORT_LEASE)  # ...and its executor dies before the PSP answers
    assert await claim(world, order, "delivery-b") is None

    await world.let_pass(SHORT_LEASE)
    taken_over = await claim(world, order, "delivery-b")

    assert taken_over is not None and taken_over.call_number == 2  # the first call may have charged
    assert await claim(world, order, "delivery-a") is None


async def test_calls_already_on_record_for_the_attempt_are_counted_on_from(world: OrdersWorld) -> None:
    order = await add_order(world, Order(S.TIMEOUT_EXCEEDED_1S_TRANSIENT, attempt=1, psp_calls=2))

    claimed = await claim(world, order, "delivery-a")

    assert claimed is not None and claimed.call_number == 3


async def test_a_result_saved_at_the_same_attempt_frees_the_claim_and_keeps_the_count(world: OrdersWorld) -> None:
    order = await add_order(world)
    await claim(world, order, "delivery-a")
    await claim(world, order, "delivery-a")

    await save(world, order, S.TIMEOUT_EXCEEDED_1S_TRANSIENT, attempt=0)  # the answer: call again under this key

    assert await calls_on_record(world, order) == 2
    again = await claim(world, order, "delivery-b")  # no lease left to wait out
    assert again is not None and again.call_number == 3


async def test_a_result_moving_the_order_to_another_attempt_starts_the_count_again(world: OrdersWorld) -> None:
    order = await add_order(world)
    await claim(world, order, "delivery-a")
    await claim(world, order, "delivery-a")

    await save(world, order, S.FAILED_TRANSIENT_ERROR, attempt=1)

    assert await calls_on_record(world, order) == 0
    assert await claim(world, order, "delivery-a", attempt=0) is None  # the old attempt is over
    next_attempt = await claim(world, order, "delivery-b", attempt=1)
    assert next_attempt is not None and next_attempt.call_number == 1
    assert next_attempt.order.retry_count == 1 and next_attempt.order.status is S.FAILED_TRANSIENT_ERROR


async def test_claims_made_at_once_are_each_judged_by_their_own_attempt_token_and_state(world: OrdersWorld) -> None:
    """A consumer batch asks for many claims at once (Postgres coalesces them into one statement for many orders):
    every claim still gets exactly the answer it would get alone."""
    fresh = [await add_order(world) for _ in range(5)]
    retrying = await add_order(world, Order(S.PSP_UNAVAILABLE_TRANSIENT, attempt=2))
    settled = await add_order(world, Order(S.SUCCESSFUL_FINAL))
    held = await add_order(world)
    await claim(world, held, "delivery-held")
    mine = await add_order(world)
    await claim(world, mine, "delivery-mine")

    answers = await asyncio.gather(
        *(claim(world, order, f"delivery-{n}") for n, order in enumerate(fresh)),
        claim(world, retrying, "delivery-r"),
        claim(world, retrying, "delivery-r2", attempt=1),
        claim(world, settled, "delivery-s"),
        claim(world, held, "delivery-other"),
        claim(world, mine, "delivery-mine"),
    )

    assert answers[:5] == [ClaimedAttempt(order=order, call_number=1) for order in fresh]
    assert answers[5] == ClaimedAttempt(order=retrying, call_number=1)
    assert answers[6:9] == [None, None, None]  # not at attempt 1 / not chargeable / held by another delivery
    assert answers[9] is not None and answers[9].call_number == 2  # the same delivery takes its claim again
    assert [await calls_on_record(world, order) for order in (*fresh, retrying, settled, held, mine)] == [
        1,
        1,
        1,
        1,
        1,
        1,
        0,
        1,
        2,
    ]


async def test_deliveries_racing_for_one_order_get_one_claim(world: OrdersWorld) -> None:
    order = await add_order(world)

    answers = await asyncio.gather(*(claim(world, order, f"delivery-{n}") for n in range(4)))

    assert sum(answer is not None for answer in answers) == 1
    assert await calls_on_record(world, order) == 1
