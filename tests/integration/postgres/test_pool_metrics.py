"""Pool metrics against a real Postgres: what each pool holds (in use, idle) and may hold, read at scrape time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from payment_infrastructure.postgres.engine import create_engine
from payment_infrastructure.postgres.pool import create_pool
from payment_infrastructure.postgres.pool_metrics import POOLS, watch_asyncpg_pool, watch_engine
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
