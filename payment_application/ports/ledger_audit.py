"""What `payments ledger verify` reads: the book recomputed from its postings, and the PSP's own record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from payment_domain.ledger import Account, Side


@dataclass(frozen=True, slots=True)
class AccountTotals:
    account: Account
    debits: int
    credits: int

    @property
    def balance(self) -> int:
        """On the account's normal side (positive: what it holds as its kind says)."""
        net = self.debits - self.credits
        return net if self.account.normal_side is Side.DEBIT else -net


@dataclass(frozen=True, slots=True)
class UnbalancedEntry:
    entry_id: int
    currency: str
    net: int  # debits minus credits


@dataclass(frozen=True, slots=True)
class OrderMismatch:
    """An order whose final state and charge entry disagree (a charge entry names the order's id)."""

    payment_order_id: int
    status: str | None  # None: no such order
    amount: int | None  # the order's amount; None: no such order
    charged: int | None  # PSP receivable debited by its charge entry; None: no charge entry


@dataclass(frozen=True, slots=True)
class RefundMismatch:
    """A refund whose state and refund entry disagree (SUCCEEDED without its entry of its amount, or an entry for a
    refund in any other state)."""

    refund_id: int
    status: str | None  # None: no such refund
    amount: int | None
    refunded: int | None  # PSP receivable credited by its refund entry; None: no refund entry


@dataclass(frozen=True, slots=True)
class PspCharged:
    by_currency: Mapping[str, int]
    by_seller: Mapping[tuple[str, str], int]  # (seller, currency) -> minor units
    refunded_by_currency: Mapping[str, int] = field(default_factory=dict)  # paid back to buyers
    refunded_by_seller: Mapping[tuple[str, str], int] = field(default_factory=dict)


class LedgerAudit(Protocol):
    async def account_totals(self) -> Sequence[AccountTotals]:
        """Every account of the chart, debits and credits summed from its postings."""
        ...

    async def charged_by_seller(self) -> Mapping[tuple[str, str], int]:
        """PSP receivable debited by charge entries, per (seller, currency)."""
        ...

    async def refunded_by_seller(self) -> Mapping[tuple[str, str], int]:
        """PSP receivable credited by refund entries, per (seller, currency)."""
        ...

    async def refund_mismatches(self, *, limit: int) -> Sequence[RefundMismatch]: ...

    async def unbalanced_entries(self, *, limit: int) -> Sequence[UnbalancedEntry]: ...

    async def order_mismatches(self, *, limit: int) -> Sequence[OrderMismatch]:
        """SUCCESSFUL_FINAL orders without a charge entry of their amount, and charge entries of any other."""
        ...


class PspRecord(Protocol):
    async def charged(self) -> PspCharged:
        """What the PSP says it charged, per currency and per seller."""
        ...
