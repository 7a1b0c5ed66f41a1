"""Writing journal entries: every entry of a transaction, its postings and any new account, in one statement.

The accounts a posting names are created on first use (ON CONFLICT DO NOTHING, in account order, so two
transactions opening the same new accounts wait for each other in one order); the postings find their entry by
(kind, payment_order_id, refund_id). The database checks at commit that each entry balances (migration 0007).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from payment_application.errors import LedgerEntryExists
from payment_domain.ledger import JournalEntry, Posting

ONE_CHARGE_PER_ORDER = "journal_entries_one_charge_per_order"
ONE_ENTRY_PER_REFUND = "journal_entries_one_entry_per_refund"

_INSERT_ENTRIES = """
    WITH accounts AS (
        INSERT INTO ledger_accounts (kind, owner, currency)
        SELECT DISTINCT k, o, c FROM unnest($4::text[], $5::text[], $6::text[]) AS a(k, o, c) ORDER BY k, o, c
        ON CONFLICT DO NOTHING
    ), entries AS (
        INSERT INTO journal_entries (kind, payment_order_id, seller_id, posted_at, refund_id)
        SELECT k, o, s, $10::timestamptz, r FROM unnest($1::text[], $2::bigint[], $3::text[], $12::bigint[])
            AS e(k, o, s, r)
        RETURNING entry_id, kind, payment_order_id, refund_id
    )
    INSERT INTO postings (entry_id, account_kind, account_owner, currency, side, amount)
    SELECT e.entry_id, p.k, p.o, p.c, p.side, p.amount
      FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], $11::bigint[],
                  $13::bigint[])
           AS p(k, o, c, side, amount, entry_kind, order_id, refund_id)
      JOIN entries e ON e.kind = p.entry_kind AND e.payment_order_id = p.order_id
                    AND e.refund_id IS NOT DISTINCT FROM p.refund_id
"""


async def insert_entries(conn: asyncpg.Connection, entries: Sequence[JournalEntry], now: datetime) -> None:
    if not entries:
        return
    postings = [(entry, posting) for entry in entries for posting in entry.postings]
    try:
        await _insert(conn, entries, postings, now)
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name == ONE_ENTRY_PER_REFUND:
            refunds = sorted({entry.refund_id or 0 for entry in entries})
            raise LedgerEntryExists(f"a refund entry exists already for one of the refunds {refunds}") from error
        if error.constraint_name != ONE_CHARGE_PER_ORDER:
            raise
        orders = sorted({entry.payment_order_id for entry in entries})
        raise LedgerEntryExists(f"a charge entry exists already for one of the payment orders {orders}") from error


async def _insert(
    conn: asyncpg.Connection,
    entries: Sequence[JournalEntry],
    postings: Sequence[tuple[JournalEntry, Posting]],
    now: datetime,
) -> None:
    await conn.execute(
        _INSERT_ENTRIES,
        [entry.kind.value for entry in entries],
        [entry.payment_order_id for entry in entries],
        [entry.seller_id for entry in entries],
        [p.account.kind.value for _, p in postings],
        [p.account.owner for _, p in postings],
        [p.account.currency.value for _, p in postings],
        [p.side.value for _, p in postings],
        [p.amount for _, p in postings],
        [entry.kind.value for entry, _ in postings],
        now,
        [entry.payment_order_id for entry, _ in postings],
        [entry.refund_id for entry in entries],
        [entry.refund_id for entry, _ in postings],
    )


__all__ = ["insert_entries"]
