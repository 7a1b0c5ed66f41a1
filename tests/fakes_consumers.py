"""Hand-written fakes of the payment-consumers ports: tiny working implementations, not mocks.

They follow the rules of the real adapters (payment_infrastructure/postgres/payment_order_store.py; the cases in
tests/integration/contracts hold both to them) so a use-case test exercises the same guards: the attempt claim
(attempt matches, status chargeable, no live claim by another token), the inbox, the all-or-nothing result
transaction and the status-check lease. Orders, checks and payments live in one `ConsumerTables`, shared by the
fakes the way the real adapters share one database.
FakeStaleOrderClaims follows the sweeper's claim (payment_infrastructure/postgres/stale_orders.py). The retry
queue's fake is tests/fakes_retry.py's FakeRetryQueue.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from payment_application.errors import LedgerEntryExists
from payment_application.ports.parked_orders import ParkedOrder
from payment_application.ports.payment_orders import ClaimedAttempt, DueStatusCheck, LockedOrder, ReconciliationEntry
from payment_application.ports.psp import PspCallResult, PspChargeRequest, PspStatusResult
from payment_application.ports.stale_orders import StaleOrder
from payment_domain.events import EventEnvelope
from payment_domain.ids import PaymentId, PaymentOrderId
from payment_domain.ledger import CommissionSchedule, JournalEntry
from payment_domain.money import Amount, Currency
from payment_domain.payment import PaymentOrder
from payment_domain.psp_answer import AnswerKind, PspAnswer
from payment_domain.psp_answer import answer_for_psp_status as psp_said
from payment_domain.status import RETRYABLE, PaymentOrderStatus, PaymentStatus, is_terminal, roll_up
from tests.fakes import FakeClock

ORDERS_CREATED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COMMISSION = CommissionSchedule(default_bps=1_000)  # what the use-case tests charge: 10 %


def an_order(
    order_id: int = 7,
    *,
    status: PaymentOrderStatus = PaymentOrderStatus.INITIATED_PENDING,
    attempt: int = 0,
    payment_id: int = 3,
    updated_at: datetime = ORDERS_CREATED_AT,
) -> PaymentOrder:
    """A payment order of payment `payment_id`, created at ORDERS_CREATED_AT, its amount and seller from its id."""
    return PaymentOrder(
        payment_order_id=PaymentOrderId(order_id),
        payment_id=PaymentId(payment_id),
        seller_id=f"seller-{order_id}",
        amount=Amount(2_500 + order_id, Currency.EUR),
        status=status,
        created_at=ORDERS_CREATED_AT,
        updated_at=updated_at,
        retry_count=attempt,
    )


_T = TypeVar("_T")

CHARGEABLE = frozenset({PaymentOrderStatus.INITIATED_PENDING, *RETRYABLE})


# --- the shared "database" ------------------------------------------------------------------------------------


@dataclasses.dataclass
class OrderRow:
    order: PaymentOrder
    status_check_number: int = 0
    claim_token: str | None = None
    claim_expires_at: datetime | None = None
    swept_at: datetime | None = None
    psp_calls: int = 0  # claims under the current attempt's key


@dataclasses.dataclass
class CheckRow:
    id: int
    payment_order_id: int
    attempt: int
    check_number: int
    due_at: datetime
    trace_id: str
    status: str = "SCHEDULED"  # SCHEDULED | PUBLISHED
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    updated_at: datetime | None = dataclasses.field(default=None, compare=False)  # bookkeeping, for the sweeper


@dataclasses.dataclass(frozen=True)
class PostedEntry:
    entry: JournalEntry
    posted_at: datetime


@dataclasses.dataclass
class ConsumerTables:
    """payment_orders, payments, processed_events, outbox_event and payment_order_status_checks, in memory.

    `outbox` holds what the result transaction wrote; `unsent_outbox` the orders with a row not published yet.
    """

    orders: dict[int, OrderRow] = dataclasses.field(default_factory=dict)
    payments: dict[int, PaymentStatus] = dataclasses.field(default_factory=dict)
    inbox: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    outbox: list[EventEnvelope] = dataclasses.field(default_factory=list)
    unsent_outbox: set[int] = dataclasses.field(default_factory=set)
    checks: list[CheckRow] = dataclasses.field(default_factory=list)
    reconciliations: list[ReconciliationEntry] = dataclasses.field(default_factory=list)
    journal: list[PostedEntry] = dataclasses.field(default_factory=list)  # ledger entries, in posting order

    def entries_of(self, payment_order_id: int) -> list[JournalEntry]:
        return [posted.entry for posted in self.journal if posted.entry.payment_order_id == payment_order_id]

    def add_order(self, order: PaymentOrder, *, status_check_number: int = 0, psp_calls: int = 0) -> PaymentOrder:
        """`psp_calls`: charge calls already claimed under the order's attempt (1: as if it had been called once)."""
        self.orders[order.payment_order_id.value] = OrderRow(order, status_check_number, psp_calls=psp_calls)
        self.payments.setdefault(order.payment_id.value, PaymentStatus.INITIATED)
        return order

    def order(self, payment_order_id: int) -> PaymentOrder:
        return self.orders[payment_order_id].order

    def add_check(
        self,
        payment_order_id: int,
        *,
        attempt: int,
        check_number: int,
        due_at: datetime,
        trace_id: str = "trace",
        now: datetime | None = None,
    ) -> CheckRow:
        """`now` is when it was written (`updated_at`); by default its due time."""
        row = CheckRow(len(self.checks) + 1, payment_order_id, attempt, check_number, due_at, trace_id)
        row.updated_at = now or due_at
        self.checks.append(row)
        return row

    def snapshot(self) -> ConsumerTables:
        return copy.deepcopy(self)


