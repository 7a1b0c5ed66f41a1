"""Use case: read one payment with its orders, as stored (GET /payments/{paymentId})."""

from __future__ import annotations

from payment_application.ports.payments import PaymentRepository
from payment_domain.ids import PaymentId
from payment_domain.payment import Payment


class GetPayment:
    def __init__(self, *, payments: PaymentRepository) -> None:
        self._payments = payments

    async def __call__(self, payment_id: PaymentId) -> Payment | None:
        """None when no such payment exists."""
        return await self._payments.get(payment_id)
