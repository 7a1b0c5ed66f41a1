"""Pool metrics against a real Postgres: what each pool holds (in use, idle) and may hold, read at scrape time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.pool import ConnectionPoolEntry

from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.pool import create_pool
from payment_infrastructure.postgres.pool_metrics import (
    POOLS,
    read_server_max_connections,
    watch_asyncpg_pool,
    watch_engine,
)
from payment_infrastructure.postgres.settings import DatabaseSettings
from tests.fixtures.database import migrated_database

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def database() -> AsyncIterator[str]:
    async with migrated_database() as url:
        yield url


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_each_pool_shows_its_connections_in_use_idle_and_its_maximum(database: str) -> None:
    settings = DatabaseSettings(url=database, pool_size=3, max_overflow=1)
    engine = create_engine(settings, application_name="pool-metrics-test")
    pool = await create_pool(settings, application_name="pool-metrics-test")
    watch_engine("test-engine", engine)
    watch_asyncpg_pool("test-creates", pool)
    try:
        assert sample("db_pool_max_connections", pool="test-engine") == 4  # pool_size + max_overflow
        assert sample("db_pool_max_connections", pool="test-creates") == 3
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            assert sample("db_pool_connections", pool="test-engine", state="in_use") == 1
        assert sample("db_pool_connections", pool="test-engine", state="in_use") == 0
        assert sample("db_pool_connections", pool="test-engine", state="idle") == 1
        held = [await pool.acquire(), await pool.acquire()]
        assert sample("db_pool_connections", pool="test-creates", state="in_use") == 2
        await pool.release(held.pop())
        assert sample("db_pool_connections", pool="test-creates", state="in_use") == 1
        assert sample("db_pool_connections", pool="test-creates", state="idle") == 1
        await pool.release(held.pop())
    finally:
        POOLS.forget("test-engine")
        POOLS.forget("test-creates")
        await pool.close()
        await engine.dispose()
    assert sample("db_pool_max_connections", pool="test-engine") is None


async def test_the_servers_max_connections_is_read_by_the_engines_first_connection(database: str) -> None:
    engine = create_engine(DatabaseSettings(url=database, pool_size=1, max_overflow=0), application_name="pool-test")
    POOLS.server_max_connections = None
    watch_engine("test-server-limit", engine)
    watch_engine("test-server-limit", engine)  # watched twice (a rebuilt container): still one listener
    try:
        assert sample("db_server_max_connections") is None  # nothing connected yet: unknown, not a guess
        async with engine.connect() as conn:
            expected = int((await conn.execute(text("SHOW max_connections"))).scalar_one())
        assert sample("db_server_max_connections") == expected
    finally:
        POOLS.forget("test-server-limit")
        await engine.dispose()


class RefusingConnection:
    """A DBAPI connection whose statements fail (a bouncer that refuses SHOW, a server going away)."""

    def run_async(self, _call: object) -> object:
        raise RuntimeError("unsupported startup parameter")


async def test_a_failed_read_of_max_connections_leaves_it_unknown_and_does_not_fail_the_connection() -> None:
    POOLS.server_max_connections = None
    read_server_max_connections(RefusingConnection(), cast(ConnectionPoolEntry, None))
    assert POOLS.server_max_connections is None
    assert sample("db_server_max_connections") is None
