"""Payment-order persistence for the consumers: the PSP-attempt claim and the result transaction."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from payment_domain.events import AnyEnvelope
from payment_domain.ledger import JournalEntry
from payment_domain.payment import PaymentOrder
from payment_domain.psp_result import OrderState
from payment_domain.status import PaymentOrderStatus, PaymentStatus


@dataclass(frozen=True, slots=True)
class LockedOrder:
    order: PaymentOrder
    status_check_number: int
    psp_calls: int  # charge calls claimed under the current attempt's key, all time (0: none on record)
    # Until when a call claimed under the attempt's key may still reach the PSP (the latest claim's lease end,
    # kept while the attempt waits for a status check); None: no call of the attempt can be on its way.
    calls_until: datetime | None = None

    @property
    def state(self) -> OrderState:
        return self.state_at(None)

    def state_at(self, now: datetime | None) -> OrderState:
        """The order's state for a decision taken at `now` (the database's clock)."""
        may_be_sent = now is not None and self.calls_until is not None and now < self.calls_until
        return OrderState(
            self.order.status, self.order.retry_count, self.status_check_number, self.psp_calls, may_be_sent
        )


@dataclass(frozen=True, slots=True)
class ReconciliationEntry:
    """Who settled a parked order, how, and on what evidence."""

    payment_order_id: int
    attempt: int
    from_status: PaymentOrderStatus
    to_status: PaymentOrderStatus
    source: str  # "psp_answer" (a late answer or the periodic re-query) or "operator"
    actor: str  # the consumer group, or the operator's name
    note: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ClaimedAttempt:
    order: PaymentOrder
    call_number: int  # 1 for the first claim under the attempt's key; more means an earlier call may have charged


class PaymentOrderClaims(Protocol):
    async def claim_attempt(
        self, payment_order_id: int, *, attempt: int, claim_token: str, lease_seconds: float
    ) -> ClaimedAttempt | None:
        """Claim attempt `attempt` for a PSP call; None when the order is not at that attempt in a chargeable
        state, or another delivery holds a live claim on it (a duplicate or stale request: do nothing).

        Every successful claim counts one more call under the attempt's key, in the same statement, so the result
        applier knows whether an answer came from the only call ever made under it."""
        ...


class ResultTransaction(Protocol):
    @property
    def now(self) -> datetime:
        """The database's clock at the start of the transaction: every time written in it (the order's
        `updated_at`, a status check's due time) is on the clock that later judges it (`now()` in SQL)."""
        ...

    async def first_time(self, consumer: str, event_id: str, now: datetime) -> bool:
        """Record the event in the inbox; False if this consumer already processed it."""
        ...

    async def first_times(self, consumer: str, event_ids: Sequence[str], now: datetime) -> set[str]:
        """Record many events in the inbox in one go; the ones this consumer sees for the first time."""
        ...

    async def lock(self, payment_order_id: int) -> LockedOrder | None:
        """Lock the order and its payment (so sibling orders roll up one at a time)."""
        ...

    async def lock_many(self, payment_order_ids: Sequence[int]) -> dict[int, LockedOrder]:
        """Lock the orders' payments, then the orders, each set in id order (so concurrent batches, and `lock`,
        which takes a payment before its order, cannot deadlock); the orders found, by id (unknown ones absent)."""
        ...

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
        """Write the order's new state and release its claim; `calls_until` is kept as the bound until which a call
        under the attempt's key may still reach the PSP (None: none can)."""
        ...

    async def add_events(self, envelopes: Sequence[AnyEnvelope]) -> None:
        """Into the outbox, published by the dispatcher after commit."""
        ...

    async def schedule_status_check(
        self, payment_order_id: int, *, attempt: int, check_number: int, due_at: datetime, trace_id: str, now: datetime
    ) -> None: ...

    async def roll_up(self, payment_id: int, now: datetime) -> PaymentStatus:
        """Derive and store the payment's status from its orders; return it."""
        ...

    async def record_reconciliation(self, entry: ReconciliationEntry) -> None:
        """One audit line for an order settled out of NEEDS_RECONCILIATION (kept with the settlement)."""
        ...

    async def post_entries(self, entries: Sequence[JournalEntry], now: datetime) -> None:
        """Into the ledger, with the state change that causes them (one write for all of them). A second entry of a
        kind for the same payment order is refused (the transaction fails), never stored twice."""
        ...


class ResultStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[ResultTransaction]:
        """One database transaction: commits when the block exits cleanly, rolls back otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class DueStatusCheck:
    check_id: int
    lease_token: str
    order: PaymentOrder
    attempt: int
    check_number: int
    trace_id: str


class StatusCheckQueue(Protocol):
    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[DueStatusCheck]:
        """Due checks (and ones whose lease ran out), claimed with SKIP LOCKED in a short transaction."""
        ...

    async def mark_published(self, checks: Sequence[DueStatusCheck]) -> int:
        """Only where our lease token still stands; returns how many were marked."""
        ...
