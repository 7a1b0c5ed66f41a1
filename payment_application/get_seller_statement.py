"""Use case: one page of a seller's statement, newest first (GET /sellers/{sellerId}/entries).

The page is keyed by posting id (a cursor, stable while new postings arrive); `next_before` is the cursor of the
page after this one, None on the last page.
"""

from __future__ import annotations

from dataclasses import dataclass

from payment_application.ports.ledger import SellerLedger, StatementLine

MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class StatementPage:
    lines: tuple[StatementLine, ...]
    next_before: int | None


class GetSellerStatement:
    def __init__(self, *, ledger: SellerLedger) -> None:
        self._ledger = ledger

    async def __call__(self, seller_id: str, *, limit: int, before: int | None = None) -> StatementPage:
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1 to {MAX_PAGE}")
        # One more than asked tells whether another page follows without a second query.
        lines = tuple(await self._ledger.statement(seller_id, limit=limit + 1, before=before))
        if len(lines) > limit:
            return StatementPage(lines[:limit], lines[limit - 1].posting_id)
        return StatementPage(lines, None)
