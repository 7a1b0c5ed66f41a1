"""The consumers' side of the database for the contract cases of PaymentOrderClaims, ResultStore,
StatusCheckQueue and ParkedOrders: the fakes over one ConsumerTables and FakeClock, or the Postgres adapters over
the session database.

Every payment a case adds has ids of its own (far from what other tests' counters reach), and the Postgres world
deletes what it wrote when the case ends (but its ledger entries: the ledger is append-only). The status-check
queue claims whatever is due in the whole table, so its cases open a world that has the table to itself. Time
moves through the world: the fake's clock, or Postgres `now()` polled until it has moved.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.parked_orders import ParkedOrders
from payment_application.ports.payment_orders import (
    PaymentOrderClaims,
    ReconciliationEntry,
    ResultStore,
    StatusCheckQueue,
)
from payment_domain.events import EventEnvelope
from payment_domain.ledger import Account, AccountKind, EntryKind, JournalEntry, Posting, Side
from payment_domain.money import Currency
from payment_domain.payment import PaymentOrder
from payment_domain.status import PaymentOrderStatus, PaymentStatus
from payment_infrastructure.postgres.parked_orders import PostgresParkedOrders
from payment_infrastructure.postgres.payment_order_store import (
    PostgresPaymentOrderClaims,
    PostgresResultStore,
    PostgresStatusCheckQueue,
)
from payment_infrastructure.postgres.rows import order_from_row
from payment_infrastructure.serialization import envelope_from_bytes, envelope_to_bytes
from tests.fakes import FakeClock
from tests.fakes_consumers import (
    ConsumerTables,
    FakeClaims,
    FakeParkedOrders,
    FakeResultStore,
    FakeStatusCheckQueue,
    an_order,
)
from tests.fixtures.ports import wait_until
from tests.integration.postgres.order_rows import StoredOrder, insert_orders

LEASE = 30.0
SHORT_LEASE = 0.3
"""Long enough for a claim's transaction to finish inside it, short enough to wait out."""

# A payment takes one id and its orders the next few.
_ids = itertools.count(8 * 10**15 + uuid.uuid4().int % 10**12 * 10, 10)
_CONSUMER_PREFIX = "payment-orders-contract-"


def a_consumer() -> str:
    """A consumer group of the case's own: its inbox starts empty."""
    return f"{_CONSUMER_PREFIX}{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the case needs it stored."""

    status: PaymentOrderStatus = PaymentOrderStatus.INITIATED_PENDING
    attempt: int = 0
    status_check_number: int = 0
    psp_calls: int = 0


@dataclass(frozen=True, slots=True)
class OutboxLine:
    status: str
    envelope: EventEnvelope  # as the dispatcher would publish it


def as_published(envelope: EventEnvelope) -> EventEnvelope:
    """The envelope as it reads back from the wire (instants there are whole milliseconds)."""
    return envelope_from_bytes(envelope_to_bytes(envelope))


@dataclass(frozen=True, slots=True)
class ScheduledCheck:
    attempt: int
    check_number: int
    due_at: datetime
    trace_id: str
    status: str


class OrdersWorld(Protocol):
    claims: PaymentOrderClaims
    results: ResultStore
    checks: StatusCheckQueue
    parked: ParkedOrders

    async def add_payment(self, *orders: Order) -> list[PaymentOrder]:
        """Commit one payment (status INITIATED) with these orders; the orders as stored, in the given order."""
        ...

    async def now(self) -> datetime:
        """The stores' clock."""
        ...

    async def let_pass(self, seconds: float) -> None:
        """Return once more than `seconds` have passed on the stores' clock."""
        ...

    async def outbox(self, aggregate_id: str) -> list[OutboxLine]:
        """The aggregate's outbox rows, in the order written."""
        ...

    async def scheduled_checks(self, payment_order_id: int) -> list[ScheduledCheck]:
        """The order's status checks, by attempt and check number."""
        ...

    async def payment_status(self, payment_id: int) -> PaymentStatus: ...

    async def audit(self, payment_order_id: int) -> list[ReconciliationEntry]:
        """The order's reconciliation audit, in the order written."""
        ...

    async def ledger(self, payment_order_id: int) -> list[tuple[JournalEntry, datetime]]:
        """The order's journal entries with their posting time, in the order posted."""
        ...


