"""PaymentRepository: FakePaymentRepository and PostgresPaymentRepository (on the session database) pass the same
cases for what a create may write: one payment per client and order, whatever the Idempotency-Key, and a live key's
replay before anything else. Each case uses order ids and payment ids of its own, so the shared database needs no
clean-up."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from payment_application.errors import OrderAlreadyHasPayment
from payment_application.ports.payments import IdempotencyRecord, PaymentRepository
from payment_domain.events import payment_order_created
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount, Currency
from payment_domain.payment import Payment, PaymentLine, create_payment
from payment_infrastructure.postgres.payment_repository import PostgresPaymentRepository
from payment_infrastructure.postgres.pool import create_pool
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fakes import FakePaymentRepository

NOW = datetime.now(UTC).replace(microsecond=0)
# Far above what the API tests' id counters reach in one session: the ids stay this module's own.
_ids = itertools.count(7 * 10**15 + uuid.uuid4().int % 10**12, 10)


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for the fake; the session database's URL (created only for the real adapter's cases) otherwise."""
    if request.param == "fake":
        return None
    database_url: str = request.getfixturevalue("database_url")
    return database_url


@pytest.fixture
async def payments(backend: str | None) -> AsyncIterator[PaymentRepository]:
    if backend is None:
        yield FakePaymentRepository()
        return
    pool = await create_pool(DatabaseSettings(url=backend, pool_size=2), application_name="contract-tests")
    repository = PostgresPaymentRepository(pool, acquire_timeout_seconds=2.0, writers=1, max_batch=8)
    try:
        yield repository
    finally:
        await repository.close()
        await pool.close()


def a_payment(order_id: str) -> Payment:
    payment_id = next(_ids)
    return create_payment(
        payment_id=PaymentId(payment_id),
        payment_order_ids=[PaymentOrderId(payment_id + 1), PaymentOrderId(payment_id + 2)],
        buyer_id="buyer-1",
        order_id=order_id,
        total=Amount(3000, Currency.EUR),
        lines=(
            PaymentLine("seller-a", Amount(1000, Currency.EUR)),
            PaymentLine("seller-b", Amount(2000, Currency.EUR)),
        ),
        now=NOW,
    )


def a_key(payment: Payment, key: str, *, client_id: str = "shop") -> IdempotencyRecord:
    return IdempotencyRecord(
        client_id=client_id,
        key=key,
        request_hash="hash-a",
        response_status=202,
        response_body=b"{}",
        payment_id=payment.payment_id.value,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=24),
    )


async def write(
    payments: PaymentRepository, payment: Payment, *, client_id: str = "shop", key: str | None = None
) -> IdempotencyRecord | None:
    events = [payment_order_created(o, trace_id="trace-1", now=NOW) for o in payment.payment_orders]
    idempotency = None if key is None else a_key(payment, key, client_id=client_id)
    return await payments.create(payment, events, client_id=client_id, trace_id="trace-1", idempotency=idempotency)


def an_order() -> str:
    return f"ORDER-{uuid.uuid4().hex[:12]}"


async def test_a_second_payment_for_an_order_is_refused_naming_the_first_and_not_stored(
    payments: PaymentRepository,
) -> None:
    order = an_order()
    first, second = a_payment(order), a_payment(order)
    assert await write(payments, first) is None

    with pytest.raises(OrderAlreadyHasPayment) as raised:
        await write(payments, second)

    assert (raised.value.order_id, raised.value.payment_id) == (order, first.payment_id)
    assert await payments.get(second.payment_id) is None
    assert await payments.get(first.payment_id) is not None


async def test_a_fresh_key_does_not_make_an_order_new_and_keeps_no_record(payments: PaymentRepository) -> None:
    order, key = an_order(), str(uuid.uuid4())
    first = a_payment(order)
    await write(payments, first, key=str(uuid.uuid4()))

    for _ in range(2):  # refused again, not replayed: the refusal left nothing under the key
        with pytest.raises(OrderAlreadyHasPayment) as raised:
            await write(payments, a_payment(order), key=key)
        assert raised.value.payment_id == first.payment_id


async def test_a_live_key_is_replayed_before_its_order_is_looked_at(payments: PaymentRepository) -> None:
    order, key = an_order(), str(uuid.uuid4())
    first = a_payment(order)
    await write(payments, first, key=key)

    replayed = await write(payments, a_payment(order), key=key)

    assert replayed is not None and replayed.payment_id == first.payment_id.value


async def test_an_order_id_belongs_to_its_client(payments: PaymentRepository) -> None:
    order = an_order()
    mine, theirs = a_payment(order), a_payment(order)

    assert await write(payments, mine, client_id="shop") is None
    assert await write(payments, theirs, client_id="other-shop") is None

    stored = await payments.get(theirs.payment_id)
    assert stored is not None and replace(stored, payment_orders=()) == replace(theirs, payment_orders=())
