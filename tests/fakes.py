"""Hand-written fakes of the application ports: tiny working implementations, not mocks.

Each keeps its state in plain attributes so a test can arrange it and then assert on what the use case did.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from payment_application.errors import DependencyUnavailable, IdCollision, OrderAlreadyHasPayment
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
        self._start = start

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        """Seconds since the start: moves exactly as the test moves the clock."""
        return (self._now - self._start).total_seconds()

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("FakeClock needs timezone-aware moments")
        self._now = moment


class FakeIdGenerator:
    """Ids from one counter per namespace, by the Redis adapter's rules (tests/integration/contracts) without its
    blocks.

    Generators built on the same `counters` share them, as processes share Redis. A counter found below an id this
    generator handed out (Redis lost its counters) is re-synced before any id comes from it, so a generator never
    repeats itself. A re-sync, and `recover_from_collision`, moves every counter above what the database holds
    (`floor`; none if not given) and above this generator's own ids, plus `resync_jump` (the adapter's margin).
    `fail_with` makes every allocation raise instead.
    """

    def __init__(
        self,
        *,
        start: dict[IdNamespace, int] | None = None,
        counters: dict[IdNamespace, int] | None = None,
        floor: Callable[[IdNamespace], Awaitable[int]] | None = None,
        resync_jump: int = 1_000,
    ) -> None:
        self.counters = counters if counters is not None else {}  # namespace -> the last id handed out by anyone
        for namespace, first in (start or {}).items():
            self.counters[namespace] = first - 1
        self._floor = floor
        self.resync_jump = resync_jump
        self._highest: dict[IdNamespace, int] = {}
        self._synced: dict[IdNamespace, int] = {}
        self.fail_with: DependencyUnavailable | None = None
        self.issued: dict[IdNamespace, list[int]] = {ns: [] for ns in IdNamespace}
        self.recoveries = 0

    async def next_ids(self, namespace: IdNamespace, count: int) -> list[int]:
        if count < 1:
            raise ValueError("count must be >= 1")
        if self.fail_with is not None:
            raise self.fail_with
        if self.counters.get(namespace, 0) < max(self._highest.get(namespace, 0), self._synced.get(namespace, 0)):
            await self._resync(namespace)
        first = self.counters.get(namespace, 0) + 1
        self.counters[namespace] = first + count - 1
        ids = list(range(first, first + count))
        self._highest[namespace] = ids[-1]
        self.issued[namespace].extend(ids)
        return ids

    @property
    def issued_count(self) -> int:
        return sum(len(ids) for ids in self.issued.values())

    async def recover_from_collision(self) -> None:
        self.recoveries += 1
        for namespace in IdNamespace:
            await self._resync(namespace)

    async def _resync(self, namespace: IdNamespace) -> None:
        stored = await self._floor(namespace) if self._floor is not None else 0
        floor = max(stored, self._highest.get(namespace, 0))
        target = floor + self.resync_jump if floor else 0
        self.counters[namespace] = max(self.counters.get(namespace, 0), target)
        self._synced[namespace] = max(self._synced.get(namespace, 0), target)


class FakePaymentRepository:
    """In-memory payments, outbox and idempotency keys, honouring the repository's idempotency contract.

    A live key (expires_at after the new record's created_at) wins: nothing is written and the stored record
    comes back. An expired key is taken over, as the Postgres adapter does before the purge removes it. A client's
    second payment for an order is refused, naming the first, whatever its key (the adapter's unique index).
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
        for stored in self.payments.values():
            if self.client_ids[stored.payment_id] == client_id and stored.order_id == payment.order_id:
                raise OrderAlreadyHasPayment(payment.order_id, stored.payment_id)  # the key's claim goes with it
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
