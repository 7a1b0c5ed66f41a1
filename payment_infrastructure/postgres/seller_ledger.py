"""Reads of a seller's account: balances summed from postings, and the statement newest first by posting id
(index postings_account_idx: kind, owner, posting id)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.ledger import SellerBalance, StatementLine
from payment_domain.ledger import AccountKind, EntryKind, Side
from payment_domain.money import Currency
from payment_infrastructure.postgres.errors import translated_errors

_BALANCES = text(
    """
    SELECT currency,
           coalesce(sum(amount) FILTER (WHERE side = 'CREDIT'), 0) AS credited,
           coalesce(sum(amount) FILTER (WHERE side = 'DEBIT'), 0) AS debited,
           count(*) AS postings
      FROM postings
     WHERE account_kind = :kind AND account_owner = :seller
     GROUP BY currency ORDER BY currency
    """
)
_STATEMENT = text(
    """
    SELECT p.posting_id, p.entry_id, e.kind, e.payment_order_id, e.posted_at, p.currency, p.side, p.amount
      FROM postings p JOIN journal_entries e USING (entry_id)
     WHERE p.account_kind = :kind AND p.account_owner = :seller
       AND (CAST(:before AS bigint) IS NULL OR p.posting_id < CAST(:before AS bigint))
     ORDER BY p.posting_id DESC
     LIMIT :limit
    """
)


class PostgresSellerLedger:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def balances(self, seller_id: str) -> Sequence[SellerBalance]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (
                await conn.execute(_BALANCES, {"kind": AccountKind.SELLER_PAYABLE.value, "seller": seller_id})
            ).all()
        return [SellerBalance(Currency(r.currency), int(r.credited), int(r.debited), int(r.postings)) for r in rows]

    async def statement(self, seller_id: str, *, limit: int, before: int | None) -> Sequence[StatementLine]:
        params = {"kind": AccountKind.SELLER_PAYABLE.value, "seller": seller_id, "before": before, "limit": limit}
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(_STATEMENT, params)).all()
        return [
            StatementLine(
                posting_id=r.posting_id,
                entry_id=r.entry_id,
                kind=EntryKind(r.kind),
                payment_order_id=r.payment_order_id,
                posted_at=r.posted_at,
                currency=Currency(r.currency),
                side=Side(r.side),
                amount=r.amount,
            )
            for r in rows
        ]