# --- the attempt claim ----------------------------------------------------------------------------------------


class FakeClaims:
    """PaymentOrderClaims: the same guard as the Postgres UPDATE ... WHERE."""

    def __init__(self, tables: ConsumerTables, clock: FakeClock) -> None:
        self.tables = tables
        self.clock = clock
        self.calls: list[tuple[int, int, str]] = []

    async def claim_attempt(
        self, payment_order_id: int, *, attempt: int, claim_token: str, lease_seconds: float
    ) -> ClaimedAttempt | None:
        self.calls.append((payment_order_id, attempt, claim_token))
        row = self.tables.orders.get(payment_order_id)
        now = self.clock.now()
        if row is None or row.order.retry_count != attempt or row.order.status not in CHARGEABLE:
            return None
        live_elsewhere = (
            row.claim_token is not None
            and row.claim_token != claim_token
            and row.claim_expires_at is not None
            and row.claim_expires_at >= now
        )
        if live_elsewhere:
            return None
        row.claim_token = claim_token
        row.claim_expires_at = now + timedelta(seconds=lease_seconds)
        row.psp_calls += 1
        return ClaimedAttempt(order=row.order, call_number=row.psp_calls)

    async def claim_many(self, claims: Sequence[tuple[int, int, str, float]]) -> list[ClaimedAttempt | None]:
        """The coalesced statement: each (order, attempt, token, lease) judged by the single claim's rules, in
        order, all at once (nothing can come between them, as nothing comes between the rows of one UPDATE)."""
        return [
            await self.claim_attempt(order, attempt=attempt, claim_token=token, lease_seconds=lease)
            for order, attempt, token, lease in claims
        ]


# --- the result transaction -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Save:
    status: PaymentOrderStatus
    attempt: int
    reason: str | None
    error: str | None
    status_check_number: int
    now: datetime
    calls_until: datetime | None = None

    def apply(self, row: OrderRow) -> None:
        if row.order.retry_count != self.attempt:
            row.psp_calls = 0
        row.order = dataclasses.replace(
            row.order,
            status=self.status,
            retry_count=self.attempt,
            retry_reason=self.reason,
            last_error_message=self.error,
            updated_at=self.now,
        )
        row.status_check_number = self.status_check_number
        row.claim_token = None
        row.claim_expires_at = self.calls_until


def _locked(row: OrderRow) -> LockedOrder:
    return LockedOrder(row.order, row.status_check_number, row.psp_calls, row.claim_expires_at)


