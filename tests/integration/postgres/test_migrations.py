"""Every revision upgrades and downgrades on a real database (a stairway walk)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from payment_infrastructure.postgres import migrate
from payment_infrastructure.postgres.database import create_database_if_missing, drop_database
from tests.fixtures.database import unique_database_url


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    url = unique_database_url("payments_migr")
    await create_database_if_missing(url)
    yield url
    await drop_database(url)


async def _tables(url: str) -> set[str]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def _execute(url: str, query: str) -> list[asyncpg.Record]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config("postgresql://x@localhost/x"))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


async def test_every_revision_upgrades_and_downgrades(empty_database: str) -> None:
    revisions = _revisions()
    assert revisions, "no migrations found"
    previous = "base"
    for revision in revisions:
        migrate.upgrade(empty_database, revision)
        migrate.downgrade(empty_database, previous)
        migrate.upgrade(empty_database, revision)
        previous = revision
    tables = await _tables(empty_database)
    assert {"payments", "payment_orders", "idempotency_keys", "outbox_event", "outbox_event_default"} <= tables
    migrate.downgrade(empty_database, "base")
    assert await _tables(empty_database) <= {"alembic_version"}


async def test_outbox_is_range_partitioned_with_a_default_partition(database_url: str) -> None:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        strategy = await conn.fetchval(
            "SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'outbox_event'::regclass"
        )
        default_bound = await conn.fetchval(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'outbox_event_default'"
        )
    finally:
        await conn.close()
    assert strategy == "r"
    assert default_bound == "DEFAULT"


def _payment(payment_id: int, order_id: str) -> str:
    return f"""
        INSERT INTO payments (payment_id, public_payment_id, buyer_id, order_id, amount_value, amount_currency,
                              status, client_id, trace_id, created_at, updated_at)
        VALUES ({payment_id}, 'payment-{payment_id}', 'B', '{order_id}', 100, 'EUR', 'INITIATED', 'shop', 't',
                now(), now())
    """


async def test_one_payment_per_order_names_orders_already_paid_twice_instead_of_failing_half_way(
    empty_database: str,
) -> None:
    revisions = _revisions()
    migrate.upgrade(empty_database, revisions[revisions.index("0006") - 1])
    await _execute(empty_database, _payment(1, "ORDER-X"))
    await _execute(empty_database, _payment(2, "ORDER-X"))

    with pytest.raises(RuntimeError, match="client shop, order ORDER-X: payment-1, payment-2"):
        migrate.upgrade(empty_database, "0006")
    assert await _execute(empty_database, "SELECT 1 FROM pg_class WHERE relname = 'payments_client_order_key'") == []

    await _execute(empty_database, "UPDATE payments SET order_id = 'ORDER-X-refunded' WHERE payment_id = 2")
    migrate.upgrade(empty_database, "0006")
    with pytest.raises(asyncpg.UniqueViolationError):
        await _execute(empty_database, _payment(3, "ORDER-X"))
