"""The refund store: refunds of payment orders, written in one transaction with the order's refunded total and
the refund's outbox row, and settled in one transaction with their ledger entry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from payment_domain.events import EventEnvelope, RefundRequested
from payment_domain.ids import PaymentId, PaymentOrderId, RefundId
from payment_domain.ledger import JournalEntry
from payment_domain.payment import PaymentOrder
from payment_domain.refund import Refund


@dataclass(frozen=True, slots=True)
class RefundableOrder:
    """A payment order as a refund sees it: `refunded` is the total of its refunds not failed (minor units)."""

    order: PaymentOrder
    refunded: int


@dataclass(frozen=True, slots=True)
class RefundKey:
    """The caller's idempotency key: one refund per (client, key), whose request body hashes to `request_hash`."""

    client_id: str
    key: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class KeyedRefund:
    refund: Refund
    request_hash: str


class RefundTransaction(Protocol):
    async def refund_of_key(self, client_id: str, key: str) -> KeyedRefund | None:
        """The refund recorded under the caller's key (committed, or written in this transaction)."""
        ...

    async def lock_order(self, payment_id: PaymentId, payment_order_id: PaymentOrderId) -> RefundableOrder | None:
        """The order of that payment, its row locked until the transaction ends; None if there is none."""
        ...

    async def next_refund_id(self) -> RefundId: ...

    async def add(self, refund: Refund, key: RefundKey, event: EventEnvelope[RefundRequested]) -> bool:
        """Write the refund, its outbox row and raise its order's refunded total by its amount; False (nothing
        written) when another transaction took the caller's key first."""
        ...

    async def lock_refund(self, refund_id: RefundId) -> Refund | None: ...

    async def confirmed_refunded(self, payment_order_id: PaymentOrderId) -> int:
        """The total of the order's SUCCEEDED refunds (minor units)."""
        ...

    async def charge_commission(self, payment_order_id: PaymentOrderId) -> int:
        """The commission the order's charge entry credited to the platform (0 if none)."""
        ...

    async def settle(self, refund: Refund, *, release: bool) -> None:
        """Store the refund's new status; `release` lowers its order's refunded total by its amount (it failed)."""
        ...

    async def post_entries(self, entries: Sequence[JournalEntry], now: datetime) -> None: ...


class RefundStore(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[RefundTransaction]:
        """One transaction: committed when the block ends normally, rolled back if it raises."""
        ...

    async def get(self, payment_order_id: PaymentOrderId, refund_id: RefundId) -> Refund | None: ...

    async def mark_sent(self, refund_id: RefundId) -> bool:
        """Stamp that a PSP call or status query of the refund is about to be made (a sign of progress for the
        sweeper); True when one had been stamped before, i.e. the refund may already have reached the PSP."""
        ...

    async def refunded_by_order(self, payment_id: PaymentId) -> Mapping[PaymentOrderId, int]:
        """Per order of the payment: the total of its refunds not failed (orders without refunds are left out)."""
        ...