class FakeResultTransaction:
    """Reads the committed tables as they stand at each call (READ COMMITTED: a claim another delivery committed
    meanwhile is seen), with this transaction's own writes on top; its writes reach the tables only at `commit`.
    Others are not held back by its locks; `failures` makes a named method raise (to test the rollback). Texts are
    cut to what the Postgres columns hold."""

    def __init__(self, tables: ConsumerTables, failures: dict[str, Exception], now: datetime) -> None:
        self.tables = tables  # the committed tables
        self._failures = failures
        self.now = now  # the database's clock when the transaction began
        self._inbox: set[tuple[str, str]] = set()
        self._saves: dict[int, list[_Save]] = {}
        self._events: list[EventEnvelope] = []
        self._checks: list[CheckRow] = []
        self._payments: dict[int, PaymentStatus] = {}
        self._reconciliations: list[ReconciliationEntry] = []
        self._entries: list[PostedEntry] = []

    def _maybe_fail(self, method: str) -> None:
        if method in self._failures:
            raise self._failures[method]

    def _row(self, payment_order_id: int) -> OrderRow | None:
        """The order as this transaction sees it."""
        committed = self.tables.orders.get(payment_order_id)
        if committed is None:
            return None
        row = dataclasses.replace(committed)
        for save in self._saves.get(payment_order_id, []):
            save.apply(row)
        return row

    async def first_time(self, consumer: str, event_id: str, now: datetime) -> bool:
        self._maybe_fail("first_time")
        entry = (consumer, event_id)
        if entry in self.tables.inbox or entry in self._inbox:
            return False
        self._inbox.add(entry)
        return True

    async def first_times(self, consumer: str, event_ids: Sequence[str], now: datetime) -> set[str]:
        self._maybe_fail("first_times")
        first = {e for e in event_ids if (consumer, e) not in self.tables.inbox | self._inbox}
        self._inbox |= {(consumer, e) for e in first}
        return first

    async def lock(self, payment_order_id: int) -> LockedOrder | None:
        self._maybe_fail("lock")
        row = self._row(payment_order_id)
        return _locked(row) if row is not None else None

    async def lock_many(self, payment_order_ids: Sequence[int]) -> dict[int, LockedOrder]:
        self._maybe_fail("lock_many")
        rows = {i: self._row(i) for i in sorted(set(payment_order_ids))}
        return {i: _locked(r) for i, r in rows.items() if r is not None}

    async def save(
        self,
        payment_order_id: int,
        *,
        status: PaymentOrderStatus,
        attempt: int,
        reason: str | None,
        error: str | None,
        status_check_number: int,
        now: datetime,
        calls_until: datetime | None = None,
    ) -> None:
        self._maybe_fail("save")
        if payment_order_id not in self.tables.orders:
            raise KeyError(f"no payment order {payment_order_id} to save")
        save = _Save(status, attempt, reason, error[:2000] if error else None, status_check_number, now, calls_until)
        self._saves.setdefault(payment_order_id, []).append(save)

    async def add_events(self, envelopes: Sequence[EventEnvelope]) -> None:
        self._maybe_fail("add_events")
        self._events.extend(envelopes)

    async def schedule_status_check(
        self, payment_order_id: int, *, attempt: int, check_number: int, due_at: datetime, trace_id: str, now: datetime
    ) -> None:
        self._maybe_fail("schedule_status_check")
        slot = (payment_order_id, attempt, check_number)
        if any((c.payment_order_id, c.attempt, c.check_number) == slot for c in [*self.tables.checks, *self._checks]):
            return  # ON CONFLICT DO NOTHING
        check = CheckRow(0, payment_order_id, attempt, check_number, due_at, trace_id[:64])
        check.updated_at = now
        self._checks.append(check)

    async def roll_up(self, payment_id: int, now: datetime) -> PaymentStatus:
        self._maybe_fail("roll_up")
        siblings = [i for i, row in self.tables.orders.items() if row.order.payment_id.value == payment_id]
        status = roll_up(row.order.status for row in map(self._row, siblings) if row is not None)
        self._payments[payment_id] = status
        return status

    async def record_reconciliation(self, entry: ReconciliationEntry) -> None:
        self._maybe_fail("record_reconciliation")
        self._reconciliations.append(dataclasses.replace(entry, actor=entry.actor[:255]))

    async def post_entries(self, entries: Sequence[JournalEntry], now: datetime) -> None:
        """As the Postgres statement: all or none, one entry of a kind per order (else LedgerEntryExists)."""
        self._maybe_fail("post_entries")
        taken = {(p.entry.kind, p.entry.payment_order_id) for p in [*self.tables.journal, *self._entries]}
        keys = [(entry.kind, entry.payment_order_id) for entry in entries]
        if len(set(keys)) != len(keys) or taken & set(keys):
            orders = sorted({entry.payment_order_id for entry in entries})
            raise LedgerEntryExists(f"a charge entry exists already for one of the payment orders {orders}")
        self._entries.extend(PostedEntry(entry, now) for entry in entries)

    def commit(self) -> None:
        tables = self.tables
        tables.inbox |= self._inbox
        for order_id, saves in self._saves.items():
            for save in saves:
                save.apply(tables.orders[order_id])
        tables.outbox.extend(self._events)
        for check in self._checks:
            slot = (check.payment_order_id, check.attempt, check.check_number)
            if not any((c.payment_order_id, c.attempt, c.check_number) == slot for c in tables.checks):
                tables.add_check(
                    check.payment_order_id,
                    attempt=check.attempt,
                    check_number=check.check_number,
                    due_at=check.due_at,
                    trace_id=check.trace_id,
                    now=check.updated_at,
                )
        tables.payments.update(self._payments)
        tables.reconciliations.extend(self._reconciliations)
        tables.journal.extend(self._entries)