async def add_order(world: OrdersWorld, order: Order | None = None) -> PaymentOrder:
    """One order, alone in its payment."""
    [stored] = await world.add_payment(order or Order())
    return stored


class FakeWorld:
    def __init__(self) -> None:
        self.clock = FakeClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
        self.tables = ConsumerTables()
        self.claims: PaymentOrderClaims = FakeClaims(self.tables, self.clock)
        self.results: ResultStore = FakeResultStore(self.tables, self.clock)
        self.checks: StatusCheckQueue = FakeStatusCheckQueue(self.tables, self.clock)
        self.parked: ParkedOrders = FakeParkedOrders(self.tables, self.clock)

    async def add_payment(self, *orders: Order) -> list[PaymentOrder]:
        payment_id = next(_ids)
        return [
            self.tables.add_order(
                an_order(payment_id + i, status=o.status, attempt=o.attempt, payment_id=payment_id),
                status_check_number=o.status_check_number,
                psp_calls=o.psp_calls,
            )
            for i, o in enumerate(orders, start=1)
        ]

    async def now(self) -> datetime:
        return self.clock.now()

    async def let_pass(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds, microseconds=1))

    async def outbox(self, aggregate_id: str) -> list[OutboxLine]:
        return [OutboxLine("NEW", as_published(e)) for e in self.tables.outbox if e.aggregate_id == aggregate_id]

    async def scheduled_checks(self, payment_order_id: int) -> list[ScheduledCheck]:
        return sorted(
            (
                ScheduledCheck(c.attempt, c.check_number, c.due_at, c.trace_id, c.status)
                for c in self.tables.checks
                if c.payment_order_id == payment_order_id
            ),
            key=lambda c: (c.attempt, c.check_number),
        )

    async def payment_status(self, payment_id: int) -> PaymentStatus:
        return self.tables.payments[payment_id]

    async def audit(self, payment_order_id: int) -> list[ReconciliationEntry]:
        return [e for e in self.tables.reconciliations if e.payment_order_id == payment_order_id]

    async def ledger(self, payment_order_id: int) -> list[tuple[JournalEntry, datetime]]:
        return [(p.entry, p.posted_at) for p in self.tables.journal if p.entry.payment_order_id == payment_order_id]


_MINE = "SELECT payment_order_id FROM payment_orders WHERE payment_id = ANY(CAST(:payments AS bigint[]))"
_CLEAN_UP = [
    text(f"DELETE FROM payment_order_status_checks WHERE payment_order_id IN ({_MINE})"),
    text(f"DELETE FROM outbox_event WHERE aggregate_id IN (SELECT CAST(payment_order_id AS text) FROM ({_MINE}) o)"),
    text(f"DELETE FROM reconciliation_audit WHERE payment_order_id IN ({_MINE})"),
    text("DELETE FROM payment_orders WHERE payment_id = ANY(CAST(:payments AS bigint[]))"),
    text("DELETE FROM payments WHERE payment_id = ANY(CAST(:payments AS bigint[]))"),
    text(f"DELETE FROM processed_events WHERE consumer_group LIKE '{_CONSUMER_PREFIX}%'"),
]


