"""Use case: a seller's balance per currency, summed from the ledger's postings (GET /sellers/{sellerId}/balance)."""

from __future__ import annotations

from collections.abc import Sequence

from payment_application.ports.ledger import SellerBalance, SellerLedger


class GetSellerBalance:
    def __init__(self, *, ledger: SellerLedger) -> None:
        self._ledger = ledger

    async def __call__(self, seller_id: str) -> Sequence[SellerBalance]:
        return await self._ledger.balances(seller_id)