class FakeResultStore:
    """ResultStore: a transaction's writes reach the tables when its block exits cleanly, and none of them when it
    raises. `clock` is the database's."""

    def __init__(self, tables: ConsumerTables, clock: FakeClock) -> None:
        self.tables = tables
        self.clock = clock
        self.failures: dict[str, Exception] = {}
        self.commits = 0
        self.rollbacks = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeResultTransaction]:
        transaction = FakeResultTransaction(self.tables, self.failures, self.clock.now())
        try:
            yield transaction
        except BaseException:
            self.rollbacks += 1
            raise
        transaction.commit()
        self.commits += 1


# --- the status-check queue -----------------------------------------------------------------------------------


class FakeStatusCheckQueue:
    """StatusCheckQueue over the tables' checks: due SCHEDULED rows without a live lease, earliest first."""

    def __init__(self, tables: ConsumerTables, clock: FakeClock) -> None:
        self.tables = tables
        self.clock = clock
        self._tokens = itertools.count(1)

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[DueStatusCheck]:
        now = self.clock.now()
        token = f"lease-{next(self._tokens)}"
        due = sorted(
            (
                c
                for c in self.tables.checks
                if c.status == "SCHEDULED"
                and c.due_at <= now
                and (c.lease_expires_at is None or c.lease_expires_at < now)
            ),
            key=lambda c: (c.due_at, c.id),
        )[:limit]
        claimed = []
        for check in due:
            check.lease_token = token
            check.lease_expires_at = now + timedelta(seconds=lease_seconds)
            check.updated_at = now
            claimed.append(
                DueStatusCheck(
                    check_id=check.id,
                    lease_token=token,
                    order=self.tables.order(check.payment_order_id),
                    attempt=check.attempt,
                    check_number=check.check_number,
                    trace_id=check.trace_id,
                )
            )
        return claimed

    async def mark_published(self, checks: Sequence[DueStatusCheck]) -> int:
        marked = 0
        by_id = {c.id: c for c in self.tables.checks}
        for check in checks:
            row = by_id.get(check.check_id)
            if row is not None and row.lease_token == check.lease_token:
                row.status, row.lease_token, row.lease_expires_at = "PUBLISHED", None, None
                row.updated_at = self.clock.now()
                marked += 1
        return marked


# --- the sweeper's claim ----------------------------------------------------------------------------------------


class FakeStaleOrderClaims:
    """StaleOrderClaims: the same conditions as the Postgres claim, judged and stamped on `clock` (the database's);
    every order belongs to a payment traced `trace_id`. Claims run one at a time (as SKIP LOCKED keeps concurrent
    ones apart)."""

    def __init__(self, tables: ConsumerTables, clock: FakeClock, *, trace_id: str = "trace-of-the-payment") -> None:
        self.tables = tables
        self.clock = clock
        self.trace_id = trace_id

    async def claim_stale(self, *, stale_after: timedelta, limit: int) -> list[StaleOrder]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if stale_after <= timedelta(0):
            raise ValueError("stale_after must be positive")
        now = self.clock.now()
        stale_before = now - stale_after
        quiet = sorted(
            (row for row in self.tables.orders.values() if self._quiet_since(row, stale_before)),
            key=lambda row: row.order.updated_at,
        )[:limit]
        for row in quiet:
            row.swept_at = now
        return [StaleOrder(row.order, row.status_check_number, self.trace_id) for row in quiet]

    def _quiet_since(self, row: OrderRow, stale_before: datetime) -> bool:
        order = row.order
        if is_terminal(order.status) or order.status is PaymentOrderStatus.NEEDS_RECONCILIATION:
            return False
        signs_of_life = (order.updated_at, row.swept_at, row.claim_expires_at)
        if any(moment is not None and moment >= stale_before for moment in signs_of_life):
            return False
        if order.payment_order_id.value in self.tables.unsent_outbox:
            return False
        return not any(
            (c.payment_order_id, c.attempt, c.check_number)
            == (order.payment_order_id.value, order.retry_count, row.status_check_number)
            and (c.status == "SCHEDULED" or (c.updated_at is not None and c.updated_at >= stale_before))
            for c in self.tables.checks
        )


# --- the broker -----------------------------------------------------------------------------------------------


