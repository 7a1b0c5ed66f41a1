"""Hand-written fakes of the refund ports, over the consumers' tables (tests/fakes_consumers.py): FakeRefundStore
follows payment_infrastructure/postgres/refund_store.py, FakeRefundRedriveClaims follows
payment_infrastructure/postgres/refund_redrives.py. A refund shares the orders, the outbox and the journal with the
charges, as the real tables share one database.

As the Postgres ones: a transaction's writes reach the tables only when its block ends normally; the caller's key
takes one refund; an order's refunded total above its amount is refused (the CHECK of migration 0008); one refund
entry per refund; every time judged or stamped is `clock`'s (the database's).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from payment_application.errors import LedgerEntryExists
from payment_application.ports.refund_redrives import UnsettledRefund
from payment_application.ports.refunds import KeyedRefund, RefundableOrder, RefundKey
from payment_domain.events import EventEnvelope, RefundRequested
from payment_domain.ids import PaymentId, PaymentOrderId, RefundId
from payment_domain.ledger import AccountKind, EntryKind, JournalEntry, Side
from payment_domain.refund import Refund, RefundStatus
from tests.fakes import FakeClock
from tests.fakes_consumers import ConsumerTables, PostedEntry


class RefundLimitViolated(Exception):
    """The database's CHECK: an order's refunded total may never exceed the amount charged."""


@dataclasses.dataclass
class RefundRow:
    refund: Refund
    key: RefundKey
    trace_id: str
    psp_sent_at: datetime | None = None
    redriven_at: datetime | None = None


@dataclasses.dataclass
class RefundTables:
    """refunds and payment_orders.refunded_value, beside the consumers' tables; `unsent` holds the refunds whose
    request is still unsent in the outbox."""

    consumer: ConsumerTables
    refunds: dict[int, RefundRow] = dataclasses.field(default_factory=dict)
    refunded: dict[int, int] = dataclasses.field(default_factory=dict)
    unsent: set[int] = dataclasses.field(default_factory=set)
    ids: itertools.count[int] = dataclasses.field(default_factory=lambda: itertools.count(1))

    def of_key(self, client_id: str, key: str) -> RefundRow | None:
        return next((r for r in self.refunds.values() if (r.key.client_id, r.key.key) == (client_id, key)), None)


class FakeRefundTransaction:
    """Reads the committed tables with this transaction's own writes on top; writes them at `commit`."""

    def __init__(self, tables: RefundTables) -> None:
        self.tables = tables
        self._rows: dict[int, RefundRow] = {}  # added or settled here
        self._refunded: dict[int, int] = {}  # per order: the change to its refunded total
        self._events: list[EventEnvelope[RefundRequested]] = []
        self._entries: list[PostedEntry] = []

    def _row(self, refund_id: int) -> RefundRow | None:
        row = self._rows.get(refund_id)
        return row if row is not None else self.tables.refunds.get(refund_id)

    def _refunds(self) -> list[RefundRow]:
        return [*{**self.tables.refunds, **self._rows}.values()]

    async def refund_of_key(self, client_id: str, key: str) -> KeyedRefund | None:
        row = next((r for r in self._refunds() if (r.key.client_id, r.key.key) == (client_id, key)), None)
        return None if row is None else KeyedRefund(row.refund, row.key.request_hash)

    async def lock_order(self, payment_id: PaymentId, payment_order_id: PaymentOrderId) -> RefundableOrder | None:
        row = self.tables.consumer.orders.get(payment_order_id.value)
        if row is None or row.order.payment_id != payment_id:
            return None
        return RefundableOrder(row.order, self._refunded_of(payment_order_id.value))

    def _refunded_of(self, order_id: int) -> int:
        return self.tables.refunded.get(order_id, 0) + self._refunded.get(order_id, 0)

    async def next_refund_id(self) -> RefundId:
        return RefundId(next(self.tables.ids))  # a sequence: not given back by a rollback

    async def add(self, refund: Refund, key: RefundKey, event: EventEnvelope[RefundRequested]) -> bool:
        if await self.refund_of_key(key.client_id, key.key) is not None:
            return False  # ON CONFLICT ON CONSTRAINT refunds_one_per_key DO NOTHING
        self._raise_refunded(refund.payment_order_id.value, refund.amount.value)
        self._rows[refund.refund_id.value] = RefundRow(refund, key, event.trace_id)
        self._events.append(event)
        return True

    def _raise_refunded(self, order_id: int, by: int) -> None:
        total = self._refunded_of(order_id) + by
        if total > self.tables.consumer.orders[order_id].order.amount.value:
            raise RefundLimitViolated(f"order {order_id} would have {total} refunded")
        self._refunded[order_id] = self._refunded.get(order_id, 0) + by

    async def lock_refund(self, refund_id: RefundId) -> Refund | None:
        row = self._row(refund_id.value)
        return None if row is None else row.refund

    async def confirmed_refunded(self, payment_order_id: PaymentOrderId) -> int:
        return sum(
            r.refund.amount.value
            for r in self._refunds()
            if r.refund.payment_order_id == payment_order_id and r.refund.status is RefundStatus.SUCCEEDED
        )

    async def charge_commission(self, payment_order_id: PaymentOrderId) -> int:
        return sum(
            p.amount
            for e in self.tables.consumer.entries_of(payment_order_id.value)
            if e.kind is EntryKind.CHARGE
            for p in e.postings
            if p.account.kind is AccountKind.COMMISSION_REVENUE and p.side is Side.CREDIT
        )

    async def settle(self, refund: Refund, *, release: bool) -> None:
        row = self._row(refund.refund_id.value)
        if row is None:
            raise KeyError(f"no refund {refund.refund_id.value} to settle")
        self._rows[refund.refund_id.value] = dataclasses.replace(row, refund=refund)
        if release:
            self._raise_refunded(refund.payment_order_id.value, -refund.amount.value)

    async def post_entries(self, entries: Sequence[JournalEntry], now: datetime) -> None:
        """All or none; one refund entry per refund (else LedgerEntryExists)."""
        posted = [*self.tables.consumer.journal, *self._entries]
        taken = {(p.entry.kind, p.entry.payment_order_id, p.entry.refund_id) for p in posted}
        names = [(e.kind, e.payment_order_id, e.refund_id) for e in entries]
        if len(set(names)) != len(names) or taken & set(names):
            raise LedgerEntryExists(f"an entry exists already for one of {names}")
        self._entries.extend(PostedEntry(entry, now) for entry in entries)

    def commit(self) -> None:
        tables = self.tables
        for refund_id, row in self._rows.items():
            if refund_id not in tables.refunds:
                tables.unsent.add(refund_id)
            tables.refunds[refund_id] = row
        for order_id, change in self._refunded.items():
            tables.refunded[order_id] = tables.refunded.get(order_id, 0) + change
        tables.consumer.outbox.extend(self._events)
        tables.consumer.journal.extend(self._entries)


