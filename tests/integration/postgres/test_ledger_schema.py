"""The ledger tables hold their own rules, whoever writes to them: an entry balances per currency when its
transaction commits (a deferred constraint trigger), has postings, is posted at most once per order as a charge,
and nothing in the ledger is ever updated, deleted or truncated."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.integration.api.helpers import dsn

_orders = itertools.count(9 * 10**15 + uuid.uuid4().int % 10**12 * 10)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn(database_url))
    await connection.execute(
        "INSERT INTO ledger_accounts (kind, owner, currency) VALUES "
        "('PSP_RECEIVABLE', 'platform', 'EUR'), ('PSP_RECEIVABLE', 'platform', 'USD'), "
        "('SELLER_PAYABLE', 'schema-seller', 'EUR'), ('SELLER_PAYABLE', 'schema-seller', 'USD') ON CONFLICT DO NOTHING"
    )
    yield connection
    await connection.close()


async def new_entry(conn: asyncpg.Connection, kind: str = "CHARGE", order_id: int | None = None) -> int:
    entry_id: int = await conn.fetchval(
        "INSERT INTO journal_entries (kind, payment_order_id, seller_id, posted_at) "
        "VALUES ($1, $2, 'schema-seller', now()) RETURNING entry_id",
        kind,
        next(_orders) if order_id is None else order_id,
    )
    return entry_id


async def post(
    conn: asyncpg.Connection, entry_id: int, kind: str, owner: str, currency: str, side: str, amount: int
) -> None:
    await conn.execute(
        "INSERT INTO postings (entry_id, account_kind, account_owner, currency, side, amount) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        entry_id,
        kind,
        owner,
        currency,
        side,
        amount,
    )


async def balanced_entry(conn: asyncpg.Connection, amount: int = 1_000) -> int:
    async with conn.transaction():
        entry_id = await new_entry(conn)
        await post(conn, entry_id, "PSP_RECEIVABLE", "platform", "EUR", "DEBIT", amount)
        await post(conn, entry_id, "SELLER_PAYABLE", "schema-seller", "EUR", "CREDIT", amount)
    return entry_id


async def test_postings_may_balance_only_by_the_end_of_the_transaction(conn: asyncpg.Connection) -> None:
    entry_id = await balanced_entry(conn)  # debit, then credit, in two statements
    assert await conn.fetchval("SELECT count(*) FROM postings WHERE entry_id = $1", entry_id) == 2


async def test_a_transaction_leaving_an_entry_unbalanced_is_refused_at_commit(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="does not balance in EUR: debits minus credits = 1"):
        async with conn.transaction():
            entry_id = await new_entry(conn)
            await post(conn, entry_id, "PSP_RECEIVABLE", "platform", "EUR", "DEBIT", 1_000)
            await post(conn, entry_id, "SELLER_PAYABLE", "schema-seller", "EUR", "CREDIT", 999)
    assert await conn.fetchval("SELECT count(*) FROM journal_entries WHERE entry_id = $1", entry_id) == 0


async def test_an_entry_balances_per_currency(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
        async with conn.transaction():
            entry_id = await new_entry(conn)
            await post(conn, entry_id, "PSP_RECEIVABLE", "platform", "EUR", "DEBIT", 1_000)
            await post(conn, entry_id, "SELLER_PAYABLE", "schema-seller", "USD", "CREDIT", 1_000)


async def test_an_entry_without_postings_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="has no postings"):
        await new_entry(conn)


async def test_a_posting_added_later_that_unbalances_an_entry_is_refused(conn: asyncpg.Connection) -> None:
    entry_id = await balanced_entry(conn)
    with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
        await post(conn, entry_id, "SELLER_PAYABLE", "schema-seller", "EUR", "CREDIT", 1)


async def test_a_posting_names_an_account_of_the_chart(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with conn.transaction():
            entry_id = await new_entry(conn)
            await post(conn, entry_id, "PSP_RECEIVABLE", "platform", "EUR", "DEBIT", 5)
            await post(conn, entry_id, "SELLER_PAYABLE", "nobody-opened-this", "EUR", "CREDIT", 5)


async def test_an_order_has_at_most_one_charge_entry(conn: asyncpg.Connection) -> None:
    order_id = next(_orders)
    async with conn.transaction():
        entry_id = await new_entry(conn, order_id=order_id)
        await post(conn, entry_id, "PSP_RECEIVABLE", "platform", "EUR", "DEBIT", 5)
        await post(conn, entry_id, "SELLER_PAYABLE", "schema-seller", "EUR", "CREDIT", 5)
    with pytest.raises(asyncpg.UniqueViolationError, match="journal_entries_one_charge_per_order"):
        await new_entry(conn, order_id=order_id)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE postings SET amount = amount + 1 WHERE entry_id = $1",
        "DELETE FROM postings WHERE entry_id = $1",
        "UPDATE journal_entries SET seller_id = 'someone-else' WHERE entry_id = $1",
        "DELETE FROM journal_entries WHERE entry_id = $1",
        "UPDATE ledger_accounts SET owner = 'x' WHERE owner = 'schema-seller' AND $1::bigint IS NOT NULL",
        "DELETE FROM ledger_accounts WHERE owner = 'schema-seller' AND $1::bigint IS NOT NULL",
    ],
)
async def test_the_ledger_is_append_only(conn: asyncpg.Connection, statement: str) -> None:
    entry_id = await balanced_entry(conn)
    with pytest.raises(asyncpg.RestrictViolationError, match="is append-only"):
        await conn.execute(statement, entry_id)
    assert await conn.fetchval("SELECT sum(amount) FROM postings WHERE entry_id = $1", entry_id) == 2_000


@pytest.mark.parametrize("table", ["postings", "journal_entries", "ledger_accounts"])
async def test_no_ledger_table_can_be_truncated(conn: asyncpg.Connection, table: str) -> None:
    await balanced_entry(conn)
    with pytest.raises(asyncpg.RestrictViolationError, match="TRUNCATE refused"):
        await conn.execute(f"TRUNCATE {table} CASCADE")
