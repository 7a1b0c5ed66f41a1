"""Reading the money book: a seller's balances and statement (the writes go with the result transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from payment_domain.ledger import EntryKind, Side
from payment_domain.money import Currency


@dataclass(frozen=True, slots=True)
class SellerBalance:
    """A seller's payable account in one currency, summed from its postings (minor units)."""

    currency: Currency
    credited: int
    debited: int
    postings: int

    @property
    def balance(self) -> int:
        """What the platform owes the seller; negative when the seller owes the platform."""
        return self.credited - self.debited


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One posting on a seller's account, with its entry."""

    posting_id: int
    entry_id: int
    kind: EntryKind
    payment_order_id: int
    posted_at: datetime
    currency: Currency
    side: Side
    amount: int


class SellerLedger(Protocol):
    async def balances(self, seller_id: str) -> Sequence[SellerBalance]:
        """One per currency the seller has an account in, by currency; none for a seller never credited."""
        ...

    async def statement(self, seller_id: str, *, limit: int, before: int | None) -> Sequence[StatementLine]:
        """The seller's postings, newest first, at most `limit`, only those older than posting `before` if given."""
        ...