class FakeRefundStore:
    """RefundStore: a transaction's writes reach the tables when its block exits cleanly, none when it raises."""

    def __init__(self, tables: RefundTables, clock: FakeClock) -> None:
        self.tables = tables
        self.clock = clock

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeRefundTransaction]:
        transaction = FakeRefundTransaction(self.tables)
        yield transaction
        transaction.commit()

    async def get(self, payment_order_id: PaymentOrderId, refund_id: RefundId) -> Refund | None:
        row = self.tables.refunds.get(refund_id.value)
        return None if row is None or row.refund.payment_order_id != payment_order_id else row.refund

    async def mark_sent(self, refund_id: RefundId) -> bool:
        row = self.tables.refunds[refund_id.value]
        before, row.psp_sent_at = row.psp_sent_at, self.clock.now()
        return before is not None

    async def refunded_by_order(self, payment_id: PaymentId) -> Mapping[PaymentOrderId, int]:
        orders = self.tables.consumer.orders
        return {
            PaymentOrderId(order_id): value
            for order_id, value in self.tables.refunded.items()
            if value > 0 and orders[order_id].order.payment_id == payment_id
        }


class FakeRefundRedriveClaims:
    """RefundRedriveClaims: the Postgres claims' conditions, judged and stamped on `clock`; one claim at a time (as
    SKIP LOCKED keeps concurrent ones apart)."""

    def __init__(self, tables: RefundTables, clock: FakeClock) -> None:
        self.tables = tables
        self.clock = clock

    def _untouched(self, row: RefundRow, status: RefundStatus, age: timedelta) -> bool:
        before = self.clock.now() - age
        return (
            row.refund.status is status
            and row.refund.updated_at < before
            and (row.psp_sent_at is None or row.psp_sent_at < before)
        )

    def _in_outbox(self, row: RefundRow) -> bool:
        """A request of the refund's order still unsent (the outbox dispatcher owns it)."""
        order = row.refund.payment_order_id
        return any(self.tables.refunds[r].refund.payment_order_id == order for r in self.tables.unsent)

    def _unsettled(self, row: RefundRow) -> UnsettledRefund:
        return UnsettledRefund(row.refund, self.tables.consumer.order(row.refund.payment_order_id.value), row.trace_id)

    def _claim(self, status: RefundStatus, age: timedelta, limit: int) -> list[UnsettledRefund]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if age <= timedelta(0):
            raise ValueError("the age must be positive")
        now = self.clock.now()
        due = sorted(
            (
                row
                for row in self.tables.refunds.values()
                if self._untouched(row, status, age)
                and (row.redriven_at is None or row.redriven_at < now - age)
                and (status is not RefundStatus.REQUESTED or not self._in_outbox(row))
            ),
            key=lambda row: row.refund.updated_at,
        )[:limit]
        for row in due:
            row.redriven_at = now
        return [self._unsettled(row) for row in due]

    async def claim_stale(self, *, stale_after: timedelta, limit: int) -> list[UnsettledRefund]:
        return self._claim(RefundStatus.REQUESTED, stale_after, limit)

    async def claim_parked(self, *, every: timedelta, limit: int) -> list[UnsettledRefund]:
        return self._claim(RefundStatus.NEEDS_RECONCILIATION, every, limit)

    def _parked(self) -> list[RefundRow]:
        parked = (r for r in self.tables.refunds.values() if r.refund.status is RefundStatus.NEEDS_RECONCILIATION)
        return sorted(parked, key=lambda row: row.refund.updated_at)

    async def list_parked(self, *, limit: int) -> list[UnsettledRefund]:
        return [self._unsettled(row) for row in self._parked()[:limit]]

    async def get_parked(self, refund_id: RefundId) -> UnsettledRefund | None:
        row = next((r for r in self._parked() if r.refund.refund_id == refund_id), None)
        return None if row is None else self._unsettled(row)

    async def count_stale(self, *, stale_after: timedelta) -> int:
        return sum(self._untouched(row, RefundStatus.REQUESTED, stale_after) for row in self.tables.refunds.values())


__all__ = ["FakeRefundRedriveClaims", "FakeRefundStore", "RefundLimitViolated", "RefundRow", "RefundTables"]
