"""The get-payment use case against the fake repository: what was created comes back, nothing else does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from payment_application.create_payment import CreatePayment, PaymentCreated
from payment_application.get_payment import GetPayment
from payment_domain.ids import PaymentId
from tests.fakes import FakeClock, FakeIdGenerator, FakePaymentRepository, FakePresenter
from tests.unit.application.test_create_payment import FIRST_IDS, a_command


async def test_a_created_payment_is_read_back_with_its_orders() -> None:
    payments = FakePaymentRepository()
    create = CreatePayment(
        payments=payments,
        ids=FakeIdGenerator(start=FIRST_IDS),
        clock=FakeClock(datetime(2025, 3, 1, tzinfo=UTC)),
        presenter=FakePresenter(),
        idempotency_ttl=timedelta(hours=24),
    )
    created = await create(a_command())
    assert isinstance(created, PaymentCreated)

    found = await GetPayment(payments=payments)(created.payment.payment_id)

    assert found == created.payment
    assert len(found.payment_orders) == 3


async def test_an_unknown_payment_is_none() -> None:
    assert await GetPayment(payments=FakePaymentRepository())(PaymentId(404)) is None
