"""The create-payment use case against hand-written fakes of its ports."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from payment_application.create_payment import (
    CreatePayment,
    CreatePaymentCommand,
    PaymentCreated,
    PaymentReplayed,
)
from payment_application.errors import (
    DependencyUnavailable,
    IdempotencyKeyMismatch,
    OrderAlreadyHasPayment,
    WriteOutcomeUnknown,
)
from payment_application.ports.ids import IdNamespace
from payment_domain.errors import InvalidPayment
from payment_domain.events import EventType, payment_order_created
from payment_domain.ids import PaymentId
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentLine
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from tests.fakes import FakeClock, FakeIdGenerator, FakePaymentRepository, FakePresenter

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
TTL = timedelta(hours=24)


@dataclass
class World:
    clock: FakeClock
    ids: FakeIdGenerator
    payments: FakePaymentRepository
    presenter: FakePresenter
    create: CreatePayment


FIRST_IDS = {IdNamespace.PAYMENT: 7, IdNamespace.PAYMENT_ORDER: 100}


@pytest.fixture
def world() -> World:
    clock = FakeClock(START)
    ids = FakeIdGenerator(start=FIRST_IDS)
    payments = FakePaymentRepository()
    presenter = FakePresenter()
    create = CreatePayment(payments=payments, ids=ids, clock=clock, presenter=presenter, idempotency_ttl=TTL)
    return World(clock, ids, payments, presenter, create)


def another_process(world: World) -> CreatePayment:
    """A second API process on the same database whose id counters start where this one's do (as when Redis lost
    them between the two start-ups): what it stores, this one is about to hand out."""
    ids = FakeIdGenerator(start=FIRST_IDS)
    return CreatePayment(
        payments=world.payments, ids=ids, clock=world.clock, presenter=world.presenter, idempotency_ttl=TTL
    )


def a_command(
    *,
    key: str | None = None,
    request_hash: str = "hash-a",
    client_id: str = "shop",
    order_id: str = "order-1",
) -> CreatePaymentCommand:
    return CreatePaymentCommand(
        client_id=client_id,
        buyer_id="buyer-1",
        order_id=order_id,
        total=Amount(6000, Currency.EUR),
        lines=(
            PaymentLine("seller-a", Amount(1000, Currency.EUR)),
            PaymentLine("seller-b", Amount(2000, Currency.EUR)),
            PaymentLine("seller-c", Amount(3000, Currency.EUR)),
        ),
        trace_id="trace-1",
        idempotency_key=key,
        request_hash=request_hash,
    )


# --- the happy path -------------------------------------------------------------------------------


async def test_a_payment_is_written_with_one_order_per_line_using_the_allocated_ids(world: World) -> None:
    outcome = await world.create(a_command())

    assert isinstance(outcome, PaymentCreated)
    assert outcome.status_code == 202
    payment = outcome.payment
    assert world.payments.payments == {PaymentId(7): payment}
    assert payment.payment_id == PaymentId(7)
    assert payment.status is PaymentStatus.INITIATED
    assert payment.created_at == START
    assert [o.payment_order_id.value for o in payment.payment_orders] == [100, 101, 102]
    assert [o.seller_id for o in payment.payment_orders] == ["seller-a", "seller-b", "seller-c"]
    assert [o.amount.value for o in payment.payment_orders] == [1000, 2000, 3000]
    assert {o.status for o in payment.payment_orders} == {PaymentOrderStatus.INITIATED_PENDING}
    assert {o.created_at for o in payment.payment_orders} == {START}
    assert world.ids.issued == {IdNamespace.PAYMENT: [7], IdNamespace.PAYMENT_ORDER: [100, 101, 102]}


async def test_one_payment_order_created_event_per_order_goes_to_the_outbox(world: World) -> None:
    outcome = await world.create(a_command())

    assert isinstance(outcome, PaymentCreated)
    outbox = world.payments.outbox
    assert [e.event_type for e in outbox] == [EventType.PAYMENT_ORDER_CREATED] * 3
    assert [e.aggregate_id for e in outbox] == ["100", "101", "102"]
    assert {e.timestamp for e in outbox} == {START}
    assert {e.trace_id for e in outbox} == {"trace-1"}
    assert {e.payload.order.created_at for e in outbox} == {START}
    orders = outcome.payment.payment_orders
    assert outbox == [payment_order_created(o, trace_id="trace-1", now=START) for o in orders]
    assert len({e.event_id for e in outbox}) == 3


async def test_the_write_carries_the_client_and_the_trace(world: World) -> None:
    await world.create(a_command(client_id="marketplace-web"))

    assert world.payments.client_ids == {PaymentId(7): "marketplace-web"}
    assert world.payments.trace_ids == {PaymentId(7): "trace-1"}


async def test_the_response_body_is_the_presenter_rendering_of_the_new_payment(world: World) -> None:
    outcome = await world.create(a_command())

    assert isinstance(outcome, PaymentCreated)
    assert world.presenter.rendered == [outcome.payment]
    assert outcome.body == world.presenter.created(outcome.payment)


async def test_without_a_key_no_idempotency_record_is_kept(world: World) -> None:
    await world.create(a_command())

    assert world.payments.idempotency == {}


async def test_without_a_key_each_order_gets_its_own_payment(world: World) -> None:
    first = await world.create(a_command(order_id="order-1"))
    second = await world.create(a_command(order_id="order-2"))

    assert isinstance(first, PaymentCreated)
    assert isinstance(second, PaymentCreated)
    assert first.payment.payment_id != second.payment.payment_id
    assert len(world.payments.payments) == 2
    assert len(world.payments.outbox) == 6


# --- one payment per order ------------------------------------------------------------------------


async def test_a_second_create_for_an_order_is_refused_and_names_the_first_payment(world: World) -> None:
    await world.create(a_command(order_id="order-1"))

    with pytest.raises(OrderAlreadyHasPayment) as raised:
        await world.create(a_command(order_id="order-1", request_hash="hash-b"))

    assert (raised.value.order_id, raised.value.payment_id) == ("order-1", PaymentId(7))
    assert list(world.payments.payments) == [PaymentId(7)]
    assert len(world.payments.outbox) == 3


async def test_a_new_key_does_not_make_a_second_payment_for_an_order_nor_keep_a_record(world: World) -> None:
    await world.create(a_command(key="k1", order_id="order-1"))

    with pytest.raises(OrderAlreadyHasPayment) as raised:
        await world.create(a_command(key="k2", order_id="order-1"))

    assert raised.value.payment_id == PaymentId(7)
    assert list(world.payments.payments) == [PaymentId(7)]
    assert list(world.payments.idempotency) == [("shop", "k1")]


async def test_a_replay_of_the_first_key_is_still_answered_with_the_first_response(world: World) -> None:
    first = await world.create(a_command(key="k1", order_id="order-1"))

    again = await world.create(a_command(key="k1", order_id="order-1"))

    assert isinstance(first, PaymentCreated)
    assert again == PaymentReplayed(status_code=202, body=first.body, payment_id=7)


async def test_an_order_id_belongs_to_its_client(world: World) -> None:
    mine = await world.create(a_command(client_id="shop", order_id="order-1"))
    theirs = await world.create(a_command(client_id="other-shop", order_id="order-1"))

    assert isinstance(mine, PaymentCreated)
    assert isinstance(theirs, PaymentCreated)
    assert len(world.payments.payments) == 2


async def test_an_order_paid_under_colliding_ids_is_refused_once_the_ids_are_re_synced(world: World) -> None:
    await another_process(world)(a_command(order_id="order-1"))  # stored the ids this process hands out next

    with pytest.raises(OrderAlreadyHasPayment) as raised:
        await world.create(a_command(order_id="order-1"))

    assert world.ids.recoveries == 1
    assert raised.value.payment_id == PaymentId(7)
    assert list(world.payments.payments) == [PaymentId(7)]


# --- bad input and failing dependencies -----------------------------------------------------------


async def test_invalid_input_is_rejected_before_any_id_is_allocated(world: World) -> None:
    bad = replace(a_command(key="k1"), total=Amount(5999, Currency.EUR), buyer_id=" ")

    with pytest.raises(InvalidPayment) as raised:
        await world.create(bad)

    assert [v.field for v in raised.value.violations] == ["buyerId", "totalAmount.value"]
    assert world.ids.issued_count == 0
    assert world.payments.payments == {}
    assert world.payments.outbox == []
    assert world.payments.idempotency == {}
    assert world.presenter.rendered == []


async def test_an_id_allocation_failure_propagates_and_nothing_is_stored(world: World) -> None:
    world.ids.fail_with = DependencyUnavailable("redis", "connection refused")

    with pytest.raises(DependencyUnavailable) as raised:
        await world.create(a_command(key="k1"))

    assert raised.value.dependency == "redis"
    assert world.payments.payments == {}
    assert world.payments.outbox == []
    assert world.payments.idempotency == {}
    assert world.presenter.rendered == []


async def test_a_repository_failure_propagates(world: World) -> None:
    world.payments.fail_with = DependencyUnavailable("database", "cannot reach the database")

    with pytest.raises(DependencyUnavailable):
        await world.create(a_command(key="k1"))

    assert world.payments.payments == {}


async def test_a_write_whose_outcome_is_unknown_is_reported_so_and_not_tried_again(world: World) -> None:
    world.payments.fail_with = WriteOutcomeUnknown("database", "connection lost after the statement was sent")

    with pytest.raises(WriteOutcomeUnknown):
        await world.create(a_command())

    # One allocation, one attempt: trying again here could only answer for the client what a retry of its own
    # (same key or same orderId) answers with certainty.
    assert world.ids.issued == {IdNamespace.PAYMENT: [7], IdNamespace.PAYMENT_ORDER: [100, 101, 102]}


async def test_ids_already_stored_are_re_synced_and_the_payment_written_with_fresh_ones(world: World) -> None:
    first = await another_process(world)(a_command(order_id="order-1"))
    assert isinstance(first, PaymentCreated)

    second = await world.create(a_command(key="k2", order_id="order-2"))

    assert isinstance(second, PaymentCreated)
    assert world.ids.recoveries == 1
    assert second.payment.payment_id != first.payment.payment_id
    assert len(world.payments.payments) == 2
    assert ("shop", "k2") in world.payments.idempotency


async def test_ids_still_taken_after_a_re_sync_are_answered_unavailable_and_nothing_is_written(world: World) -> None:
    other = another_process(world)
    await other(a_command(order_id="order-1"))
    await other(a_command(order_id="order-2"))
    world.ids.resync_jump = 0  # a re-sync with no margin, reading none of the other's rows: still on its ids

    with pytest.raises(DependencyUnavailable) as raised:
        await world.create(a_command(key="k2", order_id="order-3"))

    assert raised.value.dependency == "ids"
    assert world.ids.recoveries == 2
    assert len(world.payments.payments) == 2
    assert ("shop", "k2") not in world.payments.idempotency


async def test_after_a_failed_attempt_the_same_key_creates_the_payment(world: World) -> None:
    world.ids.fail_with = DependencyUnavailable("redis", "connection refused")
    with pytest.raises(DependencyUnavailable):
        await world.create(a_command(key="k1"))

    world.ids.fail_with = None
    outcome = await world.create(a_command(key="k1"))

    assert isinstance(outcome, PaymentCreated)
    assert len(world.payments.payments) == 1


# --- idempotency ----------------------------------------------------------------------------------


async def test_the_first_request_with_a_key_creates_the_payment_and_records_its_response(
    world: World,
) -> None:
    outcome = await world.create(a_command(key="k1", request_hash="hash-a"))

    assert isinstance(outcome, PaymentCreated)
    record = world.payments.idempotency[("shop", "k1")]
    assert record.request_hash == "hash-a"
    assert (record.response_status, record.response_body) == (202, outcome.body)
    assert record.payment_id == outcome.payment.payment_id.value
    assert record.created_at == START


async def test_the_idempotency_record_expires_one_ttl_after_the_request(world: World) -> None:
    world.clock.advance(timedelta(minutes=42))

    await world.create(a_command(key="k1"))

    record = world.payments.idempotency[("shop", "k1")]
    assert record.created_at == START + timedelta(minutes=42)
    assert record.expires_at == START + timedelta(minutes=42) + TTL


async def test_a_retry_with_the_same_body_replays_the_first_response(world: World) -> None:
    first = await world.create(a_command(key="k1", request_hash="hash-a"))
    world.clock.advance(timedelta(minutes=5))
    again = await world.create(a_command(key="k1", request_hash="hash-a"))

    assert isinstance(first, PaymentCreated)
    assert again == PaymentReplayed(status_code=202, body=first.body, payment_id=7)
    assert list(world.payments.payments) == [PaymentId(7)]
    assert len(world.payments.outbox) == 3


async def test_a_retry_with_another_body_is_rejected_as_a_key_mismatch(world: World) -> None:
    await world.create(a_command(key="k1", request_hash="hash-a"))

    with pytest.raises(IdempotencyKeyMismatch) as raised:
        await world.create(a_command(key="k1", request_hash="hash-b"))

    assert raised.value.code == "idempotency_key_mismatch"
    assert list(world.payments.payments) == [PaymentId(7)]
    assert len(world.payments.outbox) == 3
    assert world.payments.idempotency[("shop", "k1")].request_hash == "hash-a"


async def test_a_key_is_scoped_to_its_client(world: World) -> None:
    mine = await world.create(a_command(key="k1", client_id="shop"))
    theirs = await world.create(a_command(key="k1", client_id="other-shop", request_hash="hash-b"))

    assert isinstance(mine, PaymentCreated)
    assert isinstance(theirs, PaymentCreated)
    assert len(world.payments.payments) == 2


async def test_a_retry_just_before_expiry_is_still_a_replay(world: World) -> None:
    await world.create(a_command(key="k1"))
    world.clock.advance(TTL - timedelta(milliseconds=1))

    assert isinstance(await world.create(a_command(key="k1")), PaymentReplayed)


async def test_an_expired_key_is_taken_over_by_a_new_payment(world: World) -> None:
    first = await world.create(a_command(key="k1", request_hash="hash-a"))
    world.clock.advance(TTL)

    second = await world.create(a_command(key="k1", request_hash="hash-b", order_id="order-2"))

    assert isinstance(first, PaymentCreated)
    assert isinstance(second, PaymentCreated)
    assert second.payment.payment_id != first.payment.payment_id
    record = world.payments.idempotency[("shop", "k1")]
    assert (record.request_hash, record.payment_id) == ("hash-b", second.payment.payment_id.value)
    assert record.expires_at == START + 2 * TTL
