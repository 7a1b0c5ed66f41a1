"""The ledger recomputed from its postings, for `payments ledger verify` (whole-table reads: an operator's tool)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payment_application.ports.ledger_audit import AccountTotals, OrderMismatch, RefundMismatch, UnbalancedEntry
from payment_domain.ledger import Account, AccountKind
from payment_domain.money import Currency
from payment_infrastructure.postgres.errors import translated_errors

_ACCOUNT_TOTALS = text(
    """
    SELECT a.kind, a.owner, a.currency,
           coalesce(sum(p.amount) FILTER (WHERE p.side = 'DEBIT'), 0) AS debits,
           coalesce(sum(p.amount) FILTER (WHERE p.side = 'CREDIT'), 0) AS credits
      FROM ledger_accounts a
      LEFT JOIN postings p ON (p.account_kind, p.account_owner, p.currency) = (a.kind, a.owner, a.currency)
     GROUP BY a.kind, a.owner, a.currency
     ORDER BY a.currency, a.kind, a.owner
    """
)
_CHARGED_BY_SELLER = text(
    """
    SELECT e.seller_id, p.currency, sum(p.amount) AS charged
      FROM journal_entries e JOIN postings p USING (entry_id)
     WHERE e.kind = 'CHARGE' AND p.account_kind = 'PSP_RECEIVABLE' AND p.side = 'DEBIT'
     GROUP BY e.seller_id, p.currency
    """
)
_REFUNDED_BY_SELLER = text(
    """
    SELECT e.seller_id, p.currency, sum(p.amount) AS refunded
      FROM journal_entries e JOIN postings p USING (entry_id)
     WHERE e.kind = 'REFUND' AND p.account_kind = 'PSP_RECEIVABLE' AND p.side = 'CREDIT'
     GROUP BY e.seller_id, p.currency
    """
)
_REFUND_MISMATCHES = text(
    """
    WITH entries AS (
        SELECT e.refund_id,
               coalesce(sum(p.amount) FILTER (WHERE p.account_kind = 'PSP_RECEIVABLE' AND p.side = 'CREDIT'), 0)
                   AS refunded
          FROM journal_entries e JOIN postings p USING (entry_id)
         WHERE e.kind = 'REFUND'
         GROUP BY e.refund_id
    )
    SELECT coalesce(r.refund_id, x.refund_id) AS refund_id, r.status, r.amount_value, x.refunded
      FROM refunds r
      FULL JOIN entries x ON x.refund_id = r.refund_id
     WHERE (r.status = 'SUCCEEDED' AND (x.refunded IS NULL OR x.refunded <> r.amount_value))
        OR (x.refund_id IS NOT NULL AND r.status IS DISTINCT FROM 'SUCCEEDED')
     ORDER BY 1 LIMIT :limit
    """
)
_UNBALANCED = text(
    """
    SELECT entry_id, currency, sum(CASE side WHEN 'DEBIT' THEN amount ELSE -amount END) AS net
      FROM postings GROUP BY entry_id, currency
    HAVING sum(CASE side WHEN 'DEBIT' THEN amount ELSE -amount END) <> 0
     ORDER BY entry_id LIMIT :limit
    """
)
_ORDER_MISMATCHES = text(
    """
    WITH charges AS (
        SELECT e.payment_order_id,
               coalesce(sum(p.amount) FILTER (WHERE p.account_kind = 'PSP_RECEIVABLE' AND p.side = 'DEBIT'), 0)
                   AS charged
          FROM journal_entries e JOIN postings p USING (entry_id)
         WHERE e.kind = 'CHARGE'
         GROUP BY e.payment_order_id
    )
    SELECT coalesce(o.payment_order_id, c.payment_order_id) AS payment_order_id, o.status, o.amount_value,
           c.charged
      FROM payment_orders o
      FULL JOIN charges c ON c.payment_order_id = o.payment_order_id
     WHERE (o.status = 'SUCCESSFUL_FINAL' AND (c.charged IS NULL OR c.charged <> o.amount_value))
        OR (c.payment_order_id IS NOT NULL AND o.status IS DISTINCT FROM 'SUCCESSFUL_FINAL')
     ORDER BY 1 LIMIT :limit
    """
)


class PostgresLedgerAudit:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def account_totals(self) -> Sequence[AccountTotals]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(_ACCOUNT_TOTALS)).all()
        return [
            AccountTotals(Account(AccountKind(r.kind), r.owner, Currency(r.currency)), int(r.debits), int(r.credits))
            for r in rows
        ]

    async def charged_by_seller(self) -> Mapping[tuple[str, str], int]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(_CHARGED_BY_SELLER)).all()
        return {(r.seller_id, r.currency): int(r.charged) for r in rows}

    async def refunded_by_seller(self) -> Mapping[tuple[str, str], int]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(_REFUNDED_BY_SELLER)).all()
        return {(r.seller_id, r.currency): int(r.refunded) for r in rows}

    async def refund_mismatches(self, *, limit: int) -> Sequence[RefundMismatch]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(_REFUND_MISMATCHES, {"limit": limit})).all()
        return [
            RefundMismatch(r.refund_id, r.status, r.amount_value, None if r.refunded is None else int(r.refunded))
            for r in rows
        ]

    async def unbalanced_entries(self, *, limit: int) -> Sequence[UnbalancedEntry]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(_UNBALANCED, {"limit": limit})).all()
        return [UnbalancedEntry(r.entry_id, r.currency, int(r.net)) for r in rows]

    async def order_mismatches(self, *, limit: int) -> Sequence[OrderMismatch]:
        async with translated_errors(), self._engine.connect() as conn:
            rows = (await conn.execute(_ORDER_MISMATCHES, {"limit": limit})).all()
        return [
            OrderMismatch(
                r.payment_order_id,
                r.status,
                r.amount_value,
                None if r.charged is None else int(r.charged),
            )
            for r in rows
        ]
