"""Creates in the simulation: the real CreatePayment use case over the contract-tested FakePaymentRepository and
FakeIdGenerator, and clients that retry until they know the outcome.

What the repository commits is handed to the consumers' tables in the same step (the real create writes the
payment, its orders and their outbox rows in one statement). A client whose request died with the API (a crash
at any await) sends it again: with its Idempotency-Key, or, keyless, the same orderId, which the one-payment-per-
order rule answers with the payment already made.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from payment_application.create_payment import CreatePayment, CreatePaymentCommand
from payment_application.errors import DependencyUnavailable, OrderAlreadyHasPayment
from payment_application.ports.ids import IdNamespace
from payment_application.ports.payments import IdempotencyRecord
from payment_domain.events import EventEnvelope
from payment_domain.ids import PaymentId
from payment_domain.money import Amount, Currency
from payment_domain.payment import Payment, PaymentLine
from tests.fakes import FakePaymentRepository
from tests.fakes_consumers import ConsumerTables
from tests.simulation.scheduler import checkpoint

CLIENT = "sim-client"


@dataclass
class Request:
    command: CreatePaymentCommand
    done: bool = False
    sent: int = 0


class CommittingRepository:
    """The repository port: FakePaymentRepository's rules, and what it commits lands in the consumers' tables."""

    def __init__(self, inner: FakePaymentRepository, tables: ConsumerTables, trace: Callable[[str], None]) -> None:
        self.inner = inner
        self.tables = tables
        self.trace = trace

    async def create(
        self,
        payment: Payment,
        outbox: Sequence[EventEnvelope],
        *,
        client_id: str,
        trace_id: str,
        idempotency: IdempotencyRecord | None,
    ) -> IdempotencyRecord | None:
        await checkpoint()
        existing = await self.inner.create(
            payment, outbox, client_id=client_id, trace_id=trace_id, idempotency=idempotency
        )
        if existing is None:
            for order in payment.payment_orders:
                self.tables.add_order(order)
                self.tables.unsent_outbox.add(order.payment_order_id.value)
            self.tables.outbox.extend(outbox)
            self.trace(f"API committed {payment.public_id} for {payment.order_id} ({len(outbox)} orders)")
        await checkpoint()  # the answer travels back: a crash here leaves the client not knowing
        return existing

    async def get(self, payment_id: PaymentId) -> Payment | None:
        return await self.inner.get(payment_id)


def requests(draw: Callable[[int, int], int]) -> list[Request]:
    """A few payments for one to three sellers each; some with an Idempotency-Key, some without."""
    made = []
    for n in range(draw(1, 4)):
        lines = tuple(PaymentLine(f"seller-{n}-{i}", Amount(draw(100, 9_999), Currency.EUR)) for i in range(draw(1, 3)))
        total = Amount(sum(line.amount.value for line in lines), Currency.EUR)
        key = f"key-{n}" if draw(0, 1) else None
        command = CreatePaymentCommand(
            client_id=CLIENT,
            buyer_id=f"buyer-{n}",
            order_id=f"order-{n}",
            total=total,
            lines=lines,
            trace_id=f"trace-{n}",
            idempotency_key=key,
            request_hash=f"hash-{n}",
        )
        made.append(Request(command))
    return made


def database_floor(repository: FakePaymentRepository) -> Callable[[IdNamespace], Awaitable[int]]:
    """What the database holds, per namespace: the highest stored id (the id generator re-syncs above it)."""

    async def floor(namespace: IdNamespace) -> int:
        if namespace is IdNamespace.PAYMENT:
            return max((p.value for p in repository.payments), default=0)
        orders = (o.payment_order_id.value for p in repository.payments.values() for o in p.payment_orders)
        return max(orders, default=0)

    return floor


async def send(create: CreatePayment, request: Request, trace: Callable[[str], None]) -> None:
    request.sent += 1
    try:
        outcome = await create(request.command)
    except DependencyUnavailable as unavailable:
        trace(f"client got 503 for {request.command.order_id}: {unavailable}; will retry")
        return
    except OrderAlreadyHasPayment as already:
        trace(f"client told {request.command.order_id} already has {already.payment_id.public}")
    else:
        trace(f"client got {outcome.status_code} for {request.command.order_id} (try {request.sent})")
    request.done = True


def one_payment_per_order(repository: FakePaymentRepository, made: list[Request]) -> list[str]:
    problems = []
    for request in made:
        order_id = request.command.order_id
        payments = [p for p in repository.payments.values() if p.order_id == order_id]
        if len(payments) != 1:
            problems.append(f"{order_id} has {len(payments)} payments")
    return problems
