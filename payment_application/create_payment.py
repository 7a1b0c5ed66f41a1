"""Use case: accept a multi-seller payment and record it, its orders and their outbox events atomically."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from payment_application.errors import DependencyUnavailable, IdCollision, IdempotencyKeyMismatch
from payment_application.ports.clock import Clock
from payment_application.ports.ids import IdGenerator, IdNamespace
from payment_application.ports.payments import IdempotencyRecord, PaymentPresenter, PaymentRepository
from payment_domain.events import EventEnvelope, PaymentOrderCreated, payment_order_created
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.money import Amount
from payment_domain.payment import Payment, PaymentLine, create_payment, validate_request

ACCEPTED = 202
# A create whose ids collide is tried again once with re-synced counters, then answered 503.
ID_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class CreatePaymentCommand:
    client_id: str
    buyer_id: str
    order_id: str
    total: Amount
    lines: tuple[PaymentLine, ...]
    trace_id: str
    idempotency_key: str | None = None
    request_hash: str = ""


@dataclass(frozen=True, slots=True)
class PaymentCreated:
    payment: Payment
    status_code: int
    body: bytes


@dataclass(frozen=True, slots=True)
class PaymentReplayed:
    """A retry of a completed request: the first response, byte for byte."""

    status_code: int
    body: bytes
    payment_id: int


class CreatePayment:
    def __init__(
        self,
        *,
        payments: PaymentRepository,
        ids: IdGenerator,
        clock: Clock,
        presenter: PaymentPresenter,
        idempotency_ttl: timedelta,
    ) -> None:
        self._payments = payments
        self._ids = ids
        self._clock = clock
        self._presenter = presenter
        self._ttl = idempotency_ttl

    async def __call__(self, cmd: CreatePaymentCommand) -> PaymentCreated | PaymentReplayed:
        # Validate before allocating ids: bad input costs nothing and writes nothing.
        validate_request(cmd.buyer_id, cmd.order_id, cmd.total, cmd.lines)
        attempts_left = ID_ATTEMPTS
        while True:
            payment, events, body, record = await self._prepare(cmd)
            try:
                existing = await self._payments.create(
                    payment, events, client_id=cmd.client_id, trace_id=cmd.trace_id, idempotency=record
                )
                break
            except IdCollision:
                # Nothing was written. The counters went backwards (Redis lost them): re-sync, allocate again.
                await self._ids.recover_from_collision()
                attempts_left -= 1
                if attempts_left == 0:
                    raise DependencyUnavailable("ids", "allocated ids are still taken after a re-sync") from None
        if existing is None:
            return PaymentCreated(payment=payment, status_code=ACCEPTED, body=body)
        if existing.request_hash != cmd.request_hash:
            raise IdempotencyKeyMismatch("this Idempotency-Key was already used with a different request body")
        return PaymentReplayed(
            status_code=existing.response_status, body=existing.response_body, payment_id=existing.payment_id
        )

    async def _prepare(
        self, cmd: CreatePaymentCommand
    ) -> tuple[Payment, list[EventEnvelope[PaymentOrderCreated]], bytes, IdempotencyRecord | None]:
        """The payment with fresh ids, its outbox events, the 202 body and (keyed requests) the key's record."""
        order_ids = await self._ids.next_ids(IdNamespace.PAYMENT_ORDER, len(cmd.lines))
        (payment_id,) = await self._ids.next_ids(IdNamespace.PAYMENT, 1)
        now = self._clock.now()
        payment = create_payment(
            payment_id=PaymentId(payment_id),
            payment_order_ids=[PaymentOrderId(i) for i in order_ids],
            buyer_id=cmd.buyer_id,
            order_id=cmd.order_id,
            total=cmd.total,
            lines=cmd.lines,
            now=now,
        )
        events = [payment_order_created(o, trace_id=cmd.trace_id, now=now) for o in payment.payment_orders]
        body = self._presenter.created(payment)
        record = None
        if cmd.idempotency_key is not None:
            record = IdempotencyRecord(
                client_id=cmd.client_id,
                key=cmd.idempotency_key,
                request_hash=cmd.request_hash,
                response_status=ACCEPTED,
                response_body=body,
                payment_id=payment_id,
                created_at=now,
                expires_at=now + self._ttl,
            )
        return payment, events, body, record