class FakeEventSink:
    """EventSink: records what the broker acknowledged; `fail_with` fails every emit, `failing_aggregates` only
    the events of those payment orders (the failed ones are not recorded)."""

    def __init__(self) -> None:
        self.emitted: list[EventEnvelope] = []
        self.attempts: list[EventEnvelope] = []
        self.fail_with: Exception | None = None
        self.failing_aggregates: set[str] = set()

    async def emit(self, envelope: EventEnvelope) -> None:
        self.attempts.append(envelope)
        if self.fail_with is not None:
            raise self.fail_with
        if envelope.aggregate_id in self.failing_aggregates:
            raise ConnectionError(f"broker did not acknowledge the event of order {envelope.aggregate_id}")
        self.emitted.append(envelope)

    async def emit_batch(self, envelopes: Sequence[EventEnvelope]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        for envelope in envelopes:
            try:
                await self.emit(envelope)
            except Exception as error:
                outcomes.append(error)
            else:
                outcomes.append(None)
        return outcomes


# --- the PSP --------------------------------------------------------------------------------------------------


class FakePsp:
    """PspGateway scripted per idempotency key: each call takes the next scripted answer, the last one repeats
    (like a PSP replaying a key). Unscripted keys get `default_charge` / `default_status`. Every call is recorded."""

    def __init__(self) -> None:
        self.charge_script: dict[str, list[PspCallResult]] = {}
        self.status_script: dict[str, list[PspStatusResult]] = {}
        self.default_charge = PspCallResult(psp_said(PaymentOrderStatus.SUCCESSFUL_FINAL), latency_ms=5)
        self.default_status = PspStatusResult(PspAnswer(AnswerKind.NOT_CHARGED), latency_ms=5)
        self.charges: list[PspChargeRequest] = []
        self.status_queries: list[str] = []

    def script_charge(self, key: str, *answers: PspCallResult) -> None:
        self.charge_script[key] = list(answers)

    def script_status(self, key: str, *answers: PspStatusResult) -> None:
        self.status_script[key] = list(answers)

    async def charge(self, request: PspChargeRequest) -> PspCallResult:
        self.charges.append(request)
        return _next(self.charge_script.get(request.idempotency_key), self.default_charge)

    async def charge_status(self, idempotency_key: str) -> PspStatusResult:
        self.status_queries.append(idempotency_key)
        return _next(self.status_script.get(idempotency_key), self.default_status)

    def charged_keys(self) -> list[str]:
        return [request.idempotency_key for request in self.charges]


def _next(script: list[_T] | None, default: _T) -> _T:
    if not script:
        return default
    return script.pop(0) if len(script) > 1 else script[0]


# --- parked orders (NEEDS_RECONCILIATION) -----------------------------------------------------------------------


class FakeParkedOrders:
    """ParkedOrders: the Postgres claim's rules on the tables; `clock` is the database's; every order belongs to
    a payment traced `trace_id`."""

    def __init__(self, tables: ConsumerTables, clock: FakeClock, *, trace_id: str = "trace-of-the-payment") -> None:
        self.tables = tables
        self.clock = clock
        self.trace_id = trace_id
        self.queried_at: dict[int, datetime] = {}

    def _parked(self, row: OrderRow) -> ParkedOrder:
        order = row.order
        return ParkedOrder(order, row.status_check_number, self.trace_id, order.updated_at, order.retry_reason)

    def _rows(self) -> list[OrderRow]:
        parked = PaymentOrderStatus.NEEDS_RECONCILIATION
        return [row for row in self.tables.orders.values() if row.order.status is parked]

    async def claim_due(self, *, every: timedelta, limit: int) -> list[ParkedOrder]:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        now = self.clock.now()
        due = sorted(
            (
                row
                for row in self._rows()
                if (at := self.queried_at.get(row.order.payment_order_id.value)) is None or at < now - every
            ),
            key=lambda row: row.order.payment_order_id.value,
        )[:limit]
        for row in due:
            self.queried_at[row.order.payment_order_id.value] = now
            row.status_check_number += 1
        return [self._parked(row) for row in due]

    async def list_parked(self, *, limit: int) -> list[ParkedOrder]:
        return [self._parked(row) for row in sorted(self._rows(), key=lambda r: r.order.updated_at)[:limit]]

    async def count(self) -> int:
        return len(self._rows())

    async def get(self, payment_order_id: int) -> ParkedOrder | None:
        row = self.tables.orders.get(payment_order_id)
        if row is None or row.order.status is not PaymentOrderStatus.NEEDS_RECONCILIATION:
            return None
        return self._parked(row)