class PostgresWorld:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.claims: PaymentOrderClaims = PostgresPaymentOrderClaims(
            engine, statement_timeout_ms=2_000, lock_timeout_ms=500
        )
        self.results: ResultStore = PostgresResultStore(engine, statement_timeout_ms=5_000, lock_timeout_ms=2_000)
        self.checks: StatusCheckQueue = PostgresStatusCheckQueue(engine)
        self.parked: ParkedOrders = PostgresParkedOrders(engine)
        self.payments: list[int] = []

    async def add_payment(self, *orders: Order) -> list[PaymentOrder]:
        payment_id = next(_ids)
        written = await self.now() - timedelta(minutes=1)
        self.payments.append(payment_id)
        await insert_orders(
            self.engine.url.render_as_string(hide_password=False),
            [
                StoredOrder(
                    payment_id + i,
                    written,
                    status=o.status.value,
                    retry_count=o.attempt,
                    status_check_number=o.status_check_number,
                    payment_id=payment_id,
                )
                for i, o in enumerate(orders, start=1)
            ],
        )
        async with self.engine.begin() as conn:
            for i, o in enumerate(orders, start=1):
                await conn.execute(
                    text("UPDATE payment_orders SET psp_call_count = :calls WHERE payment_order_id = :id"),
                    {"calls": o.psp_calls, "id": payment_id + i},
                )
            rows = (
                await conn.execute(
                    text("SELECT * FROM payment_orders WHERE payment_id = :p ORDER BY payment_order_id"),
                    {"p": payment_id},
                )
            ).all()
        return [order_from_row(row._mapping) for row in rows]

    async def now(self) -> datetime:
        async with self.engine.connect() as conn:
            moment: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
        return moment

    async def let_pass(self, seconds: float) -> None:
        target = await self.now() + timedelta(seconds=seconds)

        async def passed() -> bool:
            return await self.now() > target

        await wait_until(passed, timeout=10 + seconds, interval=0.01, what=f"Postgres now() to move {seconds} s")

    async def outbox(self, aggregate_id: str) -> list[OutboxLine]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT status, payload FROM outbox_event WHERE aggregate_id = :a ORDER BY id"),
                    {"a": aggregate_id},
                )
            ).all()
        return [OutboxLine(row.status, envelope_from_bytes(row.payload)) for row in rows]

    async def scheduled_checks(self, payment_order_id: int) -> list[ScheduledCheck]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT attempt, check_number, scheduled_at, trace_id, status "
                        "FROM payment_order_status_checks WHERE payment_order_id = :id ORDER BY attempt, check_number"
                    ),
                    {"id": payment_order_id},
                )
            ).all()
        return [ScheduledCheck(r.attempt, r.check_number, r.scheduled_at, r.trace_id, r.status) for r in rows]

    async def payment_status(self, payment_id: int) -> PaymentStatus:
        async with self.engine.connect() as conn:
            status = (
                await conn.execute(text("SELECT status FROM payments WHERE payment_id = :p"), {"p": payment_id})
            ).scalar_one()
        return PaymentStatus(status)

    async def audit(self, payment_order_id: int) -> list[ReconciliationEntry]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT * FROM reconciliation_audit WHERE payment_order_id = :id ORDER BY id"),
                    {"id": payment_order_id},
                )
            ).all()
        return [
            ReconciliationEntry(
                payment_order_id=r.payment_order_id,
                attempt=r.attempt,
                from_status=PaymentOrderStatus(r.from_status),
                to_status=PaymentOrderStatus(r.to_status),
                source=r.source,
                actor=r.actor,
                note=r.note,
                at=r.created_at,
            )
            for r in rows
        ]

    async def ledger(self, payment_order_id: int) -> list[tuple[JournalEntry, datetime]]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT e.entry_id, e.kind, e.seller_id, e.posted_at, p.account_kind, p.account_owner, "
                        "p.currency, p.side, p.amount FROM journal_entries e JOIN postings p USING (entry_id) "
                        "WHERE e.payment_order_id = :id ORDER BY e.entry_id, p.posting_id"
                    ),
                    {"id": payment_order_id},
                )
            ).all()
        by_entry: dict[int, list[Any]] = {}
        for row in rows:
            by_entry.setdefault(row.entry_id, []).append(row)
        return [
            (
                JournalEntry(
                    EntryKind(lines[0].kind),
                    payment_order_id,
                    lines[0].seller_id,
                    tuple(
                        Posting(
                            Account(AccountKind(r.account_kind), r.account_owner, Currency(r.currency)),
                            Side(r.side),
                            r.amount,
                        )
                        for r in lines
                    ),
                ),
                lines[0].posted_at,
            )
            for lines in by_entry.values()
        ]

    async def clean_up(self) -> None:
        async with self.engine.begin() as conn:
            for statement in _CLEAN_UP:
                await conn.execute(statement, {"payments": self.payments})


def backend_of(request: pytest.FixtureRequest) -> AsyncEngine | None:
    """None for the fake; the session's migrated database (created only for the real adapters' cases) otherwise."""
    if request.param == "fake":
        return None
    engine: AsyncEngine = request.getfixturevalue("engine")
    return engine


@asynccontextmanager
async def open_world(backend: AsyncEngine | None, *, checks_to_itself: bool = False) -> AsyncIterator[OrdersWorld]:
    """`checks_to_itself`: no status check but the case's own in the database (the queue claims from all)."""
    if backend is None:
        yield FakeWorld()
        return
    if checks_to_itself:
        async with backend.begin() as conn:
            await conn.execute(text("DELETE FROM payment_order_status_checks"))
    world = PostgresWorld(backend)
    try:
        yield world
    finally:
        await world.clean_up()
