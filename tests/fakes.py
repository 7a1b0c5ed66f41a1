"""Hand-written fakes of the application ports: tiny working implementations, not mocks.

Each keeps its state in plain attributes so a test can arrange it and then assert on what the use case did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from payment_application.errors import DependencyUnavailable, IdCollision
from payment_application.ports.ids import IdNamespace
from payment_application.ports.payments import IdempotencyRecord
from payment_domain.events import EventEnvelope
from payment_domain.ids import PaymentId
from payment_domain.payment import Payment


class FakeClock:
    """A clock that only moves when the test moves it."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("FakeClock needs timezone-aware moments")
        self._now = moment


class FakeIdGenerator:
    """One increasing counter per namespace; `fail_with` makes every allocation raise instead."""

    def __init__(self, *, start: dict[IdNamespace, int] | None = None) -> None:
        self._next: dict[IdNamespace, int] = dict.fromkeys(IdNamespace, 1)
        self._next.update(start or {})
        self.fail_with: DependencyUnavailable | None = None
        self.issued: dict[IdNamespace, list[int]] = {ns: [] for ns in IdNamespace}
        self.recoveries = 0
        self.resync_jump = 1_000

    async def next_ids(self, namespace: IdNamespace, count: int) -> list[int]:
        if count < 1:
            raise ValueError("count must be >= 1")
        if self.fail_with is not None:
            raise self.fail_with
        first = self._next[namespace]
        ids = list(range(first, first + count))
        self._next[namespace] = first + count
        self.issued[namespace].extend(ids)
        return ids

    @property
    def issued_count(self) -> int:
        return sum(len(ids) for ids in self.issued.values())

    async def recover_from_collision(self) -> None:
        """Like the Redis adapter's re-sync: every counter jumps past what the store may hold."""
        self.recoveries += 1
        for namespace in IdNamespace:
            self._next[namespace] += self.resync_jump


class FakePaymentRepository:
    """In-memory payments, outbox and idempotency keys, honouring the repository's idempotency contract.

    A live key (expires_at after the new record's created_at) wins: nothing is written and the stored record
    comes back. An expired key is taken over, as the Postgres adapter does before the purge removes it.
    """

    def __init__(self) -> None:
        self.payments: dict[PaymentId, Payment] = {}
        self.outbox: list[EventEnvelope] = []
        self.idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        self.trace_ids: dict[PaymentId, str] = {}
        self.client_ids: dict[PaymentId, str] = {}
        self.fail_with: Exception | None = None

    async def create(
        self,
        payment: Payment,
        outbox: Sequence[EventEnvelope],
        *,
        client_id: str,
        trace_id: str,
        idempotency: IdempotencyRecord | None,
    ) -> IdempotencyRecord | None:
        if self.fail_with is not None:
            raise self.fail_with
        if idempotency is not None:
            existing = self.idempotency.get((idempotency.client_id, idempotency.key))
            if existing is not None and existing.expires_at > idempotency.created_at:
                return existing
        stored_orders = {o.payment_order_id for p in self.payments.values() for o in p.payment_orders}
        if payment.payment_id in self.payments or stored_orders & {o.payment_order_id for o in payment.payment_orders}:
            raise IdCollision("an allocated id is already stored")  # the database refuses the whole statement
        if idempotency is not None:
            self.idempotency[(idempotency.client_id, idempotency.key)] = idempotency
        self.payments[payment.payment_id] = payment
        self.outbox.extend(outbox)
        self.trace_ids[payment.payment_id] = trace_id
        self.client_ids[payment.payment_id] = client_id
        return None

    async def get(self, payment_id: PaymentId) -> Payment | None:
        return self.payments.get(payment_id)


class FakePresenter:
    """A small deterministic JSON body naming the payment and its orders."""

    def __init__(self) -> None:
        self.rendered: list[Payment] = []

    def created(self, payment: Payment) -> bytes:
        self.rendered.append(payment)
        document = {
            "paymentId": payment.public_id,
            "paymentOrders": [order.public_id for order in payment.payment_orders],
        }
        return json.dumps(document, separators=(",", ":")).encode()
